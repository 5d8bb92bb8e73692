import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { AgentboxError, RepoGrantSchema } from '@agentbox/protocol';
import { isStoreFull, type Db } from './db.js';

export type KeyScope = 'admin' | 'user';

/**
 * What a key may use beyond seeing its own boxes, set by the operator (`agentbox keys create|update`).
 * A user key starts with none: no repository gets the host's GitHub token for its boxes, and only
 * the host's own limits bound how much it holds. Admin keys may use any repository.
 */
export interface KeyGrants {
  /** Repositories its boxes may list in `repos` (RepoGrantSchema: `owner/name`, `owner/*`, `*`). */
  repos: readonly string[];
  /** Live boxes it may hold at once; null: only the host's `--max-boxes`. */
  maxBoxes: number | null;
  /** Tasks it may have queued or running at once; null: only the host's queue. */
  maxTasks: number | null;
  /** Guest memory of all its live boxes together, MiB; null: no cap. */
  maxMemoryMib: number | null;
  /** Disk size of all its live boxes together, GiB (what they may fill on the host); null: no cap. */
  maxDiskGib: number | null;
  /** What its boxes may spend on model calls in all, by the host's count; null: no cap. */
  maxSpendUsd: number | null;
}

export const NO_GRANTS: KeyGrants = {
  repos: [],
  maxBoxes: null,
  maxTasks: null,
  maxMemoryMib: null,
  maxDiskGib: null,
  maxSpendUsd: null,
};

/** A stored API key; the secret itself is never stored, only its sha256. */
export interface ApiKeyInfo {
  id: string;
  name: string;
  scope: KeyScope;
  prefix: string;
  createdAt: number;
  revokedAt: number | null;
  lastUsedAt: number | null;
  grants: KeyGrants;
  /** What its boxes' model calls cost since `spentSince`, by the host's count. */
  spentUsd: number;
  /** When the count started: the key's creation, or its last `resetSpend`. */
  spentSince: number;
}

/** Who made a request: the key, and so what it may see and use. */
export interface Actor {
  keyId: string;
  scope: KeyScope;
  /** The key's grants as stored when the request came in; absent: none (see grantsOf). */
  grants?: KeyGrants;
}

/** An actor's grants: what its key was given, none when unknown; admin keys may use any repository. */
export function grantsOf(actor: Actor): KeyGrants {
  const grants = actor.grants ?? NO_GRANTS;
  return actor.scope === 'admin' ? { ...grants, repos: ['*'] } : grants;
}

interface KeyRow {
  id: string;
  name: string;
  scope: KeyScope;
  prefix: string;
  created_at: number;
  revoked_at: number | null;
  last_used_at: number | null;
  repo_grants: string;
  max_boxes: number | null;
  max_tasks: number | null;
  max_memory_mib: number | null;
  max_disk_gib: number | null;
  max_spend_usd: number | null;
  spent_usd: number;
  spend_reset_at: number | null;
}

/** Each limit a key may be granted, and its column: the one list the statements below are made from. */
const LIMIT_COLUMNS = {
  maxBoxes: 'max_boxes',
  maxTasks: 'max_tasks',
  maxMemoryMib: 'max_memory_mib',
  maxDiskGib: 'max_disk_gib',
  maxSpendUsd: 'max_spend_usd',
} as const satisfies Record<Exclude<keyof KeyGrants, 'repos'>, keyof KeyRow>;
const LIMIT_FIELDS = Object.keys(LIMIT_COLUMNS) as (keyof typeof LIMIT_COLUMNS)[];
const GRANT_COLUMNS = ['repo_grants', ...LIMIT_FIELDS.map((field) => LIMIT_COLUMNS[field])];

/** A key's grants as their columns take them, in GRANT_COLUMNS order. */
function grantValues(grants: KeyGrants): (string | number | null)[] {
  return [JSON.stringify(grants.repos), ...LIMIT_FIELDS.map((field) => grants[field])];
}

const KEY_COLUMNS = [
  'id, name, scope, prefix, created_at, revoked_at, last_used_at',
  ...GRANT_COLUMNS,
  'spent_usd, spend_reset_at',
].join(', ');

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
    grants: grantsOfRow(row),
    spentUsd: row.spent_usd,
    spentSince: spentSinceOf(row),
  };
}

/** When a key's spend count started: its last reset, else its creation. */
function spentSinceOf(row: Pick<KeyRow, 'spend_reset_at' | 'created_at'>): number {
  return row.spend_reset_at ?? row.created_at;
}

function grantsOfRow(row: KeyRow): KeyGrants {
  const grants = { ...NO_GRANTS, repos: RepoGrantSchema.array().catch([]).parse(safeJson(row.repo_grants)) };
  for (const field of LIMIT_FIELDS) grants[field] = row[LIMIT_COLUMNS[field]];
  return grants;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return [];
  }
}

/** Checks grants given to a key: canonical repos (deduplicated), limits whole and >= 0. */
function checkGrants(grants: Partial<KeyGrants>): Partial<KeyGrants> {
  const out: Partial<KeyGrants> = {};
  if (grants.repos !== undefined) {
    const parsed = RepoGrantSchema.array().max(1000).safeParse(grants.repos);
    if (!parsed.success) {
      const bad = parsed.error.issues[0];
      throw new AgentboxError(
        'invalid_request',
        `--repo ${String(grants.repos[Number(bad?.path[0] ?? 0)] ?? '')}: ${bad?.message ?? 'invalid'}`,
      );
    }
    out.repos = [...new Set(parsed.data)].sort();
  }
  for (const field of ['maxBoxes', 'maxTasks', 'maxMemoryMib', 'maxDiskGib'] as const) {
    const value = grants[field];
    if (value === undefined) continue;
    if (value !== null && (!Number.isSafeInteger(value) || value < 0))
      throw new AgentboxError('invalid_request', `${field} must be a whole number >= 0, got ${value}`);
    out[field] = value;
  }
  const spend = grants.maxSpendUsd;
  if (spend !== undefined) {
    if (spend !== null && !(Number.isFinite(spend) && spend >= 0 && spend <= 1_000_000_000))
      throw new AgentboxError(
        'invalid_request',
        `maxSpendUsd must be a number of dollars >= 0, got ${spend}`,
      );
    out.maxSpendUsd = spend;
  }
  return out;
}

