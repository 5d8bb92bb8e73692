import fs from 'node:fs';
import net from 'node:net';
import { streamTransport, type Transport } from '@agentbox/protocol/wire';

export interface GuestLink extends Transport {
  /**
   * Starts delivering received bytes; never resolves while the link lives. `onReconnect` runs when
   * the host went away and the port was reopened: whatever was in flight belongs to the old host.
   */
  start(onBytes: (chunk: Buffer) => void, onReconnect?: () => void): Promise<void>;
}

const READ_BUFFER_BYTES = 256 * 1024;
/** The virtio port reads 0 bytes while no host is attached; wait this long before reading again. */
const IDLE_POLL_MS = 20;
/**
 * After the host went away the port is reopened every FAST_REOPEN_MS for FAST_REOPEN_WINDOW_MS,
 * then every IDLE_POLL_MS * 5. A snapshot is taken just after the host detaches, and guest time
 * stands still while it sits on disk, so a restored copy is still in the fast window: it finds
 * its new host within ~10 ms instead of ~100.
 */
const FAST_REOPEN_MS = 10;
const FAST_REOPEN_WINDOW_MS = 3_000;

function readAsync(fd: number, buffer: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buffer, 0, buffer.length, null, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function writeAsync(fd: number, bytes: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.write(fd, bytes, 0, bytes.length, null, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

const PORTS_SYSFS = '/sys/class/virtio-ports';

/**
 * Finds the character device of a named virtio-serial port. With no udev in the guest there is no
 * /dev/virtio-ports/<name> link, and the name reaches sysfs asynchronously after the driver loads.
 */
export async function findVirtioPort(name: string, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const port of fs.existsSync(PORTS_SYSFS) ? fs.readdirSync(PORTS_SYSFS) : []) {
      let portName = '';
      try {
        portName = fs.readFileSync(`${PORTS_SYSFS}/${port}/name`, 'utf8').trim();
      } catch {
        // not ready yet
      }
      if (portName === name) return `/dev/${port}`;
    }
    if (Date.now() > deadline) throw new Error(`virtio port ${name} did not appear within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface PipeHandleCtor {
  new (type: number): { open(fd: number): number };
}

/**
 * The virtio-serial port driven by the event loop (epoll) instead of the thread pool: node's
 * public API treats a character device as a file, but libuv's pipe handle accepts any pollable
 * fd. Each thread-pool hop costs a context switch, which under emulation is most of a round trip.
 * Returns undefined when this node does not expose the pipe handle; callers fall back.
 */
function openPortAsStream(path: string): net.Socket | undefined {
  let Pipe: PipeHandleCtor;
  let socketType: number;
  try {
    const binding = (process as unknown as { binding(name: string): unknown }).binding('pipe_wrap') as {
      Pipe: PipeHandleCtor;
      constants: { SOCKET: number };
    };
    Pipe = binding.Pipe;
    socketType = binding.constants.SOCKET;
  } catch {
    return undefined;
  }
  const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const handle = new Pipe(socketType);
  if (handle.open(fd) !== 0) {
    fs.closeSync(fd);
    return undefined;
  }
  return new net.Socket({ handle, readable: true, writable: true } as net.SocketConstructorOpts);
}

/**
 * The virtio-serial port as an event-loop stream. A read of 0 bytes (no host attached, e.g. while
 * the daemon restarts) ends the stream; the port is then reopened after a short wait.
 */
export function openVirtioStream(path: string): GuestLink | undefined {
  let socket = openPortAsStream(path);
  if (!socket) return undefined;
  const portTransport = streamTransport(
    () => socket,
    () => new Error('virtio port closed'),
  );
  return {
    async start(onBytes, onReconnect) {
      let hostLeftAt = -Infinity;
      for (;;) {
        const current = socket!;
        let received = false;
        current.on('data', (chunk: Buffer) => {
          received = true;
          onBytes(chunk);
        });
        await new Promise<void>((resolve) => {
          current.once('end', resolve);
          current.once('close', resolve);
          current.once('error', () => resolve());
        });
        current.destroy();
        // EOF: no host is attached (e.g. the daemon restarts). Poll until one is.
        if (received) hostLeftAt = performance.now();
        const fast = performance.now() - hostLeftAt < FAST_REOPEN_WINDOW_MS;
        await new Promise((r) => setTimeout(r, fast ? FAST_REOPEN_MS : IDLE_POLL_MS * 5));
        socket = openPortAsStream(path);
        if (received) onReconnect?.();
      }
    },
    // While the port is being reopened there is no host to write to: what would be sent belongs
    // to the host that went away, so it is dropped rather than failing the mux for good.
    write(chunks) {
      return socket && !socket.destroyed ? portTransport.write(chunks) : true;
    },
    drained() {
      return socket && !socket.destroyed ? portTransport.drained() : Promise.resolve();
    },
  };
}

/**
 * The virtio-serial character device. libuv treats it as a file, so reads and writes run in the
 * thread pool; the kernel caps each write at 32 KiB, so writes loop until everything went out.
 */
export function openVirtioPort(path: string): GuestLink {
  const fd = fs.openSync(path, 'r+');
  return {
    async start(onBytes) {
      // One read buffer for the life of the link; what was read is copied out, so small
      // messages do not each pin a 256 KiB allocation until the next GC.
      const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
      for (;;) {
        const n = await readAsync(fd, buffer);
        if (n === 0) await new Promise((r) => setTimeout(r, IDLE_POLL_MS));
        else onBytes(Buffer.from(buffer.subarray(0, n)));
      }
    },
    ...threadPoolWriter(fd),
  };
}

/** Bytes the thread-pool writer may hold before it asks the mux to wait. */
const WRITER_HIGH_WATER_BYTES = 1024 * 1024;

/** A transport that writes with fs.write in the thread pool, in order, looping over short writes. */
function threadPoolWriter(fd: number): Transport {
  const pending: Buffer[] = [];
  let pendingBytes = 0;
  let writing = false;
  const waiters: (() => void)[] = [];
  const flush = async () => {
    writing = true;
    while (pending.length > 0) {
      const bytes = pending.shift()!;
      let offset = 0;
      while (offset < bytes.length) offset += await writeAsync(fd, bytes.subarray(offset));
      pendingBytes -= bytes.length;
      if (pendingBytes < WRITER_HIGH_WATER_BYTES) for (const w of waiters.splice(0)) w();
    }
    writing = false;
  };
  return {
    write(chunks) {
      const bytes = Buffer.concat(chunks);
      pending.push(bytes);
      pendingBytes += bytes.length;
      if (!writing) void flush();
      return pendingBytes < WRITER_HIGH_WATER_BYTES;
    },
    drained() {
      if (pendingBytes < WRITER_HIGH_WATER_BYTES) return Promise.resolve();
      return new Promise((resolve) => waiters.push(resolve));
    },
  };
}

/** A unix socket to the host, used when the agent runs outside a VM (the `fake` driver in unit tests). */
export function connectUnixSocket(path: string): GuestLink {
  const socket = net.connect(path);
  return {
    start(onBytes) {
      socket.on('data', onBytes);
      return new Promise((_resolve, reject) => {
        socket.on('error', reject);
        socket.on('close', () => reject(new Error('host socket closed')));
      });
    },
    ...streamTransport(
      () => socket,
      () => new Error('host socket closed'),
    ),
  };
}
