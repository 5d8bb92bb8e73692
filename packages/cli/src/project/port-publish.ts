import net from 'node:net';
import { AgentboxError, type Listener } from '@agentbox/protocol';
import type { GuestConnection } from '@agentbox/vm';

export interface PublishSpec {
  hostAddress: string;
  hostPort: number;
  guestPort: number;
}

function port(value: string, what: string, spec: string): number {
  const n = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 65535))
    throw new AgentboxError(
      'invalid_request',
      `--publish: ${what} port must be 1-65535 in ${JSON.stringify(spec)}`,
    );
  return n;
}

/** `HOST:GUEST`, `GUEST` (same port) or `ADDR:HOST:GUEST`; the host side defaults to 127.0.0.1. */
export function parsePublish(spec: string): PublishSpec {
  const parts = spec.split(':');
  if (parts.length === 1)
    return {
      hostAddress: '127.0.0.1',
      hostPort: port(parts[0]!, 'the', spec),
      guestPort: port(parts[0]!, 'the', spec),
    };
  if (parts.length === 2)
    return {
      hostAddress: '127.0.0.1',
      hostPort: port(parts[0]!, 'the host', spec),
      guestPort: port(parts[1]!, 'the box', spec),
    };
  if (parts.length === 3 && net.isIP(parts[0]!))
    return {
      hostAddress: parts[0]!,
      hostPort: port(parts[1]!, 'the host', spec),
      guestPort: port(parts[2]!, 'the box', spec),
    };
  throw new AgentboxError(
    'invalid_request',
    `--publish expects HOST:GUEST (or ADDR:HOST:GUEST), got ${JSON.stringify(spec)}`,
  );
}

/** One host connection relayed to the guest port; either side closing closes the other. */
function relay(guest: GuestConnection, guestPort: number, socket: net.Socket): void {
  socket.on('error', () => undefined);
  let stream;
  try {
    stream = guest.connectPort(guestPort);
  } catch {
    socket.destroy();
    return;
  }
  stream.on('error', () => socket.destroy());
  socket.on('close', () => stream.destroy());
  stream.on('close', () => socket.destroy());
  socket.pipe(stream);
  stream.pipe(socket);
}

function listen(spec: PublishSpec, guest: GuestConnection): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => relay(guest, spec.guestPort, socket));
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new AgentboxError(
          'invalid_request',
          `cannot publish ${spec.hostAddress}:${spec.hostPort}: ${err.code === 'EADDRINUSE' ? 'the port is in use on the host' : err.message}`,
        ),
      ),
    );
    server.listen(spec.hostPort, spec.hostAddress, () => resolve(server));
  });
}

export interface Publisher {
  close(): void;
}

/** Listens on each host port for as long as the command runs; each connection goes to the box. */
export async function publishPorts(
  guest: GuestConnection,
  specs: readonly PublishSpec[],
): Promise<Publisher> {
  const servers: net.Server[] = [];
  try {
    for (const spec of specs) servers.push(await listen(spec, guest));
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
  return { close: () => servers.forEach((s) => s.close()) };
}

export const AUTO_PUBLISH_POLL_MS = 250;
/** Below this a host port is a system service's (ssh, DNS, a web server), which a box may not squat. */
export const AUTO_PUBLISH_MIN_PORT = 1024;

/**
 * Mirrors every TCP port listening in the box on a wildcard or loopback address to the same port
 * on host 127.0.0.1 (within a poll interval of it appearing), and stops when it goes away. Ports
 * in `skip` (the egress proxy, explicitly published ones), ports busy on the host and ports below
 * 1024 are left alone: the box chooses these ports, and agentbox often runs as root, so a box must
 * not take a privileged host port that its service is only briefly not holding. The guest's list
 * is validated (it is untrusted) and capped.
 */
export function autoPublish(options: {
  guest: GuestConnection;
  skip: ReadonlySet<number>;
  onEvent?: (message: string) => void;
  pollMs?: number;
}): Publisher {
  const { guest } = options;
  const active = new Map<number, net.Server>();
  const refused = new Set<number>();
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  const sync = async (listeners: Listener[]) => {
    const ports = new Set(listeners.map((l) => l.port).filter((p) => !options.skip.has(p)));
    for (const [p, server] of active) {
      if (!ports.has(p)) {
        server.close();
        active.delete(p);
        options.onEvent?.(`agentbox: port ${p} is no longer published`);
      }
    }
    for (const p of ports) {
      if (active.has(p) || refused.has(p) || active.size >= 256) continue;
      if (p < AUTO_PUBLISH_MIN_PORT) {
        refused.add(p);
        options.onEvent?.(
          `agentbox: box port ${p} not published: ports below ${AUTO_PUBLISH_MIN_PORT} are published only ` +
            `by --publish HOST:${p}`,
        );
        continue;
      }
      try {
        const server = await listen({ hostAddress: '127.0.0.1', hostPort: p, guestPort: p }, guest);
        if (closed) {
          server.close();
          return;
        }
        active.set(p, server);
        options.onEvent?.(`agentbox: published box port ${p} at 127.0.0.1:${p}`);
      } catch (err) {
        refused.add(p);
        options.onEvent?.(`agentbox: box port ${p} not published: ${(err as Error).message}`);
      }
    }
    for (const p of refused) if (!ports.has(p)) refused.delete(p);
  };
  const tick = async () => {
    try {
      await sync(await guest.listeners());
    } catch {
      // the box is busy or going away; try again next time
    }
    if (!closed) timer = setTimeout(() => void tick(), options.pollMs ?? AUTO_PUBLISH_POLL_MS);
  };
  void tick();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      for (const server of active.values()) server.close();
      active.clear();
    },
  };
}
