import { setImmediate as nextTurn } from 'node:timers/promises';

/**
 * Rows removed per transaction before the event loop turns. A task's events may be 256 MiB and a
 * box's audit 100 000 records: removed in one statement, one such task held the daemon's thread
 * ~1 s, and a retention sweep of many of them for minutes. At ~10 µs a row, a chunk is ~10 ms.
 */
export const DELETE_CHUNK_ROWS = 1000;

/**
 * Calls `removeChunk(limit)` until it removes fewer than `limit` rows, the event loop turning
 * between calls; the rows removed in all.
 */
export async function removeInChunks(
  removeChunk: (limit: number) => number,
  limit = DELETE_CHUNK_ROWS,
): Promise<number> {
  let total = 0;
  for (;;) {
    const removed = removeChunk(limit);
    total += removed;
    if (removed < limit) return total;
    await nextTurn();
  }
}
