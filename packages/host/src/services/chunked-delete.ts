import { setImmediate as nextTurn } from 'node:timers/promises';

/**
 * Rows removed per transaction before the event loop turns. A task's events may be 256 MiB and a
 * box's audit 100 000 records: removed in one statement, one such task held the daemon's thread
 * ~1 s, and a retention sweep of many of them for minutes. At ~10 µs a row, a chunk is ~10 ms.
 */
export const DELETE_CHUNK_ROWS = 1000;

/**
 * Calls `removeChunk(limit)` (which removes up to `limit` rows and says whether any are left)
 * until none are, the event loop turning between calls.
 */
export async function removeInChunks(
  removeChunk: (limit: number) => boolean,
  limit = DELETE_CHUNK_ROWS,
): Promise<void> {
  while (removeChunk(limit)) await nextTurn();
}
