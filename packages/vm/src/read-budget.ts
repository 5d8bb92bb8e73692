/**
 * What reading one guest may cost the host's event loop, per second, counted in frames (burst:
 * one second's worth). Every frame costs the daemon's one thread about half a microsecond to
 * decode and route, even one that carries nothing; a guest writing tiny frames as fast as its port
 * moves them took ~95% of the daemon (every other box's requests 5–10× slower). Legitimate traffic
 * is far below: 200 MB/s in 128 KiB frames is ~1600 frames a second, a chatty exec a few thousand.
 */
export const GUEST_FRAMES_PER_SECOND = 50_000;

/**
 * A channel the guest opens counts as this many frames: each is an egress connection the gateway
 * decides on (policy, DNS, an audit record), worth about that many frames routed. So at most
 * ~200 opens a second are read at full speed.
 */
export const GUEST_OPEN_FRAME_COST = 250;

/**
 * A Json frame counts one frame more per this many bytes of it: the host parses each (JSON.parse
 * of 1 MiB built to be slow, small objects or dense numbers, took 28–56 ms), and a frame count
 * alone let a guest send 1 MiB ones at the port's speed. The host's own messages are small; a
 * large directory listing (~1 MiB) is read at once and delays the next ones by ~0.6 s.
 */
export const GUEST_JSON_BYTES_PER_FRAME = 32;

/**
 * Bytes the host drops while it seeks the guest's next hello (after the guest broke the protocol)
 * count as one frame per this many: searching junk built to look like frames costs ~4 ns a byte.
 * A restarted agent's stale tail is at most one frame (1 MiB), read at ~12 MB/s here.
 */
export const GUEST_SKIPPED_BYTES_PER_FRAME = 256;

/** A token bucket: `tokens` left at `at` (ms, a monotonic clock). */
export interface ReadBudget {
  tokens: number;
  at: number;
}

export const fullReadBudget = (now: number, rate = GUEST_FRAMES_PER_SECOND): ReadBudget => ({
  tokens: rate,
  at: now,
});

/**
 * Spends `cost` frames read at `now` from a bucket that refills at `rate` a second, up to `rate`.
 * `pauseMs` is how long reading must stop for the bucket to be back at zero (0: go on).
 */
export function spendReadBudget(
  budget: ReadBudget,
  cost: number,
  now: number,
  rate = GUEST_FRAMES_PER_SECOND,
): { budget: ReadBudget; pauseMs: number } {
  const refilled = Math.min(rate, budget.tokens + (Math.max(0, now - budget.at) * rate) / 1000);
  const tokens = refilled - cost;
  return {
    budget: { tokens, at: now },
    pauseMs: tokens >= 0 ? 0 : Math.ceil((-tokens * 1000) / rate),
  };
}
