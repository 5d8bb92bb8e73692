import { Duplex } from 'node:stream';
import type { Mux } from '@agentbox/protocol/wire';

/**
 * Bytes the peer sent past what the reader has taken, shared by the channels of one connection:
 * each channel may hold up to its window, so only a shared bound keeps many stalled channels from
 * adding up (256 guest channels × a 4 MiB window).
 */
export interface InboundBudget {
  /** `bytes` more are held for a stalled reader (the owner may reset a channel, this one too). */
  add(bytes: number): void;
  /** `bytes` held were taken by the reader, or dropped with the channel. */
  remove(bytes: number): void;
}

/**
 * One mux channel as a node Duplex: what the peer sends arrives as readable data, writes go out as
 * Data frames, end() sends End. Credit is granted only as the reader consumes, so a slow consumer
 * (say, an upstream server) holds the guest back instead of filling host memory.
 */
export class ChannelDuplex extends Duplex {
  private uncredited = 0;
  private flowing = true;
  private closedByPeer = false;
  private endedByPeer = false;
  /** The frame queued last: frames of a channel settle in order, so this one settles last. */
  private lastQueued: Promise<unknown> = Promise.resolve();
  private release!: () => void;
  /**
   * Resolves once the stream is destroyed and the mux holds nothing more of it: its last frames
   * were written, or dropped. Until then the channel still costs host memory.
   */
  readonly released = new Promise<void>((resolve) => (this.release = resolve));

  constructor(
    private readonly mux: Mux,
    readonly channel: number,
    private readonly budget?: InboundBudget,
  ) {
    super({ allowHalfOpen: true });
    mux.open(channel, {
      onJson: (message) => {
        if (
          typeof message === 'object' &&
          message !== null &&
          (message as { type?: unknown }).type === 'reset'
        ) {
          this.closedByPeer = true;
          this.destroy(new Error('the guest reset the connection'));
        }
      },
      onData: (_stream, chunk) => {
        // Data after the peer's End (or a reset) has no reader: dropped, not held or counted.
        if (this.destroyed || this.endedByPeer) return;
        if (this.push(chunk)) this.mux.consumed(channel, chunk.length);
        else if (!this.destroyed) {
          this.flowing = false;
          this.uncredited += chunk.length;
          this.budget?.add(chunk.length);
        }
      },
      onEnd: () => {
        this.endedByPeer = true;
        this.push(null);
      },
    });
  }

  /** Bytes received that the reader has not taken yet (beyond the stream's own buffer size). */
  get heldBytes(): number {
    return this.uncredited;
  }

  override _read(): void {
    if (this.flowing) return;
    this.flowing = true;
    const bytes = this.uncredited;
    this.uncredited = 0;
    if (bytes > 0) {
      this.budget?.remove(bytes);
      this.mux.consumed(this.channel, bytes);
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.queued(this.mux.sendData(this.channel, 'data', chunk)).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.queued(this.mux.sendEnd(this.channel)).then(() => callback(), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // What it held is dropped with it.
    if (this.uncredited > 0) this.budget?.remove(this.uncredited);
    this.uncredited = 0;
    const graceful = this.readableEnded && this.writableFinished;
    if (!this.closedByPeer && !graceful)
      this.queued(this.mux.sendJson(this.channel, { type: 'reset' })).catch(() => undefined);
    // A peer that reset the channel reads nothing more of it: what is queued is dropped, not kept
    // for it. Otherwise the last frames (a reply's end, the reset) still go out.
    this.mux.close(this.channel, { flush: !this.closedByPeer });
    this.lastQueued.then(this.release, this.release);
    callback(error);
  }

  private queued<T>(sent: Promise<T>): Promise<T> {
    this.lastQueued = sent;
    return sent;
  }
}
