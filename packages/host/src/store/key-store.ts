import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { AgentboxError } from '@agentbox/protocol';
import type { Db } from './db.js';

export type KeyScope = 'admin' | 'user';

/** A stored API key; the secret itself is never stored, only its sha256. */
export interface ApiKeyInfo {
  id: string;
  name: string;
  scope: KeyScope;
  prefix: string;
  createdAt: number;
  revokedAt: number | null;
  lastUsedAt: number | null;
}

/** Who made a request: the key, and so what it may see. */
export interface Actor {
  keyId: string;
  scope: KeyScope;
}

interface KeyRow {
  id: string;
  name: string;
  scope: KeyScope;
  prefix: string;
  created_at: number;
  revoked_at: number | null;
  last_used_at: number | null;
}

const KEY_PREFIX = 'abk_';
/** last_used_at is refreshed at most this often, so authentication rarely writes. */
const LAST_USED_RESOLUTION_MS = 60_000;

export function hashKey(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

function toInfo(row: KeyRow): ApiKeyInfo {
  return {
    id: row.id,
    name: row.name,
    scope: row.scope,
    prefix: row.prefix,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
  };
}

export function createKeyStore(db: Db, clock: () => number = Date.now) {
  const byHash = db.prepare<[string], KeyRow>(
    'SELECT id, name, scope, prefix, created_at, revoked_at, last_used_at FROM api_keys WHERE hash = ?',
  );
  const touch = db.prepare('UPDATE api_keys SET last_used_at = ? WHERE id = ?');
  const activeById = db.prepare<[string], { one: number }>(
    'SELECT 1 AS one FROM api_keys WHERE id = ? AND revoked_at IS NULL',
  );

  return {
    /** Makes a key; the returned secret is shown once and cannot be recovered. */
    create(options: { name: string; scope: KeyScope }): { secret: string; key: ApiKeyInfo } {
      const secret = KEY_PREFIX + randomBytes(32).toString('base64url');
      const id = `key_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
      const now = clock();
      db.prepare(
        'INSERT INTO api_keys (id, name, scope, hash, prefix, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      ).run(id, options.name, options.scope, hashKey(secret), secret.slice(0, 10), now);
      return {
        secret,
        key: {
          id,
          name: options.name,
          scope: options.scope,
          prefix: secret.slice(0, 10),
          createdAt: now,
          revokedAt: null,
          lastUsedAt: null,
        },
      };
    },

    list(): ApiKeyInfo[] {
      return db
        .prepare<[], KeyRow>(
          'SELECT id, name, scope, prefix, created_at, revoked_at, last_used_at FROM api_keys ORDER BY created_at, id',
        )
        .all()
        .map(toInfo);
    },

    revoke(id: string): ApiKeyInfo {
      const result = db
        .prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL')
        .run(clock(), id);
      const row = db
        .prepare<[string], KeyRow>(
          'SELECT id, name, scope, prefix, created_at, revoked_at, last_used_at FROM api_keys WHERE id = ?',
        )
        .get(id);
      if (!row) throw new AgentboxError('invalid_request', `no API key with id ${id}`);
      if (result.changes === 0) throw new AgentboxError('invalid_state', `API key ${id} is already revoked`);
      return toInfo(row);
    },

    /** Number of keys that still work. */
    activeCount(): number {
      return (
        db.prepare('SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL').get() as { n: number }
      ).n;
    },

    /**
     * Whether the key still works: it exists and is not revoked (a primary-key read, so cheap to
     * poll). Sees a revocation another process (`agentbox keys revoke`) has committed.
     */
    isActive(id: string): boolean {
      return activeById.get(id) !== undefined;
    },

    /** The actor behind a presented secret, or undefined for an unknown or revoked key. */
    authenticate(secret: string): Actor | undefined {
      const row = byHash.get(hashKey(secret));
      if (!row || row.revoked_at !== null) return undefined;
      const now = clock();
      if (row.last_used_at === null || now - row.last_used_at > LAST_USED_RESOLUTION_MS)
        touch.run(now, row.id);
      return { keyId: row.id, scope: row.scope };
    },
  };
}

export type KeyStore = ReturnType<typeof createKeyStore>;
