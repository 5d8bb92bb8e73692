/** Largest line kept whole; a longer one is cut into pieces of this size (never lost). */
export const MAX_LINE_BYTES = 8 * 1024 * 1024;

/**
 * Splits a byte stream into UTF-8 lines (without `\n`, a trailing `\r` dropped). Bytes are joined
 * before decoding, so a multi-byte character split across chunks survives. `end` is the byte
 * offset in the stream just past the line (its newline included).
 */
export function splitLines(onLine: (line: string, end: number) => void): {
  push(chunk: Buffer): void;
  end(): void;
} {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  /** Bytes pushed before the current chunk. */
  let pushed = 0;
  const flush = (tail: Buffer, end: number) => {
    const bytes = Buffer.concat([...pending, tail]);
    pending = [];
    pendingBytes = 0;
    const text = bytes.toString('utf8');
    onLine(text.endsWith('\r') ? text.slice(0, -1) : text, end);
  };
  return {
    push(chunk) {
      let start = 0;
      for (let nl = chunk.indexOf(10, start); nl >= 0; nl = chunk.indexOf(10, start)) {
        flush(chunk.subarray(start, nl), pushed + nl + 1);
        start = nl + 1;
      }
      pushed += chunk.length;
      const rest = chunk.subarray(start);
      if (rest.length === 0) return;
      pending.push(rest);
      pendingBytes += rest.length;
      if (pendingBytes >= MAX_LINE_BYTES) flush(Buffer.alloc(0), pushed);
    },
    end() {
      if (pendingBytes > 0) flush(Buffer.alloc(0), pushed);
    },
  };
}
