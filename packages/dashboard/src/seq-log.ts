/**
 * Appends to `log` the records of `page` newer than its last one. Two loads that overlap (a
 * refresh during the poll) both fetch after the same seq: the second must not add them again.
 */
export function appendNewer<T extends { seq: number }>(log: T[], page: readonly T[]): void {
  for (const record of page) if (record.seq > (log.at(-1)?.seq ?? 0)) log.push(record);
}
