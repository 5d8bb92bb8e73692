import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { latestWins } from './seq-log.js';

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => Promise<void>;
}

/**
 * Loads `load()` now, again every `intervalMs` (when given) and on `reload()`; keeps the last good
 * data while a reload runs or fails. `deps` restart it (e.g. another id).
 */
export function usePolled<T>(
  load: () => Promise<T>,
  intervalMs: number | undefined,
  deps: unknown[],
): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [loading, setLoading] = useState(true);
  const loadRef = useRef(load);
  loadRef.current = load;
  const generation = useRef(0);
  const order = useRef(latestWins());

  const reload = useCallback(async () => {
    const mine = generation.current;
    const load = order.current.start();
    setLoading(true);
    try {
      const value = await loadRef.current();
      if (mine !== generation.current || !order.current.accept(load)) return;
      setData(value);
      setError(undefined);
    } catch (err) {
      if (mine === generation.current && order.current.accept(load)) setError(err);
    } finally {
      if (mine === generation.current) setLoading(false);
    }
  }, []);

  useEffect(() => {
    generation.current += 1;
    setData(undefined);
    setError(undefined);
    void reload();
    if (!intervalMs) return;
    const timer = setInterval(() => void reload(), intervalMs);
    return () => clearInterval(timer);
  }, deps);

  return { data, error, loading, reload };
}

/** Re-renders every `ms` (ages tick). */
export function useTick(ms: number): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(timer);
  }, [ms]);
  return now;
}
