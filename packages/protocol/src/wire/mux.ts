import {
  DATA_CHUNK_BYTES,
  FRAME_MAGIC,
  MAX_FRAME_PAYLOAD_BYTES,
  FrameDecoder,
  FrameError,
  FrameKind,
  encodeFrame,
  frameHeader,
  type Frame,
} from './frame.js';

/** Where a frame's payload comes from when the kernel moves it (splice, sendfile), not a buffer. */
export interface FdSource {
  fd: number;
  /** Offset in a file; -1 for a pipe (which holds at least the frame's bytes). */
  offset: number;
}

/** Where a mux writes its frames. Failures are reported to the mux's owner, who calls `fail()`. */
export interface Transport {
  /**
   * Queues the buffers in order (a gather list, so frames need not be copied together). Returns
   * false when the transport is full and the mux should wait for `drained()`.
   */
  write(chunks: Buffer[]): boolean;
  /** Resolves once the transport can take more after a `write` returned false. */
  drained(): Promise<void>;
  /**
   * Optional (the guest's channel): writes `header`, then `bytes` moved by the kernel from
   * `source` straight to the stream, and returns how many came from it (fewer when a file ended:
   * the frame is then padded). Returns undefined while earlier writes are still queued; the mux
   * calls again after `flushed()`.
   */
  writeFrom?(header: Buffer, source: FdSource, bytes: number): number | undefined;
  /** Resolves once nothing is queued (for `writeFrom`). */
  flushed?(): Promise<void>;
}

export type DataStream = 'data' | 'stderr';

export interface ChannelHandler {
  onJson(message: unknown): void;
  /** The handler must call `mux.consumed(channel, chunk.length)` once it has passed the bytes on. */
  onData(stream: DataStream, chunk: Buffer): void;
  onEnd(): void;
}

export interface MuxOptions {
  /** Bytes a sender may have unacknowledged per channel. */
  windowBytes?: number;
  /** Called for a Json frame on a channel nobody has opened (the guest uses it to accept requests). */
  onUnknownChannel?: (channel: number, message: unknown) => void;
  /** The peer broke the protocol (bad frame, window overrun, bad JSON); the owner should drop it. */
  onProtocolError?: (error: Error) => void;
  /**
   * Bound on the bytes of frames that cost no flow-control window (Json, End) queued and not yet
   * written, over all channels: a peer that never reads must not make this side hold them without
   * end. A frame past it is refused, its channel closed (what it had queued is dropped) and
   * `onOverflow` told. Unset: no bound.
   */
  maxQueuedControlBytes?: number;
  /** A channel was closed because its frame did not fit `maxQueuedControlBytes` (called async). */
  onOverflow?: (channel: number, error: ChannelOverflowError) => void;
}

/** A frame did not fit the bound on queued window-free frames; its channel was closed. */
export class ChannelOverflowError extends Error {
  override readonly name = 'ChannelOverflowError';
}

export const DEFAULT_WINDOW_BYTES = 4 * 1024 * 1024;
const RESOLVED = Promise.resolve();
/** Writes are batched up to this size so small frames share a syscall. */
const BATCH_BYTES = 256 * 1024;

interface Outgoing {
  /** Header and payload, kept apart so bulk data is never copied to be framed. */
  frame: Buffer[];
  /** Payload bytes that count against the channel's send window (0 for Json/End). */
  windowCost: number;
  /** Bytes of a frame that takes no window (Json/End), counted against `maxQueuedControlBytes`. */
  controlBytes: number;
  /** The payload is not in `frame` but moved by the transport from here (`frame` is the header). */
  source?: FdSource;
  done?: { resolve: (moved: number) => void; reject: (err: Error) => void };
}

/**
 * Multiplexes channels over one byte stream, with per-channel credit-based flow control so a bulk
 * transfer can never starve another channel's messages. Frames of one channel keep their order;
 * channels take turns, one frame each per pass.
 */
export class Mux {
  private readonly decoder = new FrameDecoder();
  private readonly handlers = new Map<number, ChannelHandler>();
  private readonly queues = new Map<number, Outgoing[]>();
  private readonly sendWindows = new Map<number, number>();
  private readonly unacked = new Map<number, number>();
  private readonly outstanding = new Map<number, number>();
  private urgent: Buffer[] = [];
  private scheduled = false;
  /** Set while `receive` dispatches: frames queued meanwhile go out in one pump at its end. */
  private receiving = false;
  private readonly pumpNow = () => {
    this.scheduled = false;
    this.pump();
  };
  private waitingForDrain = false;
  private failed: Error | undefined;
  private controlQueued = 0;
  private received = 0;
  private jsonReceived = 0;
  readonly windowBytes: number;

