import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createKeyWatch, KEY_CHECK_INTERVAL_MS } from '../../src/services/key-watch.js';

describe('the key watch (one polled sweep for every holder of a key)', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const setup = () => {
    const revoked = new Set<string>();
    const reads: string[] = [];
    const warnings: string[] = [];
    const watch = createKeyWatch({
      isActive: (keyId) => {
        reads.push(keyId);
        return !revoked.has(keyId);
      },
      log: { warn: (_obj, msg) => void warnings.push(msg) },
    });
    return { revoked, reads, warnings, watch };
  };

  it('tells every holder of a revoked key once, within one interval (5 s by default), and no other', () => {
    const { revoked, reads, watch } = setup();
    const told: string[] = [];
    watch.watch('key_a', () => told.push('a1'));
    watch.watch('key_a', () => told.push('a2'));
    watch.watch('key_b', () => told.push('b'));
    vi.advanceTimersByTime(KEY_CHECK_INTERVAL_MS);
    // One read per key and sweep, however many hold it.
    expect(reads).toEqual(['key_a', 'key_b']);
    expect(told).toEqual([]);

    revoked.add('key_a');
    vi.advanceTimersByTime(KEY_CHECK_INTERVAL_MS - 1);
    expect(told).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(told).toEqual(['a1', 'a2']);
    vi.advanceTimersByTime(3 * KEY_CHECK_INTERVAL_MS);
    expect(told).toEqual(['a1', 'a2']);
    expect(watch.watchedKeys()).toBe(1);
  });

  it('runs its timer only while something is watched', () => {
    const { revoked, watch } = setup();
    expect(vi.getTimerCount()).toBe(0);
    const stopA = watch.watch('key_a', () => undefined);
    const stopB = watch.watch('key_b', () => undefined);
    expect(vi.getTimerCount()).toBe(1);
    stopA();
    stopA();
    expect(vi.getTimerCount()).toBe(1);
    stopB();
    expect(vi.getTimerCount()).toBe(0);

    // A key's last holder told of its revocation: nothing is left to check.
    const stopC = watch.watch('key_c', () => undefined);
    revoked.add('key_c');
    vi.advanceTimersByTime(KEY_CHECK_INTERVAL_MS);
    expect(vi.getTimerCount()).toBe(0);
    expect(watch.watchedKeys()).toBe(0);
    stopC();

    watch.watch('key_d', () => undefined);
    watch.close();
    expect(vi.getTimerCount()).toBe(0);
    watch.watch('key_e', () => undefined);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('an unsubscribe from before the key was found revoked leaves a later holder of it alone', () => {
    const { revoked, watch } = setup();
    const stale = watch.watch('key_a', () => undefined);
    revoked.add('key_a');
    vi.advanceTimersByTime(KEY_CHECK_INTERVAL_MS);
    let told = 0;
    watch.watch('key_a', () => told++);
    stale();
    vi.advanceTimersByTime(KEY_CHECK_INTERVAL_MS);
    expect(told).toBe(1);
  });

  it('keeps sweeping when a check or a holder throws', () => {
    const { revoked, warnings, watch } = setup();
    let told = 0;
    watch.watch('key_a', () => {
      throw new Error('holder broke');
    });
    watch.watch('key_a', () => told++);
    revoked.add('key_a');
    vi.advanceTimersByTime(KEY_CHECK_INTERVAL_MS);
    expect(told).toBe(1);
    expect(warnings).toHaveLength(1);

    const failing = createKeyWatch({
      isActive: () => {
        throw new Error('database is closed');
      },
      intervalMs: 10,
      log: { warn: (_obj, msg) => void warnings.push(msg) },
    });
    failing.watch('key_b', () => told++);
    vi.advanceTimersByTime(30);
    expect(told).toBe(1);
    expect(warnings.filter((w) => w === 'key check failed')).toHaveLength(3);
    failing.close();
  });
});
