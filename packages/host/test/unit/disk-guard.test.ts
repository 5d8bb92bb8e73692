import { describe, expect, it } from 'vitest';
import { DISK_RELEASE_MARGIN_BYTES, diskGuardPass, type GuardedBox } from '../../src/services/disk-guard.js';

/** The disk guard's policy, apart from its plumbing (box-power.test.ts drives it through a daemon). */

const GIB = 1024 ** 3;
const reserveBytes = 2 * GIB;

function box(
  id: string,
  fields: Partial<GuardedBox> & { now?: number; last?: number; stalled?: boolean },
): GuardedBox {
  const { now = 100, last = 100, stalled = false, ...rest } = fields;
  return {
    id,
    state: 'running',
    held: false,
    disk: { allocatedBytes: now, stalled },
    lastAllocatedBytes: last,
    ...rest,
  };
}

describe('diskGuardPass', () => {
  it('below the reserve, holds the running boxes whose disk grew, and only those', () => {
    const boxes = [
      box('writer', { now: 200 }),
      box('quiet', {}),
      box('shrunk', { now: 50 }),
      box('paused-writer', { now: 200, state: 'paused' }),
      box('creating', { now: 200, state: 'creating' }),
      box('first-seen', { now: 200, lastAllocatedBytes: undefined }),
    ];
    expect(diskGuardPass({ freeBytes: GIB, reserveBytes, boxes })).toEqual({ hold: ['writer'], release: [] });
  });

  it('with room, holds no writer', () => {
    const boxes = [box('writer', { now: 200 })];
    expect(diskGuardPass({ freeBytes: 3 * GIB, reserveBytes, boxes }).hold).toEqual([]);
  });

  it('holds a box QEMU stopped on a full disk at any level, running or paused', () => {
    const boxes = [box('a', { stalled: true }), box('b', { stalled: true, state: 'paused' })];
    expect(diskGuardPass({ freeBytes: 10 * GIB, reserveBytes, boxes }).hold).toEqual(['a', 'b']);
    expect(diskGuardPass({ freeBytes: 10 * GIB, reserveBytes: 0, boxes }).hold).toEqual(['a', 'b']);
  });

  it('releases held boxes only once free space is back above the reserve by the margin', () => {
    const boxes = [box('held', { held: true, now: 300 }), box('other', {})];
    const at = (freeBytes: number) => diskGuardPass({ freeBytes, reserveBytes, boxes });
    expect(at(reserveBytes)).toEqual({ hold: [], release: [] });
    expect(at(reserveBytes + DISK_RELEASE_MARGIN_BYTES - 1).release).toEqual([]);
    expect(at(reserveBytes + DISK_RELEASE_MARGIN_BYTES)).toEqual({ hold: [], release: ['held'] });
  });

  it('does nothing when the free space cannot be read', () => {
    const boxes = [
      box('writer', { now: 200 }),
      box('held', { held: true }),
      box('stalled', { stalled: true }),
    ];
    expect(diskGuardPass({ freeBytes: undefined, reserveBytes, boxes })).toEqual({ hold: [], release: [] });
  });
});
