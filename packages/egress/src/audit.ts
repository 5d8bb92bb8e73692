import type { EgressAuditRecord } from '@agentbox/protocol';

/**
 * Where egress decisions go. The daemon persists them (`agentbox audit <box>`,
 * `GET /v1/boxes/:id/egress`); the gateway only calls record(), synchronously and without awaiting,
 * so a slow sink never holds a connection. A sink that throws loses that record, not the connection.
 */
export interface AuditSink {
  record(record: EgressAuditRecord): void;
}

/** Keeps the most recent records in memory (tests, `agentbox bench`, a daemon without a store). */
export class MemoryAuditSink implements AuditSink {
  readonly #records: EgressAuditRecord[] = [];
  readonly #limit: number;
  readonly #waiters = new Set<{
    test: (r: EgressAuditRecord) => boolean;
    resolve: (r: EgressAuditRecord) => void;
  }>();

  constructor(options: { limit?: number } = {}) {
    this.#limit = options.limit ?? 10_000;
  }

  record(record: EgressAuditRecord): void {
    this.#records.push(record);
    if (this.#records.length > this.#limit) this.#records.splice(0, this.#records.length - this.#limit);
    for (const waiter of this.#waiters) {
      if (waiter.test(record)) {
        this.#waiters.delete(waiter);
        waiter.resolve(record);
      }
    }
  }

  /** All kept records, oldest first. */
  get records(): readonly EgressAuditRecord[] {
    return this.#records;
  }

  forBox(boxId: string): EgressAuditRecord[] {
    return this.#records.filter((r) => r.boxId === boxId);
  }

  /** Resolves with the first record (already kept or future) that passes `test`. */
  waitFor(test: (record: EgressAuditRecord) => boolean, timeoutMs = 5_000): Promise<EgressAuditRecord> {
    const existing = this.#records.find(test);
    if (existing !== undefined) return Promise.resolve(existing);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`no matching egress audit record within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        test,
        resolve: (r: EgressAuditRecord) => {
          clearTimeout(timer);
          resolve(r);
        },
      };
      this.#waiters.add(waiter);
    });
  }

  clear(): void {
    this.#records.length = 0;
  }
}

/** Discards records; the default when the caller passes no sink. */
export const NULL_AUDIT_SINK: AuditSink = Object.freeze({ record: () => undefined });
