import type { EgressAuditRecord } from '@agentbox/protocol';
import { chunkRemover, type Db } from './db.js';

/**
 * The egress decisions kept per box, the newest. A box's code decides how many requests it makes:
 * one that retries a denied host in a loop (hostile or not) would otherwise grow the store until
 * the host's disk is full.
 */
export const MAX_AUDIT_RECORDS_PER_BOX = 100_000;
/** A box's oldest records past the cap go once per this many of its new ones. */
const PRUNE_EVERY = 1_000;

/** Egress decisions, append-only, per box. Records never hold secret values (the gateway's rule). */
export function createAuditStore(db: Db, options: { maxPerBox?: number } = {}) {
  const maxPerBox = options.maxPerBox ?? MAX_AUDIT_RECORDS_PER_BOX;
  const pruneEvery = Math.min(PRUNE_EVERY, maxPerBox);
  const insert = db.prepare('INSERT INTO egress_audit (box_id, ts, record) VALUES (?, ?, ?)');
  const byBox = db.prepare<[string, number, number], { seq: number; record: string }>(
    'SELECT seq, record FROM egress_audit WHERE box_id = ? AND seq > ? ORDER BY seq LIMIT ?',
  );
  const prune = db.prepare<[string, string, number]>(
    'DELETE FROM egress_audit WHERE box_id = ? AND seq <= ' +
      '(SELECT seq FROM egress_audit WHERE box_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)',
  );
  const removeBoxRecords = chunkRemover(db, 'egress_audit', 'box_id');
  /** Records inserted per box since its last prune (this process's count). */
  const sincePrune = new Map<string, number>();
  return {
    /** The gateway's AuditSink. */
    record(record: EgressAuditRecord): void {
      insert.run(record.boxId, record.ts, JSON.stringify(record));
      const count = (sincePrune.get(record.boxId) ?? 0) + 1;
      if (count < pruneEvery) {
        sincePrune.set(record.boxId, count);
        return;
      }
      sincePrune.delete(record.boxId);
      prune.run(record.boxId, record.boxId, maxPerBox);
    },
    /**
     * Removes up to `limit` of a box's records, oldest first (the box's own record is gone or
     * going); true while more are left. Called until none are: a box may have 100 000.
     */
    forgetChunk(boxId: string, limit: number): boolean {
      sincePrune.delete(boxId);
      return removeBoxRecords(boxId, limit);
    },
    /** A box's records oldest first, after sequence number `after` (for paging). */
    list(
      boxId: string,
      options: { after?: number; limit?: number } = {},
    ): { seq: number; record: EgressAuditRecord }[] {
      return byBox
        .all(boxId, options.after ?? 0, options.limit ?? 1000)
        .map((row) => ({ seq: row.seq, record: JSON.parse(row.record) as EgressAuditRecord }));
    },
  };
}

export type AuditStore = ReturnType<typeof createAuditStore>;
