/**
 * What every `--json` prints: one JSON object and a newline, also when a list is empty, so that
 * `jq` or one JSON.parse reads the whole output. `length?: never` keeps a bare array out: lists go
 * in a named field (`{ "keys": [...] }`), as in the HTTP API's responses.
 */
export function writeJson<T extends object>(
  value: T & { length?: never },
  out: NodeJS.WritableStream = process.stdout,
): void {
  out.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Rows under a header, each column as wide as its widest cell, two spaces apart. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
