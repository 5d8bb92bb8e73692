import { describe, expect, it } from 'vitest';
import { MEMORY_RELEASE_MARGIN_BYTES, memoryGuardPass } from '../../src/services/memory-guard.js';

const MIB = 1024 ** 2;
const box = (id: string, privateMib: number | undefined, idle = true) => ({
  id,
  idle,
  privateBytes: privateMib === undefined ? undefined : privateMib * MIB,
});

describe('memoryGuardPass', () => {
  const reserveBytes = 1024 * MIB;
  const boxes = [
    box('a', 100),
    box('b', 500),
    box('c', 300),
    box('busy', 2000, false),
    box('unknown', undefined),
  ];

  it('does nothing at or above the reserve, with no reserve, or when available memory is unknown', () => {
    expect(memoryGuardPass({ availableBytes: reserveBytes, reserveBytes, pendingBytes: 0, boxes })).toEqual(
      [],
    );
    expect(memoryGuardPass({ availableBytes: 0, reserveBytes: 0, pendingBytes: 0, boxes })).toEqual([]);
    expect(memoryGuardPass({ availableBytes: undefined, reserveBytes, pendingBytes: 0, boxes })).toEqual([]);
  });

  it('below it, takes idle boxes holding the most first until they cover the shortfall and the margin', () => {
    // 1 MiB short: the margin makes it 257 MiB, which the biggest idle box covers.
    expect(
      memoryGuardPass({ availableBytes: reserveBytes - MIB, reserveBytes, pendingBytes: 0, boxes }),
    ).toEqual(['b']);
    // 600 MiB short (856 with the margin): 500 + 300 + 100.
    expect(
      memoryGuardPass({ availableBytes: reserveBytes - 600 * MIB, reserveBytes, pendingBytes: 0, boxes }),
    ).toEqual(['b', 'c', 'a']);
    // Never a busy box, nor one whose use is unknown, however short.
    expect(memoryGuardPass({ availableBytes: 0, reserveBytes, pendingBytes: 0, boxes })).toEqual([
      'b',
      'c',
      'a',
    ]);
  });

  it('counts what hibernations under way will free', () => {
    const short = { availableBytes: reserveBytes - 200 * MIB, reserveBytes, boxes };
    expect(memoryGuardPass({ ...short, pendingBytes: 200 * MIB + MEMORY_RELEASE_MARGIN_BYTES })).toEqual([]);
    expect(memoryGuardPass({ ...short, pendingBytes: 200 * MIB })).toEqual(['b']);
  });
});
