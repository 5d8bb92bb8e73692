import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createKeyStore, openDatabase, type Db } from '../../src/index.js';
import { createSpendAccounts } from '../../src/services/spend-accounts.js';

/** Each key's model spend: held in memory at once, written to the key store once a second. */

let db: Db | undefined;
let dir: string | undefined;
afterEach(() => {
  vi.useRealTimers();
  db?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function setUp() {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-accounts-'));
  db = openDatabase(dir);
  const keys = createKeyStore(db);
  const key = keys.create({ name: 'k', scope: 'user', grants: { maxSpendUsd: 1 } }).key;
  const owners = new Map([
    ['box-a', key.id],
    ['box-b', key.id],
  ]);
  const accounts = createSpendAccounts({ keys, ownerOf: (id) => owners.get(id), flushMs: 1000 });
  return { keys, key, accounts };
}

describe('spend accounts', () => {
  it("charge a box's key: all its boxes share one count, held at once and stored within the flush", () => {
    vi.useFakeTimers();
    const { keys, key, accounts } = setUp();
    accounts.forBox('box-a')!.charge(0.4);
    accounts.forBox('box-b')!.charge(0.35);
    expect(accounts.forBox('box-a')!.spentUsd).toBeCloseTo(0.75, 12);
    expect(keys.get(key.id)!.spentUsd).toBe(0);
    vi.advanceTimersByTime(1000);
    expect(keys.get(key.id)!.spentUsd).toBeCloseTo(0.75, 12);
    accounts.forBox('box-a')!.charge(0.1);
    accounts.flush();
    expect(keys.get(key.id)!.spentUsd).toBeCloseTo(0.85, 12);
  });

  it("read the key's cap at every use, and start from what the store says was spent", () => {
    const { keys, key, accounts } = setUp();
    keys.addSpend(key.id, 2);
    expect(accounts.forBox('box-a')).toMatchObject({ limitUsd: 1, spentUsd: 2 });
    keys.update(key.id, { maxSpendUsd: null });
    expect(accounts.forBox('box-a')!.limitUsd).toBe(Infinity);
    expect(accounts.forBox('box-unknown')).toBeUndefined();
  });
});

describe('a reset of the spend count', () => {
  it('made in the store (keys reset-spend, another process) holds at the next use; held charges stay', () => {
    vi.useFakeTimers();
    const { keys, key, accounts } = setUp();
    const held = accounts.forBox('box-a')!;
    held.charge(1.2);
    vi.advanceTimersByTime(1000);
    expect(keys.get(key.id)!.spentUsd).toBeCloseTo(1.2, 12);
    vi.setSystemTime(Date.now() + 60_000);
    const reset = keys.resetSpend(key.id);
    expect(reset).toMatchObject({ spentUsd: 0, spentSince: Date.now() });
    expect(accounts.forBox('box-b')).toMatchObject({ spentUsd: 0, since: reset.spentSince });
    expect(reset.spentSince).toBeGreaterThan(key.spentSince);
    // An account a call already holds is the same count, and still reaches the store.
    held.charge(0.3);
    expect(accounts.forBox('box-b')!.spentUsd).toBeCloseTo(0.3, 12);
    accounts.flush();
    expect(keys.get(key.id)!.spentUsd).toBeCloseTo(0.3, 12);
  });

  it('made by the daemon drops the charges it had not yet written: they belong to the count that ended', () => {
    const { keys, key, accounts } = setUp();
    accounts.forBox('box-a')!.charge(0.9);
    accounts.reset(key.id);
    keys.resetSpend(key.id);
    expect(accounts.forBox('box-a')!.spentUsd).toBe(0);
    accounts.flush();
    expect(keys.get(key.id)!.spentUsd).toBe(0);
    expect(() => keys.resetSpend('key_000000000000')).toThrow(/no API key with id key_000000000000/);
  });
});
