import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createKeyStore, openDatabase, type Db, type KeyStore } from '@agentbox/host';
import { firstStartKey } from '../../src/commands/serve.js';

describe("agentbox serve's first-start admin key", () => {
  let dataDir: string;
  let db: Db;
  let keys: KeyStore;
  let printed: string;
  const out = { write: (text: string) => (printed += text) };

  beforeEach(() => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-first-key-'));
    db = openDatabase(dataDir);
    keys = createKeyStore(db);
    printed = '';
  });
  afterEach(() => {
    db.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('makes and prints an admin key when the store never had one, and only then', () => {
    const secret = firstStartKey(keys, out);
    expect(secret).toMatch(/^abk_/);
    expect(printed).toMatch(
      /^agentbox: no API key existed, so an admin key was made \(key_\w+\); it is shown only this once:\n/,
    );
    expect(printed.endsWith(`\n${secret}\n`)).toBe(true);
    expect(keys.authenticate(secret!)).toMatchObject({ scope: 'admin' });
    expect(keys.total()).toBe(1);

    printed = '';
    expect(firstStartKey(keys, out)).toBeUndefined();
    expect(printed).toBe('');
    expect(keys.total()).toBe(1);
  });

  it('makes no key when every key was revoked: it says so in one line, with the command to run', () => {
    const admin = keys.create({ name: 'ops', scope: 'admin' });
    const user = keys.create({ name: 'ci', scope: 'user' });
    keys.revoke(admin.key.id);
    keys.revoke(user.key.id);

    expect(firstStartKey(keys, out)).toBeUndefined();
    expect(printed).toBe(
      'agentbox: every API key is revoked, so every request is refused; make one with `agentbox keys create --scope admin`\n',
    );
    expect(keys.total()).toBe(2);
    expect(keys.activeCount()).toBe(0);
    expect(keys.list().every((k) => k.revokedAt !== null)).toBe(true);
  });

  it('names the --data the daemon was given in that command, quoted for a shell when it must be', () => {
    keys.revoke(keys.create({ name: 'ops', scope: 'admin' }).key.id);
    firstStartKey(keys, out, '/srv/agentbox');
    expect(printed).toMatch(/`agentbox keys create --scope admin --data \/srv\/agentbox`\n$/);
    printed = '';
    firstStartKey(keys, out, "/srv/it's here");
    expect(printed).toMatch(/`agentbox keys create --scope admin --data '\/srv\/it'\\''s here'`\n$/);
  });

  it('prints nothing when a key still works', () => {
    keys.revoke(keys.create({ name: 'old', scope: 'admin' }).key.id);
    keys.create({ name: 'ci', scope: 'user' });
    expect(firstStartKey(keys, out)).toBeUndefined();
    expect(printed).toBe('');
    expect(keys.total()).toBe(2);
  });
});
