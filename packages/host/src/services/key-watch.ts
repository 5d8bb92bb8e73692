/** How often what a key keeps going (open streams, queued and running tasks) re-checks it. */
export const KEY_CHECK_INTERVAL_MS = 5000;

export interface KeyWatchDeps {
  /** Whether the key still works (the key store's indexed read). */
  isActive: (keyId: string) => boolean;
  /** Default KEY_CHECK_INTERVAL_MS; tests make it short. */
  intervalMs?: number;
  log: { warn(obj: object, msg: string): void };
}

interface Watcher {
  onRevoked: () => void;
}

/**
 * Tells the holders of a key when it has been revoked. Revocation may come from another process
 * (`agentbox keys revoke` writes the same database), so it is polled: one shared sweep reads each
 * watched key once per interval. The sweep's timer exists only while something is watched.
 */
export function createKeyWatch(deps: KeyWatchDeps) {
  const intervalMs = deps.intervalMs ?? KEY_CHECK_INTERVAL_MS;
  const watched = new Map<string, Set<Watcher>>();
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  function stopIfIdle(): void {
    if (watched.size > 0 || timer === undefined) return;
    clearInterval(timer);
    timer = undefined;
  }

  function sweep(): void {
    for (const [keyId, watchers] of [...watched]) {
      let active: boolean;
      try {
        active = deps.isActive(keyId);
      } catch (err) {
        deps.log.warn({ keyId, err: err instanceof Error ? err.message : String(err) }, 'key check failed');
        continue;
      }
      if (active) continue;
      watched.delete(keyId);
      for (const watcher of watchers) {
        try {
          watcher.onRevoked();
        } catch (err) {
          deps.log.warn(
            { keyId, err: err instanceof Error ? err.message : String(err) },
            'a revoked key’s holder failed to stop',
          );
        }
      }
    }
    stopIfIdle();
  }

  return {
    isActive: (keyId: string): boolean => deps.isActive(keyId),

    /**
     * Calls `onRevoked` once, within about one interval of the key's revocation. Returns the
     * unsubscribe, which is safe to call more than once and after `onRevoked` ran.
     */
    watch(keyId: string, onRevoked: () => void): () => void {
      if (closed) return () => undefined;
      const watcher: Watcher = { onRevoked };
      let watchers = watched.get(keyId);
      if (!watchers) watched.set(keyId, (watchers = new Set()));
      watchers.add(watcher);
      if (timer === undefined) {
        timer = setInterval(sweep, intervalMs);
        // An open stream keeps the process alive, not its key check.
        timer.unref();
      }
      return () => {
        const current = watched.get(keyId);
        if (!current?.delete(watcher)) return;
        if (current.size === 0) watched.delete(keyId);
        stopIfIdle();
      };
    },

    /** Keys watched right now (tests). */
    watchedKeys: (): number => watched.size,

    /** Forgets every watcher and stops the sweep (daemon shutdown, before the database closes). */
    close(): void {
      closed = true;
      watched.clear();
      stopIfIdle();
    },
  };
}

export type KeyWatch = ReturnType<typeof createKeyWatch>;
