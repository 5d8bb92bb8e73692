/**
 * Guest RAM is overcommitted: a box takes host memory as its guest uses its RAM (its page cache
 * too), and keeps it until its VM process ends. `serve --min-free-memory-mib` keeps a reserve of
 * the host's available memory: below it no box is made, and this guard hibernates idle boxes (their
 * RAM written next to their disk, their VM process ended) until the host has its reserve again.
 * Nothing is lost and nobody is interrupted: the next request wakes a hibernated box.
 */

/** How far above the reserve the guard aims, so one pass frees enough for a while. */
export const MEMORY_RELEASE_MARGIN_BYTES = 256 * 1024 ** 2;

export interface MemoryGuardedBox {
  readonly id: string;
  /** Paused, with no lease and no call in flight: hibernating it interrupts nobody. */
  readonly idle: boolean;
  /** What ending its VM process gives back (its private memory); undefined when unknown. */
  readonly privateBytes: number | undefined;
}

/**
 * One pass of the guard (pure): below the reserve, the idle boxes to hibernate, those holding the
 * most memory first, until what they hold (and what hibernations under way will free) covers the
 * shortfall and the margin. Unknown available memory, or no reserve, changes nothing.
 */
export function memoryGuardPass(input: {
  availableBytes: number | undefined;
  reserveBytes: number;
  /** What the hibernations the guard started and that have not ended yet will free. */
  pendingBytes: number;
  boxes: readonly MemoryGuardedBox[];
}): string[] {
  const { availableBytes, reserveBytes } = input;
  if (availableBytes === undefined || reserveBytes <= 0 || availableBytes >= reserveBytes) return [];
  let needed = reserveBytes + MEMORY_RELEASE_MARGIN_BYTES - availableBytes - input.pendingBytes;
  const candidates = input.boxes
    .filter(
      (box): box is MemoryGuardedBox & { privateBytes: number } => box.idle && box.privateBytes !== undefined,
    )
    .sort((a, b) => b.privateBytes - a.privateBytes);
  const chosen: string[] = [];
  for (const box of candidates) {
    if (needed <= 0) break;
    chosen.push(box.id);
    needed -= box.privateBytes;
  }
  return chosen;
}
