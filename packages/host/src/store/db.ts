import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { AgentboxError } from '@agentbox/protocol';
import { MIGRATIONS, type Migration } from './migrations.js';

export type Db = Database.Database;

export const DB_FILE = 'agentbox.db';

/** An error of the store itself (a full disk, a locked or broken file), not of what it was asked. */
export function isStoreError(err: unknown): boolean {
  return err instanceof Database.SqliteError;
}

/** The store could not write for want of disk space. */
export function isStoreFull(err: unknown): boolean {
  return err instanceof Database.SqliteError && err.code === 'SQLITE_FULL';
}

/** Applies the migrations not yet recorded; refuses a database written by a newer agentbox. */
export function migrate(db: Db, migrations: readonly Migration[] = MIGRATIONS): number[] {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`);
  const applied = new Set(
    db
      .prepare('SELECT version FROM schema_migrations')
      .all()
      .map((r) => (r as { version: number }).version),
  );
  const known = Math.max(0, ...migrations.map((m) => m.version));
  const newest = Math.max(0, ...applied);
  if (newest > known) {
    throw new AgentboxError(
      'invalid_state',
      `the database is at schema version ${newest} but this agentbox knows only up to ${known}; upgrade agentbox`,
    );
  }
  const ran: number[] = [];
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    if (applied.has(m.version)) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
        m.version,
        m.name,
        Date.now(),
      );
    })();
    ran.push(m.version);
  }
  return ran;
}

/**
 * Opens (creating if needed) the daemon's SQLite database in `dataDir`, WAL mode, migrated. With
 * `existing`, a directory without one is refused instead: a command that only reads state (keys
 * list, audit) must not leave an empty database behind a mistyped `--data`.
 */
export function openDatabase(
  dataDir: string,
  options: { migrations?: readonly Migration[]; existing?: boolean } = {},
): Db {
  if (options.existing && !fs.existsSync(path.join(dataDir, DB_FILE)))
    throw new AgentboxError(
      'invalid_request',
      `no agentbox state in ${dataDir} (\`agentbox serve\` makes it there; --data or AGENTBOX_HOME picks another)`,
    );
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const db = new Database(path.join(dataDir, DB_FILE));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    migrate(db, options.migrations);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

export function schemaVersion(db: Db): number {
  const row = db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null };
  return row.v ?? 0;
}

/**
 * Removes the rows of `table` whose `key` column is a given value, oldest `seq` first, up to
 * `limit` a call; true while more are left. Each call deletes a range below the first row kept:
 * `seq IN (SELECT … LIMIT n)` was ~6× slower. `table` and `key` are the stores' own names.
 */
export function chunkRemover(db: Db, table: string, key: string): (value: string, limit: number) => boolean {
  const seqAt = db.prepare<[string, number], { seq: number }>(
    `SELECT seq FROM ${table} WHERE ${key} = ? ORDER BY seq LIMIT 1 OFFSET ?`,
  );
  const removeBelow = db.prepare<[string, number]>(`DELETE FROM ${table} WHERE ${key} = ? AND seq < ?`);
  const removeAll = db.prepare<[string]>(`DELETE FROM ${table} WHERE ${key} = ?`);
  return (value, limit) => {
    const kept = seqAt.get(value, limit)?.seq;
    if (kept === undefined) {
      removeAll.run(value);
      return false;
    }
    removeBelow.run(value, kept);
    return true;
  };
}
