import {
  AgentboxError,
  type BoxStartMode,
  type BoxState,
  type EgressPolicyInput,
  type Runtime,
} from '@agentbox/protocol';
import type { EgressIdentity } from '@agentbox/egress';
import type { Db } from './db.js';

/** States in which a box holds host resources (a VM process, a runtime dir, a capacity slot). */
export const LIVE_STATES: readonly BoxState[] = ['creating', 'running', 'paused', 'hibernated', 'stopped'];

/** A box as stored; the API view (`Box`) is derived from it. Times are Unix milliseconds. */
export interface BoxRecord {
  id: string;
  state: BoxState;
  ownerKeyId: string;
  userId: string | null;
  runtime: Runtime;
  memoryMib: number;
  vcpus: number;
  diskGib: number;
  ttlSeconds: number | null;
  labels: Record<string, string>;
  pid: number | null;
  pidStartTime: number | null;
  /** The box's runtime dir on the host (overlay disk, sockets, logs). */
  dir: string;
  createdAt: number;
  updatedAt: number;
  expiresAt: number | null;
  bootMs: number | null;
  failureReason: string | null;
  /** The box's egress policy, as given (the gateway validates it); null: egress disabled. */
  egressPolicy: EgressPolicyInput | null;
  /** The image its disk (and any snapshot) belongs to; null for boxes made before it was recorded. */
  imageId: string | null;
  /** How its VM last started. */
  startMode: BoxStartMode | null;
}

export type NewBox = Omit<
  BoxRecord,
  | 'state'
  | 'pid'
  | 'pidStartTime'
  | 'createdAt'
  | 'updatedAt'
  | 'expiresAt'
  | 'bootMs'
  | 'failureReason'
  | 'startMode'
  | 'imageId'
> & { imageId?: string | null };

export type BoxPatch = Partial<
  Pick<BoxRecord, 'pid' | 'pidStartTime' | 'bootMs' | 'failureReason' | 'startMode' | 'imageId'>
>;

interface BoxRow {
  id: string;
  state: BoxState;
  owner_key_id: string;
  user_id: string | null;
  runtime: Runtime;
  memory_mib: number;
  vcpus: number;
  disk_gib: number;
  ttl_seconds: number | null;
  labels: string;
  pid: number | null;
  pid_start_time: number | null;
  dir: string;
  created_at: number;
  updated_at: number;
  expires_at: number | null;
  boot_ms: number | null;
  failure_reason: string | null;
  egress_policy: string | null;
  image_id: string | null;
  start_mode: BoxStartMode | null;
}

export interface Transition {
  boxId: string;
  at: number;
  from: BoxState | null;
  to: BoxState;
  reason: string | null;
}

function toRecord(row: BoxRow): BoxRecord {
  return {
    id: row.id,
    state: row.state,
    ownerKeyId: row.owner_key_id,
    userId: row.user_id,
    runtime: row.runtime,
    memoryMib: row.memory_mib,
    vcpus: row.vcpus,
    diskGib: row.disk_gib,
    ttlSeconds: row.ttl_seconds,
    labels: JSON.parse(row.labels) as Record<string, string>,
    pid: row.pid,
    pidStartTime: row.pid_start_time,
    dir: row.dir,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    expiresAt: row.expires_at,
    bootMs: row.boot_ms,
    failureReason: row.failure_reason,
    egressPolicy: row.egress_policy === null ? null : (JSON.parse(row.egress_policy) as EgressPolicyInput),
    imageId: row.image_id,
    startMode: row.start_mode,
  };
}

const PATCH_COLUMNS: Record<keyof BoxPatch, string> = {
  pid: 'pid',
  pidStartTime: 'pid_start_time',
  bootMs: 'boot_ms',
  failureReason: 'failure_reason',
  startMode: 'start_mode',
  imageId: 'image_id',
};

