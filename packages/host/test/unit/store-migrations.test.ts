import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  MIGRATIONS,
  createBoxStore,
  createKeyStore,
  createTaskStore,
  migrate,
  openDatabase,
  schemaVersion,
} from '../../src/index.js';
import { NO_GRANTS } from '../../src/store/key-store.js';

const dirs: string[] = [];
const tmp = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-store-'));
  dirs.push(dir);
  return dir;
};
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('SQLite store: numbered migrations', () => {
  it('creates a WAL database at the newest schema version', () => {
    const db = openDatabase(tmp());
    expect(schemaVersion(db)).toBe(Math.max(...MIGRATIONS.map((m) => m.version)));
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .all()
      .map((r) => (r as { name: string }).name);
    expect(tables).toEqual(
      expect.arrayContaining(['api_keys', 'boxes', 'box_transitions', 'schema_migrations']),
    );
    db.close();
  });

  it('numbers migrations 1..n without gaps', () => {
    expect(MIGRATIONS.map((m) => m.version)).toEqual(MIGRATIONS.map((_, i) => i + 1));
  });

  it('applies only what is missing when reopened, keeping the data', () => {
    const dir = tmp();
    const first = openDatabase(dir, { migrations: MIGRATIONS.slice(0, 1) });
    expect(schemaVersion(first)).toBe(1);
    first
      .prepare(
        `INSERT INTO boxes (id, state, owner_key_id, runtime, memory_mib, vcpus, disk_gib, dir, created_at, updated_at)
         VALUES ('box-0123456789', 'running', 'k', 'bash', 512, 1, 2, '/x', 1, 1)`,
      )
      .run();
    first.close();
    const second = openDatabase(dir);
    expect(migrate(second)).toEqual([]);
    expect(schemaVersion(second)).toBe(MIGRATIONS.length);
    expect(createBoxStore(second).get('box-0123456789')).toMatchObject({ state: 'running', memoryMib: 512 });
    second.close();
  });

  it('a task stored before continue-last-session was kept reads as not continuing', () => {
    const dir = tmp();
    const v5 = openDatabase(dir, { migrations: MIGRATIONS.filter((m) => m.version <= 5) });
    v5.prepare(
      `INSERT INTO tasks (id, owner_key_id, target, state, agent, spec, created_at)
       VALUES ('task-old', 'k', 'user', 'queued', 'claude', '{"prompt":"x"}', 1)`,
    ).run();
    v5.close();
    const db = openDatabase(dir);
    const store = createTaskStore(db, () => 2);
    expect(store.get('task-old')).toMatchObject({ state: 'queued', continueLastSession: false });
    const spec = { prompt: 'y', agent: 'claude', effort: 'low', timeoutSeconds: 10 } as const;
    const base = {
      ownerKeyId: 'k',
      target: 'user',
      boxId: null,
      userId: 'u',
      agent: 'claude',
      spec,
    } as const;
    store.insert({ ...base, id: 'task-seed', continueLastSession: true });
    expect(store.get('task-seed')!.continueLastSession).toBe(true);
    db.close();
  });

  it('task events stored before events could be cut read back whole and unmarked; new ones keep the mark', () => {
    const dir = tmp();
    const v6 = openDatabase(dir, { migrations: MIGRATIONS.filter((m) => m.version <= 6) });
    v6.prepare(
      `INSERT INTO tasks (id, owner_key_id, target, state, agent, spec, created_at)
       VALUES ('task-old', 'k', 'user', 'succeeded', 'shell', '{"prompt":"x"}', 1)`,
    ).run();
    const insert = v6.prepare(
      `INSERT INTO task_events (task_id, seq, ts, type, content, raw) VALUES ('task-old', ?, 't', 'text', ?, ?)`,
    );
    insert.run(1, '"héllo"', 'héllo');
    insert.run(2, '{"state":"done"}', null);
    v6.close();
    const db = openDatabase(dir);
    const store = createTaskStore(db, () => 2);
    expect(store.eventPage('task-old')).toEqual({
      events: [
        { seq: 1, ts: 't', type: 'text', content: 'héllo', raw: 'héllo' },
        { seq: 2, ts: 't', type: 'text', content: { state: 'done' } },
      ],
      more: false,
    });
    // Bytes, not characters: `é` is two.
    expect(store.eventTotals('task-old')).toEqual({ events: 2, bytes: 8 + 6 + 16 });
    store.appendEvent('task-old', { type: 'text', content: 'cut', raw: 'cut', truncated: true });
    expect(store.eventPage('task-old', { after: 2 }).events).toEqual([
      {
        seq: 3,
        ts: expect.any(String) as unknown,
        type: 'text',
        content: 'cut',
        raw: 'cut',
        truncated: true,
      },
    ]);
    db.close();
  });

  it('keys made before grants have none; a user id that was one per host becomes one per key', () => {
    const dir = tmp();
    const v7 = openDatabase(dir, { migrations: MIGRATIONS.filter((m) => m.version <= 7) });
    v7.prepare(
      `INSERT INTO api_keys (id, name, scope, hash, prefix, created_at) VALUES ('key_old', 'old', 'user', 'h', 'abk_x', 1)`,
    ).run();
    const box = (id: string, owner: string) =>
      `INSERT INTO boxes (id, state, owner_key_id, user_id, runtime, memory_mib, vcpus, disk_gib, dir, created_at, updated_at)
       VALUES ('${id}', 'running', '${owner}', 'alice', 'bash', 512, 1, 2, '/x', 1, 1)`;
    v7.prepare(box('box-a', 'key_old')).run();
    expect(() => v7.prepare(box('box-b', 'key_other')).run()).toThrow(/UNIQUE/);
    v7.close();

    const db = openDatabase(dir);
    const [old] = createKeyStore(db).list();
    expect(old!.grants).toEqual(NO_GRANTS);
    expect(old!.spentUsd).toBe(0);
    expect(old!.spentSince).toBe(old!.createdAt);
    db.prepare(box('box-b', 'key_other')).run();
    expect(() => db.prepare(box('box-c', 'key_old')).run()).toThrow(/UNIQUE/);
    const store = createBoxStore(db);
    expect(store.findLiveByUser('key_other', 'alice')!.id).toBe('box-b');
    expect(store.findLiveByUserOfAnyKey('alice').map((b) => b.id)).toEqual(['box-a', 'box-b']);
    db.close();
  });

  it('rolls a failing migration back whole and records nothing', () => {
    const dir = tmp();
    const broken = [
      ...MIGRATIONS,
      { version: 99, name: 'broken', sql: 'CREATE TABLE half (x INTEGER); THIS IS NOT SQL;' },
    ];
    expect(() => openDatabase(dir, { migrations: broken })).toThrow();
    const db = openDatabase(dir);
    expect(schemaVersion(db)).toBe(MIGRATIONS.length);
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'half'").get()).toBeUndefined();
    db.close();
  });

  it('refuses a database written by a newer agentbox', () => {
    const dir = tmp();
    const db = openDatabase(dir);
    db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)").run();
    db.close();
    expect(() => openDatabase(dir)).toThrow(/schema version 999.*upgrade agentbox/);
  });

  it('logs every transition and refuses one from the wrong state', () => {
    const db = openDatabase(tmp());
    let now = 1000;
    const store = createBoxStore(db, () => now);
    const box = {
      id: 'box-aaaaaaaaaa',
      ownerKeyId: 'k',
      userId: 'u',
      runtime: 'bash' as const,
      memoryMib: 512,
      vcpus: 1,
      diskGib: 2,
      ttlSeconds: 10,
      labels: { a: 'b' },
      dir: '/tmp/x',
      egressPolicy: { allowDomains: ['example.com'] },
    };
    expect(store.insert(box, { maxLive: 5 })).toMatchObject({
      state: 'creating',
      expiresAt: 11_000,
      egressPolicy: { allowDomains: ['example.com'] },
    });
    expect(() => store.insert({ ...box, id: 'box-bbbbbbbbbb' }, { maxLive: 5 })).toThrow(
      /already has a live box/,
    );
    expect(() => store.insert({ ...box, id: 'box-cccccccccc', userId: null }, { maxLive: 1 })).toThrow(
      expect.objectContaining({ code: 'capacity_exhausted' }),
    );
    now = 2000;
    store.transition(box.id, 'running', { from: ['creating'], patch: { pid: 42, pidStartTime: 7 } });
    expect(() => store.transition(box.id, 'running', { from: ['creating'] })).toThrow(
      expect.objectContaining({ code: 'invalid_state' }),
    );
    store.transition(box.id, 'failed', { from: ['running'], reason: 'the VM died', patch: { pid: null } });
    expect(store.get(box.id)).toMatchObject({ state: 'failed', pid: null, pidStartTime: 7, updatedAt: 2000 });
    expect(store.transitions(box.id).map((t) => [t.from, t.to, t.reason])).toEqual([
      [null, 'creating', null],
      ['creating', 'running', null],
      ['running', 'failed', 'the VM died'],
    ]);
    // a failed box frees its user id
    expect(store.insert({ ...box, id: 'box-dddddddddd' }, { maxLive: 5 }).state).toBe('creating');
    db.close();
  });
});
