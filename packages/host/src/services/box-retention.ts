import type { AuditStore } from '../store/audit-store.js';
import type { BoxStore } from '../store/box-store.js';
import type { BoxLogger } from './box-service.js';
import { removeInChunks } from './chunked-delete.js';

/** Deleted boxes forgotten per sweep; the reaper's next sweep takes the rest. */
const FORGET_BATCH = 500;

/**
 * Forgets boxes deleted more than `retentionMs` ago: their record, state history and egress
 * audit. What the reaper runs when the daemon keeps deleted boxes for a while only: a key that
 * makes and deletes boxes in a loop would otherwise grow the store for good, each box with up to
 * MAX_AUDIT_RECORDS_PER_BOX egress records.
 */
export async function forgetDeletedBoxes(
  deps: {
    store: Pick<BoxStore, 'deletedBefore' | 'forget'>;
    audit: Pick<AuditStore, 'forgetChunk'>;
    log: BoxLogger;
  },
  retentionMs: number,
  now: number,
): Promise<string[]> {
  const ids = deps.store.deletedBefore(now - retentionMs, FORGET_BATCH);
  for (const id of ids) {
    // The audit first: a daemon that dies between the two finds the box again on its next sweep.
    await removeInChunks((limit) => deps.audit.forgetChunk(id, limit));
    deps.store.forget(id);
  }
  if (ids.length > 0) deps.log.info({ boxes: ids.length }, 'deleted boxes past their retention forgotten');
  return ids;
}
