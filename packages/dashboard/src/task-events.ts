import type { TaskEvent, TaskState } from '@agentbox/protocol';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, type ApiClient } from './api-client.js';

const TERMINAL: ReadonlySet<TaskState> = new Set(['succeeded', 'failed', 'cancelled', 'timed_out']);
export const isTerminal = (state: TaskState) => TERMINAL.has(state);

export type StreamState = 'connecting' | 'live' | 'reconnecting' | 'ended';

/**
 * A task's events, live: follows `GET /v1/tasks/:id/events` (NDJSON over fetch, key in the
 * header) and, when the connection drops before the task ended, reconnects after the last seq it
 * has, so nothing is lost or shown twice. `onEnd` fires when the stream ended with the task.
 */
export function useTaskEvents(api: ApiClient, taskId: string, onEnd: () => void) {
  const [events, setEvents] = useState<TaskEvent[]>([]);
  const [stream, setStream] = useState<StreamState>('connecting');
  const [error, setError] = useState<unknown>(undefined);

  useEffect(() => {
    const abort = new AbortController();
    let last = 0;
    let pending: TaskEvent[] = [];
    let flushQueued = false;
    const flush = () => {
      flushQueued = false;
      const batch = pending;
      pending = [];
      if (batch.length > 0) setEvents((prev) => [...prev, ...batch]);
    };
    const onEvent = (event: TaskEvent) => {
      if (event.seq <= last) return;
      last = event.seq;
      pending.push(event);
      if (!flushQueued) {
        flushQueued = true;
        queueMicrotask(flush);
      }
    };
    setEvents([]);
    setStream('connecting');
    setError(undefined);

    void (async () => {
      for (let attempt = 0; !abort.signal.aborted; attempt++) {
        try {
          setStream(attempt === 0 ? 'connecting' : 'reconnecting');
          await api.followEvents(taskId, {
            after: last,
            signal: abort.signal,
            onEvent,
            onOpen: () => setStream('live'),
          });
          setError(undefined);
          // The daemon ends the stream when the task ended; check, else it was cut: go on.
          if (isTerminal((await api.getTask(taskId)).state)) {
            setStream('ended');
            onEnd();
            return;
          }
        } catch (err) {
          if (abort.signal.aborted) return;
          setError(err);
          if (err instanceof ApiError && (err.status === 404 || err.status === 401)) {
            setStream('ended');
            return;
          }
        }
        setStream('reconnecting');
        await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 500 * 2 ** Math.min(attempt, 4))));
      }
    })();
    return () => abort.abort();
    // `onEnd` is left out on purpose: a new callback must not restart the stream.
  }, [api, taskId]);

  return { events, stream, error };
}
