/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Errors that mean the connection, not the request, failed: the stream is resumed. */
const RETRIED = new Set(['daemon_unreachable', 'shutting_down']);

/** Whether `err` is a lost connection (resume the stream) rather than the daemon's answer. */
export function isRetried(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && RETRIED.has(code);
}

export interface ReconnectOpts {
  /**
   * Failed connections in a row before giving up (default 5). One that brought events, or stayed up
   * `healthyMs`, is not a failure (so a long quiet stream survives a proxy's idle timeouts).
   */
  attempts?: number;
  /** How long a connection must have lasted to count as healthy when it drops; default 5000 ms. */
  healthyMs?: number;
  /** Wait before a reconnect, times the failures so far (at most 4×); default 250 ms. */
  delayMs?: number;
}

/** The reconnect rule of a resumed stream (task events, a command's output), one per follow. */
export class Reconnects {
  private failures = 0;
  private readonly attempts: number;
  private readonly delayMs: number;
  private readonly healthyMs: number;

  constructor(opts: ReconnectOpts = {}) {
    this.attempts = opts.attempts ?? 5;
    this.delayMs = opts.delayMs ?? 250;
    this.healthyMs = opts.healthyMs ?? 5000;
  }

  /**
   * A connection ended (`failure`: how, if it failed): throws `failure` once too many failed in a
   * row, else waits before the next. One that `progressed` or lasted resets the count.
   */
  async next(
    connection: { startedAt: number; progressed: boolean; failure: unknown },
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (connection.progressed || Date.now() - connection.startedAt >= this.healthyMs) this.failures = 0;
    if (connection.failure !== undefined && this.failures >= this.attempts) throw connection.failure;
    this.failures++;
    await sleep(this.delayMs * Math.min(this.failures, 4), signal);
  }
}
