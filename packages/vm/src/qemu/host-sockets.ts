import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { AgentboxError } from '@agentbox/protocol';
import type { VmDiskUse, VmExit, VmUser } from '../backend.js';
import type { GuestConnection } from '../guest-connection.js';
import { QmpClient } from './qmp.js';

/**
 * The host ends of a box's two sockets (guest channel, QMP), shared by a VM this process spawns and
 * one it re-adopts: QEMU connects to them as a client, so listening again is all a new host needs.
 */

/** Listens on a unix socket path (replacing a stale one); the server is added to `servers`. */
export async function listenUnix(
  servers: net.Server[],
  socketPath: string,
  onConnection: (socket: net.Socket) => void,
  owner?: VmUser,
): Promise<void> {
  fs.rmSync(socketPath, { force: true });
  const server = net.createServer(onConnection);
  servers.push(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Closed before it listened (the VM was killed meanwhile): no 'error' and no callback come.
    server.once('close', () => reject(new Error(`${socketPath}: closed before listening`)));
    server.listen(socketPath, () => resolve());
  });
  // A VM process that runs as another user connects (and reconnects) with that user's rights. The
  // dir is that user's: lchown, so a symlink put in the socket's place cannot redirect the chown.
  if (owner) fs.lchownSync(socketPath, owner.uid, owner.gid);
}

/** Where the sockets of VMs that run as another user live: a dir of their own under /run. */
export const RUN_AS_SOCKETS_DIR = '/run/agentbox';

/**
 * The directory of a VM's sockets: its box dir, or for a VM that runs as another user (who may
 * not reach the box dir: `-runas` drops rights after QEMU opened its files, and it reconnects to
 * its sockets later) a directory under RUN_AS_SOCKETS_DIR that only that user and root reach.
 */
export function socketDirOf(boxDir: string, id: string, runAs: VmUser | undefined): string {
  return runAs ? path.join(RUN_AS_SOCKETS_DIR, id) : boxDir;
}

/** A VM's two sockets (see socketDirOf). */
export function vmSocketPaths(
  boxDir: string,
  id: string,
  runAs: VmUser | undefined,
): { dir: string; guest: string; qmp: string } {
  const dir = socketDirOf(boxDir, id, runAs);
  return { dir, guest: path.join(dir, 'guest.sock'), qmp: path.join(dir, 'qmp.sock') };
}

/**
 * Listens on a VM's guest and QMP sockets. For a VM that runs as another user, their dir is made
 * that user's first; its parent is root's, so that user cannot put anything else in its place.
 */
export async function listenVmSockets(
  servers: net.Server[],
  sockets: { dir: string; guest: string; qmp: string },
  runAs: VmUser | undefined,
  on: { guest: (socket: net.Socket) => void; qmp: (socket: net.Socket) => void },
): Promise<void> {
  if (runAs) {
    fs.mkdirSync(RUN_AS_SOCKETS_DIR, { recursive: true, mode: 0o755 });
    fs.mkdirSync(sockets.dir, { recursive: true, mode: 0o700 });
    fs.lchownSync(sockets.dir, runAs.uid, runAs.gid);
  }
  await listenUnix(servers, sockets.guest, on.guest, runAs);
  await listenUnix(servers, sockets.qmp, on.qmp, runAs);
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
    if (event.event === 'VSERPORT_CHANGE' && event.data?.open === false) guest.agentRestarted(event.at);
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
