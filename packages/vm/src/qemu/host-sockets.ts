import fs from 'node:fs';
import net from 'node:net';
import type { AgentboxError } from '@agentbox/protocol';
import type { VmExit } from '../backend.js';
import type { GuestConnection } from '../guest-connection.js';
import { QmpClient } from './qmp.js';

/**
 * The host ends of a box's two sockets (guest channel, QMP), shared by a VM this process spawns and
 * one it re-adopts: QEMU connects to them as a client, so listening again is all a new host needs.
 */

/** Listens on a unix socket path (replacing a stale one); the server is added to `servers`. */
export function listenUnix(
  servers: net.Server[],
  socketPath: string,
  onConnection: (socket: net.Socket) => void,
): Promise<void> {
  fs.rmSync(socketPath, { force: true });
  const server = net.createServer(onConnection);
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    // Closed before it listened (the VM was killed meanwhile): no 'error' and no callback come.
    server.once('close', () => reject(new Error(`${socketPath}: closed before listening`)));
    server.listen(socketPath, () => resolve());
  });
}

/** A QMP connection from QEMU; the guest closing its port means its agent died (init restarts it). */
export function connectMonitor(socket: net.Socket, guest: GuestConnection): QmpClient {
  const qmp = new QmpClient(socket);
  qmp.on('event', (event) => {
    if (event.event === 'VSERPORT_CHANGE' && event.data?.open === false) guest.agentRestarted();
  });
  qmp.ready.catch(() => undefined);
  return qmp;
}

/** Resolves at the guest's hello; rejects with `timedOut()` after `timeoutMs`, or `exitedEarly()` if the VM goes. */
export async function waitForHello(
  guest: GuestConnection,
  exited: Promise<VmExit>,
  timeoutMs: number,
  timedOut: () => AgentboxError,
  exitedEarly: (exit: VmExit) => AgentboxError,
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      guest.waitForHello(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(timedOut()), timeoutMs);
      }),
      exited.then((exit) => {
        throw exitedEarly(exit);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
