import type {
  CreateTaskRequestSchema,
  Task,
  TaskDeleteResponse,
  TaskEvent,
  TaskState,
} from '@agentbox/protocol';
import type { z } from 'zod';
import { errorFromObject } from './errors.js';
import { ndjsonLines, type HttpTransport, type RequestOpts } from './http.js';
import { Reconnects, isRetried, type ReconnectOpts } from './retry.js';

export type { ReconnectOpts } from './retry.js';

/** A task as sent: the TaskSpec (defaults may be left out) plus where it runs (`boxId` | `userId` | neither). */
export type TaskRequest = z.input<typeof CreateTaskRequestSchema>;
/** A task for a given box: the spec alone. */
export type BoxTaskRequest = Omit<TaskRequest, 'boxId' | 'userId'>;

export interface FollowOpts {
  /** Only events with a larger seq (default 0: all of them). */
  after?: number;
  /** Stop following; the iteration rejects with the signal's reason. */
  signal?: AbortSignal;
  reconnect?: ReconnectOpts;
}

export interface TaskListOpts extends RequestOpts {
  boxId?: string;
  /** Tasks per page, 1–1000 (default 100). */
  limit?: number;
  /** A page's `nextCursor`: the tasks after that page (same `boxId`). */
  cursor?: string;
}

/** One page of a task list; `nextCursor` (null on the last page) asks for the next. */
export interface TaskPage {
  tasks: Task[];
  nextCursor: string | null;
}

/**
 * The states a task ends in (protocol's TERMINAL_TASK_STATES, which a test compares with this;
 * not imported, so that a browser bundle of the SDK needs none of protocol's zod schemas).
 */
export const ENDED_TASK_STATES: ReadonlySet<TaskState> = new Set([
  'succeeded',
  'failed',
  'cancelled',
  'timed_out',
]);

/**
 * A queued task: iterate it for its events (each iteration starts at the first event and follows
 * the task live to its end, resuming with `?after=<last seq>` when the connection drops, so no
 * event is lost or repeated), or await `result()` for the finished task.
 */
export class TaskRun implements AsyncIterable<TaskEvent> {
  /** The task as it was queued. */
  readonly task: Task;
  private lastSeen = 0;

  constructor(
    private readonly tasks: Tasks,
    task: Task,
  ) {
    this.task = task;
  }

  get id(): string {
    return this.task.id;
  }

