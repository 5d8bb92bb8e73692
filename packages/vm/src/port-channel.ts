import { Duplex } from 'node:stream';
import { AgentboxError, GuestReplySchema } from '@agentbox/protocol';
import type { Mux } from '@agentbox/protocol/wire';

/**
 * The host end of a `port.connect` channel as a node Duplex: what the guest service sends arrives
 * as readable data, writes go out as Data frames, end() sends End. The guest's one reply ends the
 * channel: `result` when its connection closed, `error` when it could not connect. Credit is
 * granted only as the reader consumes, so a slow host client holds the guest service back.
 */
export class PortChannel extends Duplex {
  private uncredited = 0;
  private flowing = true;
  private settled = false;

  constructor(
    private readonly mux: Mux,
    readonly channel: number,
    private readonly finish: () => void,
  ) {
    super({ allowHalfOpen: true });
  }

  /** The guest's terminal reply (validated: the guest is untrusted). */
  onReply(message: unknown): void {
    if (this.settled) return;
    this.settled = true;
    this.finish();
    const reply = GuestReplySchema.safeParse(message);
    if (!reply.success || reply.data.type === 'error' || reply.data.type !== 'result') {
      const detail = reply.success && reply.data.type === 'error' ? reply.data.message : 'invalid reply';
      this.destroy(new AgentboxError('guest_error', detail));
      return;
    }
    this.push(null);
    this.destroy();
  }

  onData(chunk: Buffer): void {
    if (this.settled) return;
    if (this.push(chunk)) this.mux.consumed(this.channel, chunk.length);
    else {
      this.flowing = false;
      this.uncredited += chunk.length;
    }
  }

  onEnd(): void {
    if (!this.settled) this.push(null);
  }

  override _read(): void {
    if (this.flowing) return;
    this.flowing = true;
    const bytes = this.uncredited;
    this.uncredited = 0;
    if (bytes > 0 && !this.settled) this.mux.consumed(this.channel, bytes);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.settled) return callback();
    this.mux.sendData(this.channel, 'data', chunk).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.settled) return callback();
    this.mux.sendEnd(this.channel).then(() => callback(), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.settled) {
      this.settled = true;
      this.mux.sendJson(this.channel, { type: 'cancel' }).catch(() => undefined);
      this.finish();
    }
    callback(error);
  }
}