  constructor(
    private readonly transport: Transport,
    private readonly options: MuxOptions = {},
  ) {
    this.windowBytes = options.windowBytes ?? DEFAULT_WINDOW_BYTES;
  }

  /** Frames received so far (what the reader may pace the peer by). */
  get framesReceived(): number {
    return this.received;
  }

  /** Bytes of Json frames received so far (each is parsed, whichever channel it is for). */
  get jsonBytesReceived(): number {
    return this.jsonReceived;
  }

  /** Bytes received and dropped while seeking a frame (see `seekJsonFrame`). */
  get bytesSkipped(): number {
    return this.decoder.skipped;
  }

  /** Bytes of window-free frames (Json, End) queued and not yet written. */
  get queuedControlBytes(): number {
    return this.controlQueued;
  }

  open(channel: number, handler: ChannelHandler): void {
    this.handlers.set(channel, handler);
  }

  /**
   * Forgets a channel: later frames for it are dropped and nothing more may be sent on it. With
   * `flush`, frames already queued (say, a final reply) still go out; otherwise they are discarded.
   */
  close(channel: number, options: { flush?: boolean } = {}): void {
    this.handlers.delete(channel);
    this.unacked.delete(channel);
    this.outstanding.delete(channel);
    const queue = this.queues.get(channel);
    if (options.flush && queue && queue.length > 0) return;
    this.sendWindows.delete(channel);
    this.queues.delete(channel);
    for (const item of queue ?? []) {
      this.controlQueued -= item.controlBytes;
      item.done?.reject(new Error('channel closed'));
    }
  }

  /** Drops all channels and buffered input, e.g. when the peer restarted. */
  resetAll(): void {
    for (const channel of new Set([...this.handlers.keys(), ...this.queues.keys()])) this.close(channel);
    this.decoder.reset();
    this.urgent = [];
  }

  /** Drops input until a Json frame on `channel` starts (after a reconnect mid-stream). */
  seekJsonFrame(channel: number): void {
    const prefix = Buffer.alloc(6);
    prefix[0] = FRAME_MAGIC;
    prefix[1] = FrameKind.Json;
    prefix.writeUInt32BE(channel, 2);
    this.decoder.seek(prefix);
  }

  /** Marks the transport dead: pending and future sends reject with `error`. */
  fail(error: Error): void {
    this.failed = error;
    for (const queue of this.queues.values()) for (const item of queue) item.done?.reject(error);
    this.queues.clear();
    this.controlQueued = 0;
  }