  /** The task's events after `opts.after`, live until it ends. */
  async *events(opts: FollowOpts = {}): AsyncGenerator<TaskEvent, void, undefined> {
    for await (const event of this.tasks.events(this.id, opts)) {
      this.lastSeen = Math.max(this.lastSeen, event.seq);
      yield event;
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<TaskEvent> {
    return this.events();
  }

  /** Waits for the task to end and returns it (state, result, error); it does not throw for a failed task. */
  async result(opts: Omit<FollowOpts, 'after'> = {}): Promise<Task> {
    // Drained: the iteration ends when the task does.
    for await (const event of this.events({ ...opts, after: this.lastSeen })) void event;
    return this.tasks.get(this.id, opts.signal ? { signal: opts.signal } : {});
  }

  /** Cancels the task (queued or running); returns it. */
  cancel(opts: RequestOpts = {}): Promise<Task> {
    return this.tasks.cancel(this.id, opts);
  }
}

/** `client.tasks`: agent tasks in a fresh box, a user's box, or a given box. */
export class Tasks {
  constructor(private readonly http: HttpTransport) {}

  /** Queues a task and returns its record (see `run` to follow it). */
  create(request: TaskRequest, opts: RequestOpts = {}): Promise<Task> {
    return this.http.json<Task>({ method: 'POST', path: '/v1/tasks', json: request, ...opts });
  }

  /** Queues a task; the returned run is iterable for its events. Without boxId/userId: a fresh box, deleted at the end. */
  async run(request: TaskRequest, opts: RequestOpts = {}): Promise<TaskRun> {
    return new TaskRun(this, await this.create(request, opts));
  }

  /** A run of an existing task, to follow it or wait for it. */
  async attach(id: string, opts: RequestOpts = {}): Promise<TaskRun> {
    return new TaskRun(this, await this.get(id, opts));
  }

  get(id: string, opts: RequestOpts = {}): Promise<Task> {
    return this.http.json<Task>({ method: 'GET', path: `/v1/tasks/${encodeURIComponent(id)}`, ...opts });
  }

  /** One page of the tasks this key may see (newest first), from `cursor` or the newest. */
  listPage(opts: TaskListOpts = {}): Promise<TaskPage> {
    const { boxId, limit, cursor, ...rest } = opts;
    return this.http.json<TaskPage>({
      method: 'GET',
      path: '/v1/tasks',
      query: { boxId, limit, cursor },
      ...rest,
    });
  }

  /** Tasks this key may see, newest first: one page (`limit`, default 100); `listAll` goes on. */
  async list(opts: TaskListOpts = {}): Promise<Task[]> {
    return (await this.listPage(opts)).tasks;
  }

  /**
   * Every task this key may see (from `cursor`, if given), newest first, a page of `limit` fetched
   * as the iteration gets there: none is skipped or repeated, even as new tasks are queued.
   */
  async *listAll(opts: TaskListOpts = {}): AsyncGenerator<Task, void, undefined> {
    let cursor = opts.cursor;
    for (;;) {
      const page = await this.listPage({ ...opts, ...(cursor === undefined ? {} : { cursor }) });
      yield* page.tasks;
      if (page.nextCursor === null) return;
      cursor = page.nextCursor;
    }
  }

  cancel(id: string, opts: RequestOpts = {}): Promise<Task> {
    return this.http.json<Task>({
      method: 'POST',
      path: `/v1/tasks/${encodeURIComponent(id)}/cancel`,
      ...opts,
    });
  }

  /** Deletes an ended task and its events (`InvalidStateError` while it is queued or running). */
  async delete(id: string, opts: RequestOpts = {}): Promise<void> {
    await this.http.json<TaskDeleteResponse>({
      method: 'DELETE',
      path: `/v1/tasks/${encodeURIComponent(id)}`,
      ...opts,
    });
  }

  /**
   * The events of a task after `opts.after`, as they come, until the task ends. A dropped
   * connection (or a proxy's 502/503/504 without an error body) is resumed from the last event
   * received, so nothing is lost or repeated; errors the daemon answers (unknown task, bad key, a
   * key revoked while the stream was open) end the iteration at once.
   */
  async *events(id: string, opts: FollowOpts = {}): AsyncGenerator<TaskEvent, void, undefined> {
    const reconnects = new Reconnects(opts.reconnect);
    const signal = opts.signal ? { signal: opts.signal } : {};
    let last = opts.after ?? 0;
    for (;;) {
      const startedAt = Date.now();
      let progressed = false;
      let failure: unknown;
      try {
        const res = await this.http.request({
          method: 'GET',
          path: `/v1/tasks/${encodeURIComponent(id)}/events`,
          query: { after: last },
          headers: { accept: 'application/x-ndjson' },
          // A proxy's 502/503/504 while the daemon restarts is retried like a lost connection.
          gatewayUnreachable: true,
          ...signal,
        });
        for await (const line of ndjsonLines(res.body, this.http.url, opts.signal)) {
          // No event but the daemon's last word on a stream it ended (the key was revoked).
          const ended = line as { seq?: unknown; error?: unknown };
          if (typeof ended.seq !== 'number' && ended.error !== undefined) {
            throw errorFromObject(ended.error, { message: 'the daemon ended the task event stream' });
          }
          const event = line as TaskEvent;
          if (event.seq <= last) continue;
          last = event.seq;
          progressed = true;
          yield event;
        }
        // The stream ends when the task does; a connection cut cleanly ends it early.
        const task = await this.http.json<Task>({
          method: 'GET',
          path: `/v1/tasks/${encodeURIComponent(id)}`,
          gatewayUnreachable: true,
          ...signal,
        });
        if (ENDED_TASK_STATES.has(task.state) && task.eventCount <= last) return;
      } catch (err) {
        if (!isRetried(err)) throw err;
        failure = err;
      }
      await reconnects.next({ startedAt, progressed, failure }, opts.signal);
    }
  }
}
