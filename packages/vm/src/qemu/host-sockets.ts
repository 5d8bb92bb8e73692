import fs from 'node:fs';
import net from 'node:net';
import type { AgentboxError } from '@agentbox/protocol';
import type { VmDiskUse, VmExit } from '../backend.js';
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

/**
 * A box's disk file. QEMU's default for a full host filesystem (`werror=enospc`) is to stop the
 * guest and retry the write at the next `cont`: nothing is lost, but the guest hangs until then,
 * so the host is told (BLOCK_IO_ERROR with `nospace`) and can say why.
 */
export class BoxDisk {
  /** QEMU stopped the guest on a write the host's filesystem had no room for; cleared by `cont`. */
  stalled = false;

  constructor(private readonly diskPath: string) {}

  use(): VmDiskUse | undefined {
    try {
      return { allocatedBytes: fs.statSync(this.diskPath).blocks * 512, stalled: this.stalled };
    } catch {
      return undefined;
    }
  }
}

/**
 * A QMP connection from QEMU; the guest closing its port means its agent died (init restarts it),
 * a write error for want of space that QEMU stopped the guest on.
 */
export function connectMonitor(socket: net.Socket, guest: GuestConnection, disk: BoxDisk): QmpClient {
  const qmp = new QmpClient(socket);
  qmp.on('event', (event) => {
    if (event.event === 'VSERPORT_CHANGE' && event.data?.open === false) guest.agentRestarted();
    if (event.event === 'BLOCK_IO_ERROR' && event.data?.nospace === true && event.data.action === 'stop')
      disk.stalled = true;
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
      // The guest's connection is closed as the VM exits, just before `exited` resolves: the
      // exit's own error (with QEMU's diagnostics) is the one to give.
      guest.waitForHello().catch(async (err: unknown) => {
        const exit = await Promise.race([exited, Promise.resolve(undefined)]);
        throw exit ? exitedEarly(exit) : err;
      }),
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
