import type { TaskEvent, TaskState } from '@agentbox/protocol';
import { ApiError, type ApiClient } from './api-client.js';

const TERMINAL: ReadonlySet<TaskState> = new Set(['succeeded', 'failed', 'cancelled', 'timed_out']);
export const isTerminal = (state: TaskState) => TERMINAL.has(state);

export type StreamState = 'connecting' | 'live' | 'reconnecting' | 'ended';

export interface FollowOptions {
  signal: AbortSignal;
  /** Each event once, in seq order. */
  onEvent: (event: TaskEvent) => void;
  onState: (state: StreamState) => void;
  /** The last failure; undefined again once a connection worked. */
  onError: (error: unknown) => void;
  /** Wait before reconnect attempt `attempt` (0-based); default backoff 0.5 s … 5 s. */
  delay?: (attempt: number) => Promise<void>;
}

const backoff = (attempt: number) =>
  new Promise<void>((resolve) => setTimeout(resolve, Math.min(5000, 500 * 2 ** Math.min(attempt, 4))));

/**
 * Follows a task's events until it ended: `GET /v1/tasks/:id/events` (NDJSON over fetch), and
 * when the connection drops before the task ended, again after the last seq seen, so nothing is
 * lost or shown twice. Resolves when the task ended, the task is gone, the key is refused, or
 * `signal` aborted.
 */
export async function followTask(
  api: Pick<ApiClient, 'followEvents' | 'getTask'>,
  taskId: string,
  options: FollowOptions,
): Promise<void> {
  const { signal } = options;
  const delay = options.delay ?? backoff;
  let last = 0;
  const onEvent = (event: TaskEvent) => {
    if (event.seq <= last) return;
    last = event.seq;
    options.onEvent(event);
  };
  for (let attempt = 0; !signal.aborted; attempt++) {
    options.onState(attempt === 0 ? 'connecting' : 'reconnecting');
    try {
      await api.followEvents(taskId, { after: last, signal, onEvent, onOpen: () => options.onState('live') });
      options.onError(undefined);
      // The daemon ends the stream when the task ended; else the connection was cut: go on.
      if (isTerminal((await api.getTask(taskId)).state)) {
        options.onState('ended');
        return;
      }
    } catch (err) {
      if (signal.aborted) return;
      options.onError(err);
      if (err instanceof ApiError && (err.status === 404 || err.status === 401)) {
        options.onState('ended');
        return;
      }
    }
    options.onState('reconnecting');
    await delay(attempt);
  }
}
