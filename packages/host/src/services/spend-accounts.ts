import type { SpendAccount } from '@agentbox/egress';
import type { KeyStore } from '../store/key-store.js';

/** How often a key's new spend is written to the store (and so shown in `keys list`). */
export const SPEND_FLUSH_MS = 1_000;

/**
 * Each API key's account of model spend, the host's count (see the gateway's spend ledger): what
 * all of the key's boxes have spent, and the key's cap (`grants.maxSpendUsd`, read at every use so
 * an operator's change applies to running boxes). Charges land in memory at once, where the cap
 * is held, and in the key store at most every SPEND_FLUSH_MS, so a stream of small charges is a
 * write a second, not one per chunk.
 */
export function createSpendAccounts(deps: {
  keys: Pick<KeyStore, 'addSpend' | 'spendOf'>;
  /** The key a box belongs to. */
  ownerOf: (boxId: string) => string | undefined;
  flushMs?: number;
}) {
  const kept = new Map<string, { spentUsd: number; pendingUsd: number }>();
  let timer: NodeJS.Timeout | undefined;

  function flush(): void {
    clearTimeout(timer);
    timer = undefined;
    for (const [keyId, state] of kept) {
      if (state.pendingUsd <= 0) continue;
      deps.keys.addSpend(keyId, state.pendingUsd);
      state.pendingUsd = 0;
    }
  }

  function ofKey(keyId: string): SpendAccount | undefined {
    const stored = deps.keys.spendOf(keyId);
    if (stored === undefined) return undefined;
    let state = kept.get(keyId);
    if (state === undefined) {
      state = { spentUsd: stored.spentUsd, pendingUsd: 0 };
      kept.set(keyId, state);
    }
    // The store's count may have been started again (`keys reset-spend`, maybe another process).
    state.spentUsd = stored.spentUsd + state.pendingUsd;
    const live = state;
    return {
      limitUsd: stored.maxSpendUsd ?? Infinity,
      since: stored.spentSince,
      get spentUsd() {
        return live.spentUsd;
      },
      charge(usd: number) {
        if (!(usd > 0)) return;
        live.spentUsd += usd;
        live.pendingUsd += usd;
        if (timer === undefined) {
          timer = setTimeout(flush, deps.flushMs ?? SPEND_FLUSH_MS);
          timer.unref();
        }
      },
    };
  }

  return {
    /** The account a box's model calls are charged to: its key's. */
    forBox(boxId: string): SpendAccount | undefined {
      const owner = deps.ownerOf(boxId);
      return owner === undefined ? undefined : ofKey(owner);
    },
    ofKey,
    /** Charges not yet written belong to the count a reset ends: they are dropped with it. */
    reset(keyId: string): void {
      const state = kept.get(keyId);
      if (state) state.spentUsd = state.pendingUsd = 0;
    },
    /** Writes what is pending now (on shutdown). */
    flush,
  };
}

export type SpendAccounts = ReturnType<typeof createSpendAccounts>;
