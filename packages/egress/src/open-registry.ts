import type { EgressDenyCode } from '@agentbox/protocol';
import type { EgressDecision } from './decide.js';
import { redecideOpen, type OpenFacts } from './open-connections.js';
import type { CompiledPolicy } from './policy.js';

/**
 * A box's open tunnels, terminated TLS sessions and requests in flight, held so that a policy
 * update can decide each again (redecideOpen) and cut what the new policy refuses.
 */

/** A connection or request held open, to decide again when the policy changes. */
export interface OpenHold {
  /** What it was allowed as; updated when more becomes known (a GraphQL body judged). */
  facts: OpenFacts;
  /** Stops holding it (it ended). */
  release(): void;
}

interface OpenEntry {
  facts: OpenFacts;
  /** The box's connection it lives on: one cut (and one audit record) per connection. */
  readonly connection: object;
  readonly cut: () => void;
}

type Denial = EgressDecision & { action: 'deny' };

export class OpenRegistry {
  readonly #entries = new Set<OpenEntry>();
  /** Audits a refusal (value-free); `reason` is the decision's. */
  readonly #recordCut: (facts: OpenFacts, denial: Denial) => void;

  constructor(recordCut: (facts: OpenFacts, denial: Denial) => void) {
    this.#recordCut = recordCut;
  }

  /**
   * Holds a connection or request. It is decided at once too, against `policy` (the current
   * one: an update may have come while it was being set up); when refused, it is audited,
   * `refuse` answers the box, nothing is held and undefined is returned.
   */
  hold(
    policy: CompiledPolicy,
    connection: object,
    facts: OpenFacts,
    cut: () => void,
    refuse: (code: EgressDenyCode, reason: string) => void,
  ): OpenHold | undefined {
    const verdict = redecideOpen(facts, policy);
    if (verdict.action === 'deny') {
      this.#recordCut(facts, verdict);
      refuse(verdict.code, verdict.reason);
      return undefined;
    }
    const entry: OpenEntry = { facts, connection, cut };
    this.#entries.add(entry);
    return {
      get facts() {
        return entry.facts;
      },
      set facts(next: OpenFacts) {
        entry.facts = next;
      },
      release: () => this.#entries.delete(entry),
    };
  }

  /** Decides everything held again under `policy`; cuts and audits what it refuses. */
  redecideAll(policy: CompiledPolicy): void {
    const cut = new Set<object>();
    for (const open of [...this.#entries]) {
      if (cut.has(open.connection)) continue;
      const verdict = redecideOpen(open.facts, policy);
      if (verdict.action === 'allow') continue;
      cut.add(open.connection);
      this.#recordCut(open.facts, { ...verdict, reason: `closed by a policy update: ${verdict.reason}` });
      open.cut();
    }
  }

  clear(): void {
    this.#entries.clear();
  }
}
