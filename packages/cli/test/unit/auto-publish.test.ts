import net from 'node:net';
import { describe, expect, it } from 'vitest';
import type { Listener } from '@agentbox/protocol';
import type { GuestConnection } from '@agentbox/vm';
import { AUTO_PUBLISH_MIN_PORT, autoPublish } from '../../src/project/port-publish.js';

/** A port free on host 127.0.0.1 at the time of asking. */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Only what autoPublish asks of a box: its listening sockets, which the test sets. */
function boxListening(ports: () => number[]): GuestConnection {
  return {
    listeners: () => Promise.resolve(ports().map((port): Listener => ({ port, address: '0.0.0.0' }))),
  } as unknown as GuestConnection;
}

function listensOnHost(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function until(check: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('--auto-publish', () => {
  it('mirrors the box ports it may, never one below 1024, and drops a port the box closes', async () => {
    const high = await freePort();
    let ports = [22, 80, high];
    const events: string[] = [];
    const publisher = autoPublish({
      guest: boxListening(() => ports),
      skip: new Set(),
      onEvent: (m) => events.push(m),
      pollMs: 10,
    });
    try {
      await until(() => events.some((e) => e.includes(`published box port ${high}`)));
      expect(await listensOnHost(high)).toBe(true);
      expect(events).toContain(
        `agentbox: box port 22 not published: ports below ${AUTO_PUBLISH_MIN_PORT} are published only by --publish HOST:22`,
      );
      expect(events.filter((e) => e.includes('box port 80 not published'))).toHaveLength(1);

      ports = [22, 80];
      await until(() => events.includes(`agentbox: port ${high} is no longer published`));
      expect(await listensOnHost(high)).toBe(false);
      // Told once, not at every poll.
      await new Promise((r) => setTimeout(r, 50));
      expect(events.filter((e) => e.includes('box port 22 not published'))).toHaveLength(1);
    } finally {
      publisher.close();
    }
  });

  it('leaves ports in skip and ports busy on the host alone', async () => {
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const busyPort = (busy.address() as net.AddressInfo).port;
    const skipped = await freePort();
    const events: string[] = [];
    const publisher = autoPublish({
      guest: boxListening(() => [busyPort, skipped]),
      skip: new Set([skipped]),
      onEvent: (m) => events.push(m),
      pollMs: 10,
    });
    try {
      await until(() => events.length > 0);
      await new Promise((r) => setTimeout(r, 50));
      expect(events).toEqual([
        `agentbox: box port ${busyPort} not published: cannot publish 127.0.0.1:${busyPort}: the port is in use on the host`,
      ]);
      expect(await listensOnHost(skipped)).toBe(false);
    } finally {
      publisher.close();
      busy.close();
    }
  });
});
