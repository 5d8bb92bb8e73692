import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createCommandStore } from '../../src/store/command-store.js';
import { openDatabase } from '../../src/store/db.js';
import { createKeyStore } from '../../src/store/key-store.js';

// Ids are random: rows made in the same millisecond must still list in the order they were made
// (a CI run once listed two keys made back to back the other way round).
describe('lists made within one millisecond keep the order their rows were made in', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-list-order-'));
  const db = openDatabase(dir);
  const frozen = () => 1_700_000_000_000;
  afterAll(() => {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keys', () => {
    const keys = createKeyStore(db, frozen);
    const names = Array.from({ length: 12 }, (_, i) => `k${i}`);
    for (const name of names) keys.create({ name, scope: 'user' });
    expect(keys.list().map((k) => k.name)).toEqual(names);
  });

  it("a box's commands, and the running ones the daemon watches again", () => {
    const commands = createCommandStore(db, frozen);
    const ids = Array.from({ length: 12 }, (_, i) => `cmd-${String(11 - i).padStart(12, '0')}`);
    for (const id of ids) commands.add({ id, boxId: 'b1', ownerKeyId: 'k', argv: ['true'], pid: 1 });
    expect(commands.listByBox('b1').map((c) => c.id)).toEqual(ids);
    expect(commands.running().map((c) => c.id)).toEqual(ids);
  });
});
