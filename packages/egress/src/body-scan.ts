import { Transform, type TransformCallback } from 'node:stream';
import { PLACEHOLDER_PREFIX } from './placeholders.js';

/**
 * Streaming helpers for bodies that pass through the gateway: spotting placeholders in what a box
 * sends (a leak to record; never swapped), and replacing real values in what an intercepted
 * upstream sends back. Both work across chunk boundaries.
 */

/** Watches a byte stream for the placeholder prefix. */
export class PlaceholderSpotter {
  #tail = Buffer.alloc(0);
  #found = false;
  readonly #needle = Buffer.from(PLACEHOLDER_PREFIX);

  get found(): boolean {
    return this.#found;
  }

  push(chunk: Buffer): void {
    if (this.#found) return;
    const buf = this.#tail.length === 0 ? chunk : Buffer.concat([this.#tail, chunk]);
    if (buf.indexOf(this.#needle) >= 0) {
      this.#found = true;
      return;
    }
    this.#tail = Buffer.from(buf.subarray(Math.max(0, buf.length - (this.#needle.length - 1))));
  }
}

/**
 * Replaces every `from` with its `to`. Holds back only a tail that could be the start of a match,
 * so a stream (SSE) whose chunks end elsewhere is not delayed.
 */
export class ReplaceTransform extends Transform {
  readonly #pairs: Array<[Buffer, Buffer]>;
  #pending = Buffer.alloc(0);

  constructor(pairs: ReadonlyArray<readonly [string, string]>) {
    super();
    const seen = new Set<string>();
    this.#pairs = [];
    for (const [from, to] of pairs) {
      if (from.length === 0 || from === to || seen.has(from)) continue;
      seen.add(from);
      this.#pairs.push([Buffer.from(from), Buffer.from(to)]);
    }
    // Longer first, so a value that contains another is replaced whole.
    this.#pairs.sort((a, b) => b[0].length - a[0].length);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const buf = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const out: Buffer[] = [];
    let pos = 0;
    for (;;) {
      let best = -1;
      let pair: [Buffer, Buffer] | undefined;
      for (const candidate of this.#pairs) {
        const at = buf.indexOf(candidate[0], pos);
        if (at >= 0 && (best < 0 || at < best)) [best, pair] = [at, candidate];
      }
      if (pair === undefined) break;
      out.push(buf.subarray(pos, best), pair[1]);
      pos = best + pair[0].length;
    }
    const keep = this.#partialTail(buf, pos);
    out.push(buf.subarray(pos, buf.length - keep));
    this.#pending = Buffer.from(buf.subarray(buf.length - keep));
    const joined = Buffer.concat(out);
    if (joined.length > 0) this.push(joined);
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.#pending.length > 0) this.push(this.#pending);
    done();
  }

  /** Length of the longest suffix of buf[pos..] that is a proper prefix of some `from`. */
  #partialTail(buf: Buffer, pos: number): number {
    let longest = 0;
    for (const [from] of this.#pairs) {
      const max = Math.min(from.length - 1, buf.length - pos);
      for (let len = max; len > longest; len--) {
        if (buf.compare(from, 0, len, buf.length - len, buf.length) === 0) {
          longest = len;
          break;
        }
      }
    }
    return longest;
  }
}
