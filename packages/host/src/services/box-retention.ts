import type { AuditStore } from '../store/audit-store.js';
import type { BoxStore } from '../store/box-store.js';
import type { BoxLogger } from './box-service.js';

/** Deleted boxes forgotten per sweep; the reaper's next sweep takes the rest. */
const FORGET_BATCH = 500;

/**
 * Forgets boxes deleted more than `retentionMs` ago: their record, state history and egress
 * audit. What the reaper runs when the daemon keeps deleted boxes for a while only: a key that
 * makes and deletes boxes in a loop would otherwise grow the store for good, each box with up to
 * MAX_AUDIT_RECORDS_PER_BOX egress records.
 */
export function forgetDeletedBoxes(
  deps: {
    store: Pick<BoxStore, 'deletedBefore' | 'forget'>;
    audit: Pick<AuditStore, 'forget'>;
    log: BoxLogger;
  },
  retentionMs: number,
  now: number,
): string[] {
  const ids = deps.store.deletedBefore(now - retentionMs, FORGET_BATCH);
  for (const id of ids) {
    // The audit first: a daemon that dies between the two finds the box again on its next sweep.
    deps.audit.forget(id);
    deps.store.forget(id);
  }
  if (ids.length > 0) deps.log.info({ boxes: ids.length }, 'deleted boxes past their retention forgotten');
  return ids;
}
