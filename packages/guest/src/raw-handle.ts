/**
 * Bare libuv pipe handles on file descriptors, read and written through their own callbacks,
 * without node's stream machinery on top. Under emulation every JavaScript layer a message
 * crosses costs ~30x its native price: an echo over a `net.Socket` on such a handle measured
 * ~1.1 ms a round trip, the same echo on the bare handle ~0.4 ms (docs/performance.md). The guest
 * channel (raw-port.ts) and the pipes of processes the agent starts (spawner.ts) use them.
 *
 * The bindings are node internals (`process.binding`), stable in the node the image pins; when
 * they are not there `rawHandles()` is undefined and callers use node's public APIs instead.
 */

interface WriteReq {
  handle: PipeHandle;
  oncomplete: (status: number) => void;
  /** What libuv writes from until `oncomplete`: kept reachable here (node's streams use `_chunks`). */
  chunks?: Buffer[];
}

interface PipeHandle {
  open(fd: number): number;
  readStart(): number;
  readStop(): number;
  writev(req: WriteReq, chunks: Buffer[], allBuffers: boolean): number;
  close(callback?: () => void): void;
  onread: (buffer: ArrayBuffer | undefined) => void;
}

interface Bindings {
  Pipe: new (type: number) => PipeHandle;
  socketType: number;
  WriteWrap: new () => WriteReq;
  state: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
  kLastWriteWasAsync: number;
}

let cached: Bindings | null | undefined;

function bindings(): Bindings | undefined {
  if (cached !== undefined) return cached ?? undefined;
  cached = null;
  try {
    const binding = (name: string) =>
      (process as unknown as { binding(name: string): unknown }).binding(name);
    const pipe = binding('pipe_wrap') as { Pipe?: Bindings['Pipe']; constants: { SOCKET: number } };
    const stream = binding('stream_wrap') as {
      WriteWrap?: Bindings['WriteWrap'];
      streamBaseState?: Int32Array;
      kReadBytesOrError: number;
      kArrayBufferOffset: number;
      kLastWriteWasAsync: number;
    };
    if (pipe.Pipe && stream.WriteWrap && stream.streamBaseState instanceof Int32Array) {
      cached = {
        Pipe: pipe.Pipe,
        socketType: pipe.constants.SOCKET,
        WriteWrap: stream.WriteWrap,
        state: stream.streamBaseState,
        kReadBytesOrError: stream.kReadBytesOrError,
        kArrayBufferOffset: stream.kArrayBufferOffset,
        kLastWriteWasAsync: stream.kLastWriteWasAsync,
      };
    }
  } catch {
    // not this node
  }
  return cached ?? undefined;
}

/** Whether this node has what `RawPipe` needs. */
export function rawHandlesAvailable(): boolean {
  return bindings() !== undefined;
}

export interface WriteResult {
  /** False: the bytes were queued in libuv; `done` settles once they went out. */
  sync: boolean;
  /** True once written; false when the fd failed (e.g. EPIPE: the reader went away). */
  done: Promise<boolean>;
}

const DONE_WRITE: WriteResult = { sync: true, done: Promise.resolve(true) };
const FAILED_WRITE: WriteResult = { sync: true, done: Promise.resolve(false) };

/**
 * A non-blocking pipe-like fd (a pipe, a virtio-serial port) on a libuv pipe handle, which owns
 * the fd from then on. Reads arrive as fresh Buffers (libuv reads up to 64 KiB at a time); EOF or
 * a read error ends the stream.
 */
export class RawPipe {
  private readonly handle: PipeHandle;
  private readonly b: Bindings;
  private closedFlag = false;
  /**
   * Writes libuv queued, each holding its chunks, until they complete. libuv writes from the
   * chunks' memory, and nothing in native code keeps them alive: node makes a request's JS object
   * weak (its own streams keep theirs in `kCurrentWriteRequest`, the chunks in `req._chunks`). Once
   * they were kept by a closure's `void chunks`, which the bundler's minifier dropped as dead code:
   * a GC freed queued buffers, and the host got heap garbage or later bytes in their place (a
   * download through a published port, or "bad frame magic" when a header went).
   */
  private readonly inFlight = new Set<object>();
  private onData: ((chunk: Buffer) => void) | undefined;
  private onEnd: (() => void) | undefined;

  private constructor(b: Bindings, handle: PipeHandle) {
    this.b = b;
    this.handle = handle;
    handle.onread = (buffer) => {
      const n = b.state[b.kReadBytesOrError]!;
      if (n > 0 && buffer) this.onData?.(Buffer.from(buffer, b.state[b.kArrayBufferOffset], n));
      else if (n < 0) {
        // EOF (UV_EOF) or a read error: nothing more will come.
        const end = this.onEnd;
        this.onData = undefined;
        this.onEnd = undefined;
        this.handle.readStop();
        end?.();
      }
    };
  }

  /** Wraps `fd` (which must be O_NONBLOCK); undefined when the bindings are missing or libuv refuses it. */
  static open(fd: number): RawPipe | undefined {
    const b = bindings();
    if (!b) return undefined;
    const handle = new b.Pipe(b.socketType);
    if (handle.open(fd) !== 0) return undefined;
    return new RawPipe(b, handle);
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Delivers what is read until EOF; `pause`/`resume` stop and restart reading. */
  read(onData: (chunk: Buffer) => void, onEnd: () => void): void {
    this.onData = onData;
    this.onEnd = onEnd;
    if (this.handle.readStart() !== 0) {
      this.onData = undefined;
      this.onEnd = undefined;
      onEnd();
    }
  }

  pause(): void {
    if (!this.closedFlag) this.handle.readStop();
  }

  resume(): void {
    if (!this.closedFlag && this.onData) this.handle.readStart();
  }

  /**
   * Writes the buffers in order; libuv queues what the fd cannot take at once and writes it when
   * it becomes writable.
   */
  write(chunks: Buffer[]): WriteResult {
    if (this.closedFlag) return FAILED_WRITE;
    const req = new this.b.WriteWrap() as WriteReq & { settle?: (status: number) => void };
    req.handle = this.handle;
    req.chunks = chunks;
    // Called only for a write libuv had to queue.
    req.oncomplete = (status) => {
      this.inFlight.delete(req);
      req.chunks = undefined;
      req.settle?.(status);
    };
    const err = this.handle.writev(req, chunks, true);
    if (err !== 0) return FAILED_WRITE;
    // Most writes complete at once: no promise is made for those.
    if (!this.b.state[this.b.kLastWriteWasAsync]) return DONE_WRITE;
    this.inFlight.add(req);
    const done = new Promise<boolean>((resolve) => (req.settle = (status) => resolve(status >= 0)));
    return { sync: false, done };
  }

  /** Closes the fd (a reader of the other end sees EOF); pending reads end without `onEnd`. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.onData = undefined;
    this.onEnd = undefined;
    this.handle.close();
  }
}
