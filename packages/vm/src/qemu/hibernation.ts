import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import type { GuestConnection } from '../guest-connection.js';
import type { QmpClient } from './qmp.js';
import { resumeVcpus, saveState } from './snapshot.js';

/**
 * A hibernated box: `<box dir>/snapshot/state` (the whole VM: every non-zero RAM page and the
 * devices) next to its `disk.qcow2`, and `meta.json`, written last. The snapshot is removed as
 * soon as a restore has loaded it and before the guest runs again: once the guest writes to its
 * disk, the old RAM would no longer match it.
 */
export const SNAPSHOT_DIR = 'snapshot';
const STATE = 'state';
const META = 'meta.json';

export interface HibernationMeta {
  createdAt: number;
  stateBytes: number;
  snapshotMs: number;
}

export function snapshotDir(boxDir: string): string {
  return path.join(boxDir, SNAPSHOT_DIR);
}

export function hibernationStatePath(boxDir: string): string {
  return path.join(snapshotDir(boxDir), STATE);
}

/** The box's snapshot, when one is complete (meta written last, sizes agree). */
export function readHibernation(boxDir: string): HibernationMeta | undefined {
  try {
    const meta = JSON.parse(fs.readFileSync(path.join(snapshotDir(boxDir), META), 'utf8')) as HibernationMeta;
    if (fs.statSync(hibernationStatePath(boxDir)).size !== meta.stateBytes) return undefined;
    return meta;
  } catch {
    return undefined;
  }
}

export async function discardHibernation(boxDir: string): Promise<void> {
  await fsp.rm(snapshotDir(boxDir), { recursive: true, force: true });
}

/** What hibernate needs of a running QEMU VM, spawned or adopted. */
export interface HibernateTarget {
  readonly id: string;
  readonly dir: string;
  readonly guest: GuestConnection;
  monitor(): Promise<QmpClient>;
  /** Ends the QEMU process (after the snapshot) and resolves once it is gone. */
  quit(): Promise<void>;
}

const SYNC_TIMEOUT_MS = 10_000;

/**
 * running → hibernated. The guest flushes its disks first, so that should the snapshot ever be
 * unusable the disk alone still boots with everything written until now. On failure the VM is
 * given back running (its channel was never cut) and the error is `snapshot_failed`.
 */
export async function hibernateVm(
  target: HibernateTarget,
  options: { timeoutMs: number },
): Promise<{ stateBytes: number; ms: number }> {
  const started = performance.now();
  const qmp = await target.monitor();
  // Quiesce = flush the disks and make sure the restore helper runs in the snapshot (a woken box
  // then gets its clock and RNG fixed without starting Python).
  await Promise.race([target.guest.quiesce(), new Promise((r) => setTimeout(r, SYNC_TIMEOUT_MS))]).catch(
    () => undefined,
  );
  // The guest channel stays attached: the restored agent takes the new host's hello request as
  // the start of a new session (detaching first, the snapshot could catch the agent halfway
  // through reopening its port, and the restored copy then never heard its new host).
  const dir = snapshotDir(target.dir);
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const partial = path.join(dir, `${STATE}.partial`);
  try {
    await saveState(qmp, partial, { ignoreShared: false, timeoutMs: options.timeoutMs });
  } catch (err) {
    await fsp.rm(dir, { recursive: true, force: true });
    await resumeVcpus(qmp).catch(() => undefined);
    throw new AgentboxError(
      'snapshot_failed',
      `could not hibernate VM ${target.id}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  await target.quit();
  await fsp.rename(partial, hibernationStatePath(target.dir));
  const stateBytes = (await fsp.stat(hibernationStatePath(target.dir))).size;
  const ms = performance.now() - started;
  const meta: HibernationMeta = { createdAt: Date.now(), stateBytes, snapshotMs: Math.round(ms) };
  await fsp.writeFile(path.join(dir, META), JSON.stringify(meta) + '\n');
  return { stateBytes, ms };
}
