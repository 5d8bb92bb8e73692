import { once } from 'node:events';

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

/**
 * A sink that writes to `stream` and, when the stream is full, returns a promise of its drain, so
 * the producer (an exec's output, a download) reads the next piece only once there is room.
 */
export function writeTo(stream: NodeJS.WritableStream) {
  return (chunk: Uint8Array): Promise<void> | void => {
    if (!stream.write(chunk)) return once(stream, 'drain').then(() => undefined);
  };
}
