import fs from 'node:fs';
import net from 'node:net';
import { streamTransport, type Transport } from '@agentbox/protocol/wire';
import type { NativeAddon } from './native.js';

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

/**
 * The virtio-serial character device as node sees it: a file, so reads and writes run in the
 * thread pool; the kernel caps each write at 32 KiB, so writes loop until everything went out.
 * The fallback for a node without the bindings `openRawPort` needs: each thread-pool hop costs a
 * context switch, which under emulation is most of a round trip.
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

/**
 * A unix socket to the host, used when the agent runs outside a VM (the `fake` driver in unit
 * tests). With the native addon it takes frames from fds too (splice and sendfile work on sockets
 * as on the virtio port), so unit tests run that path.
 */
export function connectUnixSocket(path: string, native?: NativeAddon): GuestLink {
  const socket = net.connect(path);
  const transport = streamTransport(
    () => socket,
    () => new Error('host socket closed'),
  );
  const socketFd = () => (socket as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
  return {
    start(onBytes) {
      socket.on('data', onBytes);
      return new Promise((_resolve, reject) => {
        socket.on('error', reject);
        socket.on('close', () => reject(new Error('host socket closed')));
      });
    },
    ...transport,
    ...(native
      ? {
          writeFrom(header, source, bytes) {
            if (socket.writableLength > 0 || socketFd() < 0) return undefined;
            return native.writeFrame(socketFd(), header, source.fd, source.offset, bytes);
          },
          flushed() {
            return new Promise<void>((resolve) => {
              const check = () => (socket.writableLength === 0 ? resolve() : setTimeout(check, 1));
              check();
            });
          },
        }
      : {}),
  };
}
