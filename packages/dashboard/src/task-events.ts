import type { TaskEvent } from '@agentbox/protocol';
import { useEffect, useState } from 'preact/hooks';
import type { ApiClient } from './api-client.js';
import { followTask, type StreamState } from './follow-task.js';

/**
 * A task's events, live (see `followTask`); renders once per received chunk, not per event.
 * `onEnd` fires when the stream ended with the task.
 */
export function useTaskEvents(api: ApiClient, taskId: string, onEnd: () => void) {
  const [events, setEvents] = useState<TaskEvent[]>([]);
  const [stream, setStream] = useState<StreamState>('connecting');
  const [error, setError] = useState<unknown>(undefined);

  useEffect(() => {
    const abort = new AbortController();
    let pending: TaskEvent[] = [];
    const flush = () => {
      const batch = pending;
      pending = [];
      if (batch.length > 0) setEvents((prev) => [...prev, ...batch]);
    };
    setEvents([]);
    setError(undefined);
    void followTask(api, taskId, {
      signal: abort.signal,
      onEvent: (event) => {
        if (pending.length === 0) queueMicrotask(flush);
        pending.push(event);
      },
      onState: (state) => {
        setStream(state);
        if (state === 'ended' && !abort.signal.aborted) onEnd();
      },
      onError: setError,
    });
    return () => abort.abort();
    // `onEnd` is left out on purpose: a new callback must not restart the stream.
  }, [api, taskId]);

  return { events, stream, error };
}
