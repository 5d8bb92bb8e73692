import fs from 'node:fs';
import type { NativeAddon } from './native.js';
import { RawPipe } from './raw-handle.js';
import type { GuestLink } from './transport.js';

/** Bytes of queued (not yet accepted by the port) writes before the mux is asked to wait. */
const HIGH_WATER_BYTES = 1024 * 1024;
/** The port reads EOF while no host is attached; it is reopened after this long. */
const REOPEN_IDLE_MS = 100;
/**
 * Right after a host went away the port is reopened faster: a restarted daemon comes back within
 * moments, and a box restored from a snapshot meets its new host at once.
 */
const REOPEN_FAST_MS = 10;
const FAST_REOPEN_WINDOW_MS = 3_000;

/**
 * The virtio-serial port on a bare libuv handle (raw-handle.ts): an epoll stream, neither the
 * thread pool nor node's stream layers. With the native addon it also takes frames whose payload
 * the kernel moves from a pipe or file (`writeFrom`: splice, sendfile), never copied through
 * JavaScript. Undefined when this node lacks the bindings.
 */
export function openRawPort(path: string, native?: NativeAddon): GuestLink | undefined {
  let portFd = -1;
  const open = (): RawPipe | undefined => {
    const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    const pipe = RawPipe.open(fd);
    if (!pipe) fs.closeSync(fd);
    else portFd = fd;
    return pipe;
  };
  let port = open();
  if (!port) return undefined;

  let queuedBytes = 0;
  const waiters: (() => void)[] = [];
  const flushWaiters: (() => void)[] = [];
  const settleWaiters = () => {
    if (queuedBytes < HIGH_WATER_BYTES) for (const w of waiters.splice(0)) w();
    if (queuedBytes === 0) for (const w of flushWaiters.splice(0)) w();
  };

  return {
    async start(onBytes, onReconnect) {
      let hostLeftAt = -Infinity;
      for (;;) {
        const current = port;
        let received = false;
        if (current) {
          // EOF: no host is attached (e.g. the daemon restarts), or the port failed.
          await new Promise<void>((resolve) =>
            current.read((chunk) => {
              received = true;
              onBytes(chunk);
            }, resolve),
          );
          current.close();
          // Whatever was queued belonged to the host that went away.
          queuedBytes = 0;
          settleWaiters();
          if (received) hostLeftAt = performance.now();
        }
        const fast = performance.now() - hostLeftAt < FAST_REOPEN_WINDOW_MS;
        await new Promise((r) => setTimeout(r, fast ? REOPEN_FAST_MS : REOPEN_IDLE_MS));
        port = open();
        if (received) onReconnect?.();
      }
    },
    // While the port is being reopened there is no host to write to: what would be sent belongs
    // to the host that went away, so it is dropped rather than failing the mux for good.
    write(chunks) {
      const current = port;
      if (!current || current.closed) return true;
      const { sync, done } = current.write(chunks);
      if (!sync) {
        const bytes = chunks.reduce((sum, c) => sum + c.length, 0);
        queuedBytes += bytes;
        void done.then(() => {
          if (current.closed) return;
          queuedBytes -= bytes;
          settleWaiters();
        });
      }
      return queuedBytes < HIGH_WATER_BYTES;
    },
    drained() {
      if (queuedBytes < HIGH_WATER_BYTES) return Promise.resolve();
      return new Promise((resolve) => waiters.push(resolve));
    },
    ...(native
      ? {
          writeFrom(header, source, bytes) {
            const current = port;
            // No host: the frame belongs to the one that went away (as `write` drops it).
            if (!current || current.closed) return bytes;
            if (queuedBytes > 0) return undefined;
            return native.writeFrame(portFd, header, source.fd, source.offset, bytes);
          },
          flushed() {
            if (queuedBytes === 0) return Promise.resolve();
            return new Promise<void>((resolve) => flushWaiters.push(resolve));
          },
        }
      : {}),
  };
}