  receive(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      // The stream is out of step: what is buffered would fail again on every later chunk while it
      // grows (a hostile peer streaming garbage). Drop it; the handler decides how to resync.
      this.decoder.reset();
      this.protocolError(err as Error);
      return;
    }
    this.received += frames.length;
    this.receiving = true;
    try {
      for (const frame of frames) this.dispatch(frame);
    } finally {
      this.receiving = false;
      // Replies produced while dispatching (a ping's, a credit) go out now, in one write.
      if (this.scheduled) this.pumpNow();
    }
  }

  sendJson(channel: number, message: unknown): Promise<void> {
    const payload = Buffer.from(JSON.stringify(message));
    return this.enqueue(channel, [frameHeader(FrameKind.Json, channel, payload.length), payload], 0).then(
      () => undefined,
    );
  }

  /**
   * Queues a JSON message nobody waits for (a reply, a notice): no promise is made for it. If the
   * channel is closed or the mux failed it is dropped, as a `sendJson` rejection would be ignored.
   * `closeAfter` forgets the channel once queued (its frame still goes out).
   */
  post(channel: number, message: unknown, closeAfter = false): void {
    if (this.failed || !this.isOpen(channel)) return;
    const payload = Buffer.from(JSON.stringify(message));
    const frame = [frameHeader(FrameKind.Json, channel, payload.length), payload];
    if (this.overflows(channel, frame)) return;
    this.push(channel, { frame, windowCost: 0, controlBytes: frameBytes(frame) });
    if (closeAfter) this.close(channel, { flush: true });
  }

  /** Whether `sendDataFrom` can be used: the transport moves payloads from fds itself. */
  get sendsFromFds(): boolean {
    return typeof this.transport.writeFrom === 'function';
  }

  /**
   * Queues one data frame of `bytes` (at most MAX_FRAME_PAYLOAD_BYTES) whose payload the
   * transport moves from `source`; resolves with the bytes that came from it (see `writeFrom`).
   */
  sendDataFrom(channel: number, stream: DataStream, source: FdSource, bytes: number): Promise<number> {
    const kind = stream === 'data' ? FrameKind.Data : FrameKind.Stderr;
    if (!this.sendsFromFds) return Promise.reject(new Error('this transport cannot send from fds'));
    if (bytes <= 0 || bytes > MAX_FRAME_PAYLOAD_BYTES)
      return Promise.reject(new RangeError(`a frame holds 1..${MAX_FRAME_PAYLOAD_BYTES} bytes`));
    return this.enqueue(channel, [frameHeader(kind, channel, bytes)], bytes, source);
  }

  /** Queues bytes on a channel; resolves when the last frame was written (await it for backpressure). */
  sendData(channel: number, stream: DataStream, bytes: Buffer): Promise<void> {
    const kind = stream === 'data' ? FrameKind.Data : FrameKind.Stderr;
    const pieces: Promise<number>[] = [];
    for (let offset = 0; offset < bytes.length; offset += DATA_CHUNK_BYTES) {
      const piece = bytes.subarray(offset, offset + DATA_CHUNK_BYTES);
      pieces.push(this.enqueue(channel, [frameHeader(kind, channel, piece.length), piece], piece.length));
    }
    // Promise.all observes every piece, so a closed channel rejects once, not once per frame.
    return Promise.all(pieces).then(() => undefined);
  }

  sendEnd(channel: number): Promise<void> {
    return this.enqueue(channel, [frameHeader(FrameKind.End, channel, 0)], 0).then(() => undefined);
  }

  /** Tells the peer that `bytes` of this channel's data were passed on, so it may send more. */
  consumed(channel: number, bytes: number): void {
    if (!this.handlers.has(channel)) return;
    this.outstanding.set(channel, Math.max(0, (this.outstanding.get(channel) ?? 0) - bytes));
    const total = (this.unacked.get(channel) ?? 0) + bytes;
    if (total >= this.windowBytes / 4) {
      this.unacked.set(channel, 0);
      const payload = Buffer.allocUnsafe(4);
      payload.writeUInt32BE(total, 0);
      this.urgent.push(encodeFrame(FrameKind.Credit, channel, payload));
      this.schedule();
    } else {
      this.unacked.set(channel, total);
    }
  }

  private dispatch(frame: Frame): void {
    const { channel, kind, payload } = frame;
    switch (kind) {
      case FrameKind.Credit: {
        if (payload.length !== 4)
          return this.protocolError(new FrameError('credit frame must carry 4 bytes'));
        if (!this.queues.has(channel) && !this.handlers.has(channel)) return;
        this.sendWindows.set(channel, this.windowOf(channel) + payload.readUInt32BE(0));
        this.schedule();
        return;
      }
      case FrameKind.Json: {
        this.jsonReceived += payload.length;
        let message: unknown;
        try {
          message = JSON.parse(payload.toString('utf8'));
        } catch {
          return this.protocolError(new FrameError(`invalid JSON on channel ${channel}`));
        }
        const handler = this.handlers.get(channel);
        if (handler) handler.onJson(message);
        else this.options.onUnknownChannel?.(channel, message);
        return;
      }
      case FrameKind.Data:
      case FrameKind.Stderr: {
        const handler = this.handlers.get(channel);
        if (!handler) return;
        const outstanding = (this.outstanding.get(channel) ?? 0) + payload.length;
        if (outstanding > this.windowBytes) {
          return this.protocolError(
            new FrameError(`peer overran the flow-control window on channel ${channel}`),
          );
        }
        this.outstanding.set(channel, outstanding);
        handler.onData(kind === FrameKind.Data ? 'data' : 'stderr', payload);
        return;
      }
      case FrameKind.End:
        this.handlers.get(channel)?.onEnd();
        return;
    }
  }

  private protocolError(error: Error): void {
    if (this.options.onProtocolError) this.options.onProtocolError(error);
    else throw error;
  }

  private windowOf(channel: number): number {
    return this.sendWindows.get(channel) ?? this.windowBytes;
  }

  private enqueue(channel: number, frame: Buffer[], windowCost: number, source?: FdSource): Promise<number> {
    if (this.failed) return Promise.reject(this.failed);
    if (!this.isOpen(channel)) return Promise.reject(new Error('channel closed'));
    const controlBytes = windowCost === 0 ? frameBytes(frame) : 0;
    const overflow = controlBytes > 0 && this.overflows(channel, frame);
    if (overflow) return Promise.reject(overflow);
    return new Promise<number>((resolve, reject) =>
      this.push(channel, {
        frame,
        windowCost,
        controlBytes,
        ...(source ? { source } : {}),
        done: { resolve, reject },
      }),
    );
  }

  /**
   * Whether a window-free `frame` would take the queued ones past `maxQueuedControlBytes`: if so,
   * the channel is closed (its queued frames dropped) and its owner told.
   */
  private overflows(channel: number, frame: Buffer[]): ChannelOverflowError | undefined {
    const max = this.options.maxQueuedControlBytes;
    if (max === undefined || this.controlQueued + frameBytes(frame) <= max) return undefined;
    const error = new ChannelOverflowError(
      `channel ${channel} closed: ${this.controlQueued} bytes of messages are already waiting for the peer to read them`,
    );
    this.close(channel);
    const onOverflow = this.options.onOverflow;
    if (onOverflow) void RESOLVED.then(() => onOverflow(channel, error));
    return error;
  }

  /** Channel 0 is the handshake; any other channel must be open (closed ones never reopen). */
  private isOpen(channel: number): boolean {
    return channel === 0 || this.handlers.has(channel);
  }

  private push(channel: number, item: Outgoing): void {
    let queue = this.queues.get(channel);
    if (!queue) this.queues.set(channel, (queue = []));
    queue.push(item);
    this.controlQueued += item.controlBytes;
    this.schedule();
  }

  /**
   * Writes are deferred to the end of the current tick (or of `receive`) so frames queued together
   * share a writev. A resolved promise's `then` is the cheapest microtask (queueMicrotask wraps each
   * callback in an async resource; under emulation that is a measurable part of a round trip).
   */
  private schedule(): void {
    if (this.scheduled || this.waitingForDrain || this.failed) return;
    this.scheduled = true;
    if (!this.receiving) void RESOLVED.then(this.pumpNow);
  }

  /**
   * The next writes: buffered frames of the channels in turn, up to BATCH_BYTES; or, alone, a
   * frame whose payload comes from an fd (it cannot share a gather list).
   */
  private takeBatch(): { bytes: Buffer[]; done: Outgoing['done'][]; fromFd?: Outgoing } {
    const bytes = this.urgent;
    this.urgent = [];
    let size = 0;
    for (const b of bytes) size += b.length;
    const done: Outgoing['done'][] = [];
    let progressed = true;
    while (progressed && size < BATCH_BYTES) {
      progressed = false;
      for (const [channel, queue] of this.queues) {
        const head = queue[0];
        if (!head) {
          this.queues.delete(channel);
          if (!this.handlers.has(channel)) this.sendWindows.delete(channel);
          continue;
        }
        const window = this.windowOf(channel);
        if (head.windowCost > window) continue;
        if (head.source) {
          // Written on its own, after what was batched before it.
          if (bytes.length > 0) continue;
          queue.shift();
          this.sendWindows.set(channel, window - head.windowCost);
          return { bytes, done, fromFd: head };
        }
        queue.shift();
        this.controlQueued -= head.controlBytes;
        if (head.windowCost > 0) this.sendWindows.set(channel, window - head.windowCost);
        for (const part of head.frame) {
          bytes.push(part);
          size += part.length;
        }
        done.push(head.done);
        progressed = true;
        if (size >= BATCH_BYTES) break;
      }
    }
    return { bytes, done };
  }

  /** Writes a frame whose payload the transport moves from an fd; false: try again once flushed. */
  private writeFromFd(item: Outgoing): boolean {
    let moved: number | undefined;
    try {
      moved = this.transport.writeFrom!(item.frame[0]!, item.source!, item.windowCost);
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      item.done?.reject(error);
      this.fail(error);
      return true;
    }
    if (moved === undefined) return false;
    item.done?.resolve(moved);
    return true;
  }

  private pump(): void {
    while (!this.failed && !this.waitingForDrain) {
      const { bytes, done, fromFd } = this.takeBatch();
      if (fromFd) {
        if (!this.writeFromFd(fromFd)) {
          // Queued writes first: put it back at the head of its channel and wait for them.
          this.requeueHead(fromFd);
          this.waitForTransport(this.transport.flushed!());
        }
        continue;
      }
      if (bytes.length === 0) return;
      let more: boolean;
      try {
        more = this.transport.write(bytes);
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        for (const d of done) d?.reject(error);
        this.fail(error);
        return;
      }
      for (const d of done) d?.resolve(0);
      if (!more) this.waitForTransport(this.transport.drained());
    }
  }

  private waitForTransport(ready: Promise<void>): void {
    this.waitingForDrain = true;
    ready.then(
      () => {
        this.waitingForDrain = false;
        this.schedule();
      },
      (err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err))),
    );
  }

  /** Undoes `takeBatch` for an fd frame that could not be written yet. */
  private requeueHead(item: Outgoing): void {
    const channel = item.frame[0]!.readUInt32BE(2);
    let queue = this.queues.get(channel);
    if (!queue) this.queues.set(channel, (queue = []));
    queue.unshift(item);
    this.sendWindows.set(channel, this.windowOf(channel) + item.windowCost);
  }
}

function frameBytes(frame: Buffer[]): number {
  let bytes = 0;
  for (const part of frame) bytes += part.length;
  return bytes;
}
