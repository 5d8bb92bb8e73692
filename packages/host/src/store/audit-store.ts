import type { EgressAuditRecord } from '@agentbox/protocol';
import type { Db } from './db.js';

/** Egress decisions, append-only, per box. Records never hold secret values (the gateway's rule). */
export function createAuditStore(db: Db) {
  const insert = db.prepare('INSERT INTO egress_audit (box_id, ts, record) VALUES (?, ?, ?)');
  const byBox = db.prepare<[string, number, number], { seq: number; record: string }>(
    'SELECT seq, record FROM egress_audit WHERE box_id = ? AND seq > ? ORDER BY seq LIMIT ?',
  );
  return {
    /** The gateway's AuditSink. */
    record(record: EgressAuditRecord): void {
      insert.run(record.boxId, record.ts, JSON.stringify(record));
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