/** The most live boxes the host takes, and what one key may hold (null: no limit of its own). */
export interface RoomLimits {
  maxLive: number;
  maxLiveOfOwner?: number | null;
  /** Caps on the guest memory (MiB) and disk (GiB) of the key's live boxes together, the new one's included. */
  maxMemoryOfOwner?: number | null;
  maxDiskOfOwner?: number | null;
  /** The new box's size, counted against those caps. */
  size?: { memoryMib: number; diskGib: number };
  /** Whether a full host says its counts (admin keys); false: only that it is full. */
  hostCounts?: boolean;
}

const LIVE_SQL = `state IN (${LIVE_STATES.map((s) => `'${s}'`).join(', ')})`;

function isUniqueViolation(err: unknown): boolean {
  return (err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE';
}

/**
 * Refuses a box whose size would take a key's live boxes past its cap: 429 when deleting one of them
 * makes room, 403 when the box alone is larger than the cap (no retry helps).
 */
function checkSizeCap(
  keyId: string,
  resource: 'memoryMib' | 'diskGib',
  unit: string,
  asked: number,
  held: number,
  cap: number | null | undefined,
): void {
  if (cap === null || cap === undefined || held + asked <= cap) return;
  const details = { limit: cap, scope: 'key', resource, asked, held };
  if (asked > cap)
    throw new AgentboxError(
      'forbidden',
      `API key ${keyId} may hold at most ${cap} ${unit} in all, and this box asks for ${asked}`,
      { details },
    );
  throw new AgentboxError(
    'capacity_exhausted',
    `API key ${keyId} holds ${held} of at most ${cap} ${unit} in its live boxes, and this box asks for ` +
      `${asked}; delete a box or retry later`,
    { details },
  );
}

/** Boxes and their state transitions. Every transition is committed before the caller acts on it. */
export function createBoxStore(db: Db, clock: () => number = Date.now) {
  const getRow = db.prepare<[string], BoxRow>('SELECT * FROM boxes WHERE id = ?');
  const logTransition = db.prepare(
    'INSERT INTO box_transitions (box_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)',
  );

  const get = (id: string): BoxRecord | undefined => {
    const row = getRow.get(id);
    return row && toRecord(row);
  };

  function checkRoom(ownerKeyId: string, limits: RoomLimits): void {
    const live = (db.prepare(`SELECT COUNT(*) AS n FROM boxes WHERE ${LIVE_SQL}`).get() as { n: number }).n;
    if (live >= limits.maxLive) {
      // A user key learns that the host is full, not how many boxes every key holds (as /metrics).
      if (limits.hostCounts === false)
        throw new AgentboxError('capacity_exhausted', 'this host runs as many boxes as it may; retry later');
      throw new AgentboxError(
        'capacity_exhausted',
        `this host already runs ${live} of at most ${limits.maxLive} boxes; delete one or retry later`,
        { details: { limit: limits.maxLive } },
      );
    }
    const ownerLimit = limits.maxLiveOfOwner;
    const { maxMemoryOfOwner: maxMemory, maxDiskOfOwner: maxDisk, size } = limits;
    if (ownerLimit == null && (size === undefined || (maxMemory == null && maxDisk == null))) return;
    const owned = db
      .prepare(
        `SELECT COUNT(*) AS n, COALESCE(SUM(memory_mib), 0) AS memory, COALESCE(SUM(disk_gib), 0) AS disk
         FROM boxes WHERE owner_key_id = ? AND ${LIVE_SQL}`,
      )
      .get(ownerKeyId) as { n: number; memory: number; disk: number };
    if (ownerLimit != null && owned.n >= ownerLimit) {
      throw new AgentboxError(
        'capacity_exhausted',
        `API key ${ownerKeyId} already holds ${owned.n} of at most ${ownerLimit} live boxes; delete one or retry later`,
        { details: { limit: ownerLimit, scope: 'key' } },
      );
    }
    if (size === undefined) return;
    checkSizeCap(ownerKeyId, 'memoryMib', 'MiB of memory', size.memoryMib, owned.memory, maxMemory);
    checkSizeCap(ownerKeyId, 'diskGib', 'GiB of disk', size.diskGib, owned.disk, maxDisk);
  }

  return {
    get,

    /** Refuses (429) a new box of `ownerKeyId` when the host or the key holds its most live boxes. */
    checkRoom,

    /**
     * Records a new box in `creating`, unless the host is full, its key holds `maxLiveOfOwner` live
     * boxes already, or the user id has a live box of that key.
     */
    insert(box: NewBox, limits: RoomLimits): BoxRecord {
      const now = clock();
      const insert = db.transaction(() => {
        checkRoom(box.ownerKeyId, limits);
        db.prepare(
          `INSERT INTO boxes (id, state, owner_key_id, user_id, runtime, memory_mib, vcpus, disk_gib,
             ttl_seconds, labels, dir, created_at, updated_at, expires_at, egress_policy, image_id)
           VALUES (?, 'creating', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(
          box.id,
          box.ownerKeyId,
          box.userId,
          box.runtime,
          box.memoryMib,
          box.vcpus,
          box.diskGib,
          box.ttlSeconds,
          JSON.stringify(box.labels),
          box.dir,
          now,
          now,
          box.ttlSeconds === null ? null : now + box.ttlSeconds * 1000,
          box.egressPolicy === null ? null : JSON.stringify(box.egressPolicy),
          box.imageId ?? null,
        );
        logTransition.run(box.id, now, null, 'creating', null);
      });
      try {
        insert();
      } catch (err) {
        if (isUniqueViolation(err))
          throw new AgentboxError('invalid_state', `user ${box.userId} already has a live box`, {
            details: { userId: box.userId },
          });
        throw err;
      }
      return get(box.id)!;
    },

    /** The box's egress CA and placeholders, as its last egress session had them. */
    egressIdentity(id: string): EgressIdentity | undefined {
      const row = db.prepare('SELECT egress_identity FROM boxes WHERE id = ?').get(id) as
        { egress_identity: string | null } | undefined;
      return row?.egress_identity ? (JSON.parse(row.egress_identity) as EgressIdentity) : undefined;
    },

    /** Keeps the box's egress identity for the next daemon (dropped when the box is deleted). */
    setEgressIdentity(id: string, identity: EgressIdentity): void {
      db.prepare(`UPDATE boxes SET egress_identity = ? WHERE id = ? AND state != 'deleted'`).run(
        JSON.stringify(identity),
        id,
      );
    },

    /** Replaces a box's egress policy (a task widened it for its agent and repository). */
    setEgressPolicy(id: string, policy: EgressPolicyInput): void {
      db.prepare('UPDATE boxes SET egress_policy = ?, updated_at = ? WHERE id = ?').run(
        JSON.stringify(policy),
        clock(),
        id,
      );
    },

    /**
     * Moves a box to `to` (only from one of `from`), with optional field changes, and logs the
     * transition, atomically. Throws `invalid_state` when the box is in another state.
     */
    transition(
      id: string,
      to: BoxState,
      options: { from: readonly BoxState[]; patch?: BoxPatch; reason?: string },
    ): BoxRecord {
      const now = clock();
      db.transaction(() => {
        const current = getRow.get(id);
        if (!current) throw new AgentboxError('box_not_found', `no box ${id}`);
        if (!options.from.includes(current.state)) {
          throw new AgentboxError(
            'invalid_state',
            `box ${id} is ${current.state}, not ${options.from.join('|')}`,
          );
        }
        const patch = options.patch ?? {};
        const keys = Object.keys(patch) as (keyof BoxPatch)[];
        db.prepare(
          `UPDATE boxes SET state = ?, updated_at = ?${keys.map((k) => `, ${PATCH_COLUMNS[k]} = ?`).join('')} WHERE id = ?`,
        ).run(to, now, ...keys.map((k) => patch[k] ?? null), id);
        // A deleted box's CA key serves nothing any more: it does not stay on the host.
        if (to === 'deleted') {
          db.prepare('UPDATE boxes SET egress_identity = NULL WHERE id = ?').run(id);
          // Their output was in the box: nothing is left to show of them.
          db.prepare('DELETE FROM box_commands WHERE box_id = ?').run(id);
        }
        logTransition.run(id, now, current.state, to, options.reason ?? null);
      })();
      return get(id)!;
    },

    /** Changes fields without a state change. */
    update(id: string, patch: BoxPatch): BoxRecord {
      const keys = Object.keys(patch) as (keyof BoxPatch)[];
      db.prepare(
        `UPDATE boxes SET updated_at = ?${keys.map((k) => `, ${PATCH_COLUMNS[k]} = ?`).join('')} WHERE id = ?`,
      ).run(clock(), ...keys.map((k) => patch[k] ?? null), id);
      return get(id)!;
    },

    /** Boxes, newest first; `deleted` ones only when asked for. */
    list(options: { ownerKeyId?: string; includeDeleted?: boolean } = {}): BoxRecord[] {
      const where: string[] = [];
      const args: string[] = [];
      if (options.ownerKeyId !== undefined) {
        where.push('owner_key_id = ?');
        args.push(options.ownerKeyId);
      }
      if (!options.includeDeleted) where.push("state != 'deleted'");
      return db
        .prepare<string[], BoxRow>(
          `SELECT * FROM boxes ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, rowid DESC`,
        )
        .all(...args)
        .map(toRecord);
    },

    live(): BoxRecord[] {
      return db
        .prepare<[], BoxRow>(`SELECT * FROM boxes WHERE ${LIVE_SQL} ORDER BY created_at, rowid`)
        .all()
        .map(toRecord);
    },

    /** The live box of a user id in the namespace of one key (user ids are per key). */
    findLiveByUser(ownerKeyId: string, userId: string): BoxRecord | undefined {
      const row = db
        .prepare<[string, string], BoxRow>(
          `SELECT * FROM boxes WHERE owner_key_id = ? AND user_id = ? AND ${LIVE_SQL}`,
        )
        .get(ownerKeyId, userId);
      return row && toRecord(row);
    },

    /** The live boxes of a user id under every key, oldest first (an admin's lookup). */
    findLiveByUserOfAnyKey(userId: string): BoxRecord[] {
      return db
        .prepare<[string], BoxRow>(
          `SELECT * FROM boxes WHERE user_id = ? AND ${LIVE_SQL} ORDER BY created_at, rowid`,
        )
        .all(userId)
        .map(toRecord);
    },

    countByState(): Record<BoxState, number> {
      const counts: Record<BoxState, number> = {
        creating: 0,
        running: 0,
        paused: 0,
        hibernated: 0,
        stopped: 0,
        deleted: 0,
        failed: 0,
      };
      for (const r of db.prepare('SELECT state, COUNT(*) AS n FROM boxes GROUP BY state').all() as {
        state: BoxState;
        n: number;
      }[])
        counts[r.state] = r.n;
      return counts;
    },

    /** Boxes deleted before `before` (Unix ms), the longest deleted first, at most `limit`. */
    deletedBefore(before: number, limit: number): string[] {
      return db
        .prepare<[number, number], { id: string }>(
          `SELECT id FROM boxes WHERE state = 'deleted' AND updated_at < ? ORDER BY updated_at LIMIT ?`,
        )
        .all(before, limit)
        .map((r) => r.id);
    },

    /** Removes a deleted box's record and state history; true when there was one. */
    forget(id: string): boolean {
      return db.transaction(() => {
        if (getRow.get(id)?.state !== 'deleted') return false;
        db.prepare('DELETE FROM box_transitions WHERE box_id = ?').run(id);
        return db.prepare('DELETE FROM boxes WHERE id = ?').run(id).changes > 0;
      })();
    },

    transitions(id: string): Transition[] {
      return (
        db
          .prepare(
            'SELECT box_id, at, from_state, to_state, reason FROM box_transitions WHERE box_id = ? ORDER BY seq',
          )
          .all(id) as {
          box_id: string;
          at: number;
          from_state: BoxState | null;
          to_state: BoxState;
          reason: string | null;
        }[]
      ).map((r) => ({ boxId: r.box_id, at: r.at, from: r.from_state, to: r.to_state, reason: r.reason }));
    },
  };
}

export type BoxStore = ReturnType<typeof createBoxStore>;