export function createKeyStore(db: Db, clock: () => number = Date.now) {
  const byHash = db.prepare<[string], KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE hash = ?`);
  const byId = db.prepare<[string], KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE id = ?`);
  const touch = db.prepare('UPDATE api_keys SET last_used_at = ? WHERE id = ?');
  const addSpent = db.prepare('UPDATE api_keys SET spent_usd = spent_usd + ? WHERE id = ?');
  const spendById = db.prepare<
    [string],
    { spent_usd: number; max_spend_usd: number | null; spend_reset_at: number | null; created_at: number }
  >('SELECT spent_usd, max_spend_usd, spend_reset_at, created_at FROM api_keys WHERE id = ?');
  const activeById = db.prepare<[string], { one: number }>(
    'SELECT 1 AS one FROM api_keys WHERE id = ? AND revoked_at IS NULL',
  );

  return {
    /** Makes a key; the returned secret is shown once and cannot be recovered. */
    create(options: { name: string; scope: KeyScope; grants?: Partial<KeyGrants> }): {
      secret: string;
      key: ApiKeyInfo;
    } {
      const grants = { ...NO_GRANTS, ...checkGrants(options.grants ?? {}) };
      const secret = KEY_PREFIX + randomBytes(32).toString('base64url');
      const id = `key_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
      db.prepare(
        `INSERT INTO api_keys (id, name, scope, hash, prefix, created_at, ${GRANT_COLUMNS.join(', ')})
         VALUES (?, ?, ?, ?, ?, ?, ${GRANT_COLUMNS.map(() => '?').join(', ')})`,
      ).run(
        id,
        options.name,
        options.scope,
        hashKey(secret),
        secret.slice(0, 10),
        clock(),
        ...grantValues(grants),
      );
      return { secret, key: toInfo(byId.get(id)!) };
    },

    /**
     * Changes what a key is granted (fields left out stay). A running daemon sees it on the key's
     * next request, and holds the key's boxes' egress to it within its key check interval.
     */
    update(id: string, grants: Partial<KeyGrants>): ApiKeyInfo {
      const checked = checkGrants(grants);
      const row = byId.get(id);
      if (!row) throw new AgentboxError('invalid_request', `no API key with id ${id}`);
      const next = { ...grantsOfRow(row), ...checked };
      db.prepare(
        `UPDATE api_keys SET ${GRANT_COLUMNS.map((column) => `${column} = ?`).join(', ')} WHERE id = ?`,
      ).run(...grantValues(next), id);
      return toInfo(byId.get(id)!);
    },

    /** Adds to what a key's boxes have spent (the host's count; see spend-accounts.ts). */
    addSpend(id: string, usd: number): void {
      if (usd > 0 && Number.isFinite(usd)) addSpent.run(usd, id);
    },

    /**
     * Starts a key's spend count again (a new billing period): its cap holds against what its boxes
     * spend from now. A running daemon sees it at the key's next model call.
     */
    resetSpend(id: string): ApiKeyInfo {
      const result = db
        .prepare('UPDATE api_keys SET spent_usd = 0, spend_reset_at = ? WHERE id = ?')
        .run(clock(), id);
      if (result.changes === 0) throw new AgentboxError('invalid_request', `no API key with id ${id}`);
      return toInfo(byId.get(id)!);
    },

    /** What a key's boxes have spent and may spend; undefined for an unknown key. */
    spendOf(id: string): { spentUsd: number; maxSpendUsd: number | null; spentSince: number } | undefined {
      const row = spendById.get(id);
      return (
        row && {
          spentUsd: row.spent_usd,
          maxSpendUsd: row.max_spend_usd,
          spentSince: spentSinceOf(row),
        }
      );
    },

    /** One key, or undefined. */
    get(id: string): ApiKeyInfo | undefined {
      const row = byId.get(id);
      return row && toInfo(row);
    },

    /** A key's grants as stored now (an admin key's cover any repository); none for an unknown key. */
    grantsFor(id: string): KeyGrants {
      const row = byId.get(id);
      return row ? grantsOf({ keyId: id, scope: row.scope, grants: grantsOfRow(row) }) : NO_GRANTS;
    },

    list(): ApiKeyInfo[] {
      return db
        .prepare<[], KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys ORDER BY created_at, rowid`)
        .all()
        .map(toInfo);
    },

    revoke(id: string): ApiKeyInfo {
      const result = db
        .prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL')
        .run(clock(), id);
      const row = byId.get(id);
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
      if (row.last_used_at === null || now - row.last_used_at > LAST_USED_RESOLUTION_MS) {
        try {
          touch.run(now, row.id);
        } catch (err) {
          // Bookkeeping: a full disk must not lock every key out of the API that frees it.
          if (!isStoreFull(err)) throw err;
        }
      }
      return { keyId: row.id, scope: row.scope, grants: grantsOfRow(row) };
    },

    /** Number of keys ever made, revoked ones included (none: a store that never had a key). */
    total(): number {
      return (db.prepare('SELECT COUNT(*) AS n FROM api_keys').get() as { n: number }).n;
    },
  };
}

export type KeyStore = ReturnType<typeof createKeyStore>;
