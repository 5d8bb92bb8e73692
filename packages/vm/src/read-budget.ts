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

/**
 * A millisecond of the host's own work on what a guest sent (its task output parsed and stored)
 * counts as this many frames: the per-guest budget is ~20% of a core at ~4 µs a frame.
 */
export const GUEST_FRAMES_PER_HOST_MS = 250;

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

/**
 * What reading all guests may cost, per second, in the same frames: the guests of a process share
 * its one event loop. At the per-guest budget a flood costs the daemon ~20% of a core, so eight
 * hostile boxes at their own budgets would take all of it; together they get this much.
 */
export const HOST_GUEST_FRAMES_PER_SECOND = 100_000;

/** A guest whose reading paused this recently still counts as pressing on the host's budget. */
export const PRESSING_WINDOW_MS = 1000;

/**
 * The rate one guest is read at: its own budget, or an equal share of the host's among the guests
 * pressing on their budgets, itself counted. A guest sending little never presses, so a flood
 * narrows the flooders' shares, not what a quiet box needs.
 */
export function guestReadRate(ownRate: number, hostRate: number, otherPressing: number): number {
  return Math.min(ownRate, hostRate / (otherPressing + 1));
}

/**
 * The host's read budget, shared by the connections of one process: it knows which guests pressed
 * on their budgets in the last PRESSING_WINDOW_MS (a pause counts until it ends and that window
 * after), and gives each guest its rate from that.
 */
export class HostReadShare {
  private readonly pressingUntil = new Map<object, number>();

  constructor(readonly framesPerSecond = HOST_GUEST_FRAMES_PER_SECOND) {}

  /** The rate `guest` may be read at `now`, its own budget being `ownRate`. */
  rateFor(guest: object, ownRate: number, now: number): number {
    let others = 0;
    for (const [g, until] of this.pressingUntil) {
      if (until <= now) this.pressingUntil.delete(g);
      else if (g !== guest) others++;
    }
    return guestReadRate(ownRate, this.framesPerSecond, others);
  }

  /** `guest` overspent at `now`, and its reading pauses for `pauseMs`. */
  pressed(guest: object, now: number, pauseMs: number): void {
    this.pressingUntil.set(guest, now + pauseMs + PRESSING_WINDOW_MS);
  }

  /** `guest`'s connection is gone. */
  forget(guest: object): void {
    this.pressingUntil.delete(guest);
  }
}

/** The share of this process: its guests' connections use it unless told otherwise. */
export const processReadShare = new HostReadShare();
