/**
 * Framing of the host↔guest byte stream. Every frame:
 *
 *   magic u8 (0xAB) | kind u8 | channel u32 BE | length u32 BE | payload
 *
 * Channels multiplex concurrent operations over the one virtio-serial stream. Channel 0 carries the
 * guest's hello; every other channel is one operation (exec, file transfer, …) opened by the host.
 */
export const FRAME_MAGIC = 0xab;
export const FRAME_HEADER_BYTES = 10;
/** Largest payload a decoder accepts; anything bigger is a protocol violation, not an allocation. */
export const MAX_FRAME_PAYLOAD_BYTES = 1024 * 1024;
/** Data is cut into frames of at most this size so control frames can interleave with bulk data. */
export const DATA_CHUNK_BYTES = 128 * 1024;

export const FrameKind = {
  /** A JSON message (request, reply, control). */
  Json: 1,
  /** Bytes of the main stream: stdin/stdout or file contents. */
  Data: 2,
  /** Bytes of stderr. */
  Stderr: 3,
  /** The sender has no more Data/Stderr bytes on this channel. */
  End: 4,
  /** Flow control: the receiver consumed `u32` more bytes of this channel's data. */
  Credit: 5,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

const KIND_VALUES = new Set<number>(Object.values(FrameKind));
const EMPTY = Buffer.alloc(0);

export interface Frame {
  kind: FrameKind;
  channel: number;
  payload: Buffer;
}

export function frameHeader(kind: FrameKind, channel: number, payloadLength: number): Buffer {
  const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  header[0] = FRAME_MAGIC;
  header[1] = kind;
  header.writeUInt32BE(channel >>> 0, 2);
  header.writeUInt32BE(payloadLength, 6);
  return header;
}

export function encodeFrame(kind: FrameKind, channel: number, payload: Buffer = EMPTY): Buffer {
  const header = frameHeader(kind, channel, payload.length);
  return payload.length === 0 ? header : Buffer.concat([header, payload]);
}

export class FrameError extends Error {
  override readonly name = 'FrameError';
}

/**
 * Incremental decoder. Input from the guest is hostile: a bad magic, an unknown kind or an
 * oversized length throws `FrameError` (the caller drops the connection) instead of allocating.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private seeking: Buffer | undefined;
  private skippedBytes = 0;

  /** Bytes dropped so far while seeking (what a reader may pace a peer that sends junk by). */
  get skipped(): number {
    return this.skippedBytes;
  }

  /**
   * Drops input until `prefix` appears, then decodes from there. Used after a reconnect, when the
   * stream may resume in the middle of a frame the peer wrote to the previous connection.
   */
  seek(prefix: Buffer): void {
    this.seeking = prefix;
  }

  push(chunk: Buffer): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    if (this.seeking && !this.skipToPrefix(this.seeking)) return [];
    const frames: Frame[] = [];
    while (this.buffered >= FRAME_HEADER_BYTES) {
      const head = this.contiguous(FRAME_HEADER_BYTES);
      if (head[0] !== FRAME_MAGIC) throw new FrameError(`bad frame magic 0x${head[0]!.toString(16)}`);
      const kind = head[1]!;
      if (!KIND_VALUES.has(kind)) throw new FrameError(`unknown frame kind ${kind}`);
      const channel = head.readUInt32BE(2);
      const length = head.readUInt32BE(6);
      if (length > MAX_FRAME_PAYLOAD_BYTES)
        throw new FrameError(`frame of ${length} bytes exceeds the limit`);
      if (this.buffered < FRAME_HEADER_BYTES + length) break;
      const whole = this.take(FRAME_HEADER_BYTES + length);
      frames.push({ kind: kind as FrameKind, channel, payload: whole.subarray(FRAME_HEADER_BYTES) });
    }
    return frames;
  }

  /** Drops buffered bytes, e.g. after the peer restarted mid-frame. */
  reset(): void {
    this.chunks = [];
    this.buffered = 0;
    this.seeking = undefined;
  }

  /**
   * True once the buffer starts with `prefix`; until then keeps only a possible partial match.
   * Each chunk is searched where it lies, its seam with the bytes before it apart: a peer that
   * never sends the prefix (a hostile guest streaming junk) costs a search per byte, not a copy.
   */
  private skipToPrefix(prefix: Buffer): boolean {
    const overlap = prefix.length - 1;
    let carry = EMPTY;
    for (let i = 0; i < this.chunks.length; i++) {
      const chunk = this.chunks[i]!;
      // A match in the seam starts in `carry`: after it, the seam holds less than a whole prefix.
      const seam = Buffer.concat([carry, chunk.subarray(0, overlap)]);
      const atSeam = carry.length > 0 ? seam.indexOf(prefix) : -1;
      const at = atSeam >= 0 ? -1 : chunk.indexOf(prefix);
      if (atSeam >= 0 || at >= 0) {
        const rest = [
          ...(atSeam >= 0 ? [carry.subarray(atSeam), chunk] : [chunk.subarray(at)]),
          ...this.chunks.slice(i + 1),
        ];
        this.chunks = rest;
        const buffered = rest.reduce((n, c) => n + c.length, 0);
        this.skippedBytes += this.buffered - buffered;
        this.buffered = buffered;
        this.seeking = undefined;
        return true;
      }
      // Copied, so a kept tail does not hold on to its whole chunk.
      carry = Buffer.from(
        chunk.length >= overlap ? chunk.subarray(chunk.length - overlap) : seam.subarray(-overlap),
      );
    }
    this.chunks = carry.length > 0 ? [carry] : [];
    this.skippedBytes += this.buffered - carry.length;
    this.buffered = carry.length;
    return false;
  }

  /**
   * The first `n` buffered bytes as one buffer. Joins only the chunks that hold those bytes, so a
   * large backlog of small reads is never copied once per frame.
   */
  private contiguous(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    let count = 0;
    let bytes = 0;
    while (bytes < n) bytes += this.chunks[count++]!.length;
    const joined = Buffer.concat(this.chunks.slice(0, count), bytes);
    this.chunks.splice(0, count, joined);
    return joined.subarray(0, n);
  }

  private take(n: number): Buffer {
    const out = this.contiguous(n);
    const first = this.chunks[0]!;
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}
