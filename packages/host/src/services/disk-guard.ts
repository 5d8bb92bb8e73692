import type { VmDiskUse } from '@agentbox/vm';

/**
 * Box disks are overcommitted: a guest that fills its own disk grows its file on the host, and a
 * full host filesystem stops every box (QEMU pauses a VM whose write finds no room) and the
 * store. `serve --min-free-disk-gib` keeps a reserve: below it no box is made, and this guard
 * pauses the boxes that are filling it, until space is freed.
 */

/** How far above the reserve free space must come back before held boxes run again. */
export const DISK_RELEASE_MARGIN_BYTES = 256 * 1024 ** 2;

export interface GuardedBox {
  readonly id: string;
  /** The box's recorded state: only running and paused boxes are held. */
  readonly state: string;
  readonly held: boolean;
  /** Its disk now; undefined when it has none (yet). */
  readonly disk: VmDiskUse | undefined;
  /** What its disk file took at the last pass; undefined on the first. */
  readonly lastAllocatedBytes: number | undefined;
}

/**
 * One pass of the guard (pure). Below the reserve, every running box whose disk file grew since
 * the last pass is held; at any level, a box QEMU stopped on a full disk is held (it hangs until
 * `cont` anyway, and held it is told why). Once free space is back above the reserve by the
 * margin, every held box is released. Unknown free space changes nothing.
 */
export function diskGuardPass(input: {
  freeBytes: number | undefined;
  reserveBytes: number;
  boxes: readonly GuardedBox[];
}): { hold: string[]; release: string[] } {
  const hold: string[] = [];
  const release: string[] = [];
  const { freeBytes, reserveBytes } = input;
  if (freeBytes === undefined) return { hold, release };
  const short = freeBytes < reserveBytes;
  const roomy = freeBytes >= reserveBytes + DISK_RELEASE_MARGIN_BYTES;
  for (const box of input.boxes) {
    if (box.held) {
      if (roomy) release.push(box.id);
      continue;
    }
    if (box.state !== 'running' && box.state !== 'paused') continue;
    const grew =
      box.disk !== undefined &&
      box.lastAllocatedBytes !== undefined &&
      box.disk.allocatedBytes > box.lastAllocatedBytes;
    if (box.disk?.stalled === true || (short && grew && box.state === 'running')) hold.push(box.id);
  }
  return { hold, release };
}
