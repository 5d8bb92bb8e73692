/**
 * Appends to `log` the records of `page` newer than its last one. Two loads that overlap (a
 * refresh during the poll) both fetch after the same seq: the second must not add them again.
 */
export function appendNewer<T extends { seq: number }>(log: T[], page: readonly T[]): void {
  for (const record of page) if (record.seq > (log.at(-1)?.seq ?? 0)) log.push(record);
}

/**
 * Orders overlapping loads of one view: each `start()` numbers a load, and `accept(n)` says whether
 * its result may be shown, which it may not once a later-started load's result was. A poll that
 * began before "Load more" must not put back the shorter list when it ends after it.
 */
export function latestWins() {
  let started = 0;
  let shown = 0;
  return {
    start: (): number => ++started,
    accept(load: number): boolean {
      if (load < shown) return false;
      shown = load;
      return true;
    },
  };
}
