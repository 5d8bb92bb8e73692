import {
  AgentboxError,
  type AgentKind,
  type TaskCursor,
  type TaskEvent,
  type TaskLibraryItem,
  type TaskResult,
  type TaskSpec,
  type TaskState,
} from '@agentbox/protocol';
import { chunkRemover, type Db } from './db.js';

/** Where a task runs: a named box, the user's persistent box, or a box made for it and deleted after. */
export type TaskTarget = 'box' | 'user' | 'ephemeral';

/** A task as stored. Times are Unix milliseconds. `spec` never holds credential values. */
export interface TaskRecord {
  id: string;
  ownerKeyId: string;
  target: TaskTarget;
  boxId: string | null;
  userId: string | null;
  state: TaskState;
  agent: AgentKind;
  spec: TaskSpec;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  result: TaskResult | null;
  error: { code: string; message: string } | null;
  library: TaskLibraryItem[];
  sessionId: string | null;
  /** Seed API: continue the Claude session the box last ran (kept here so a re-queued task does). */
  continueLastSession: boolean;
}

interface TaskRow {
  id: string;
  owner_key_id: string;
  target: TaskTarget;
  box_id: string | null;
  user_id: string | null;
  state: TaskState;
  agent: AgentKind;
  spec: string;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  output_offset: number | null;
  metered_usd: number | null;
  result: string | null;
  error_code: string | null;
  error_message: string | null;
  library: string;
  session_id: string | null;
  continue_last_session: number;
}

interface EventRow {
  seq: number;
  ts: string;
  type: TaskEvent['type'];
  content: string;
  raw: string | null;
  truncated: number;
}

function toRecord(row: TaskRow): TaskRecord {
  return {
    id: row.id,
    ownerKeyId: row.owner_key_id,
    target: row.target,
    boxId: row.box_id,
    userId: row.user_id,
    state: row.state,
    agent: row.agent,
    spec: JSON.parse(row.spec) as TaskSpec,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    result: row.result === null ? null : (JSON.parse(row.result) as TaskResult),
    error:
      row.error_code === null ? null : { code: row.error_code, message: row.error_message ?? row.error_code },
    library: JSON.parse(row.library) as TaskLibraryItem[],
    sessionId: row.session_id,
    continueLastSession: row.continue_last_session === 1,
  };
}

function toEvent(row: EventRow): TaskEvent {
  return {
    seq: row.seq,
    ts: row.ts,
    type: row.type,
    content: JSON.parse(row.content) as unknown,
    ...(row.raw === null ? {} : { raw: row.raw }),
    ...(row.truncated ? { truncated: true as const } : {}),
  };
}

export interface TaskFinish {
  state: Extract<TaskState, 'succeeded' | 'failed' | 'cancelled' | 'timed_out'>;
  result?: TaskResult | null;
  error?: { code: string; message: string } | null;
  sessionId?: string | null;
}

/** About how many bytes of specs (JSON text, counted in UTF-16 units) one page of tasks holds. */
export const LIST_PAGE_BYTES = 16 * 1024 * 1024;

/** Tasks and their append-only event logs. */
export function createTaskStore(db: Db, clock: () => number) {
  const insertTask = db.prepare(
    `INSERT INTO tasks (id, owner_key_id, target, box_id, user_id, state, agent, spec, created_at,
       continue_last_session)
     VALUES (@id, @ownerKeyId, @target, @boxId, @userId, 'queued', @agent, @spec, @createdAt,
       @continueLastSession)`,
  );
  const byId = db.prepare<[string], TaskRow>('SELECT * FROM tasks WHERE id = ?');
  const updateOutputOffset = db.prepare('UPDATE tasks SET output_offset = ? WHERE id = ?');
  const updateMeteredUsd = db.prepare('UPDATE tasks SET metered_usd = ? WHERE id = ?');
  const insertEvent = db.prepare(
    'INSERT INTO task_events (task_id, seq, ts, type, content, raw, truncated) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );
  const eventsAfter = db.prepare<[string, number, number], EventRow>(
    `SELECT seq, ts, type, content, raw, truncated FROM task_events WHERE task_id = ? AND seq > ?
     ORDER BY seq LIMIT ?`,
  );
  const totals = db.prepare<[string], { events: number; bytes: number }>(
    `SELECT COUNT(*) AS events,
       COALESCE(SUM(length(CAST(content AS BLOB)) + COALESCE(length(CAST(raw AS BLOB)), 0)), 0) AS bytes
     FROM task_events WHERE task_id = ?`,
  );
  const lastSeq = db.prepare<[string], { seq: number | null }>(
    'SELECT MAX(seq) AS seq FROM task_events WHERE task_id = ?',
  );

  function appendEventNow(id: string, event: Omit<TaskEvent, 'seq' | 'ts'>): TaskEvent {
    const seq = (lastSeq.get(id)?.seq ?? 0) + 1;
    const ts = new Date(clock()).toISOString();
    insertEvent.run(
      id,
      seq,
      ts,
      event.type,
      JSON.stringify(event.content ?? null),
      event.raw ?? null,
      event.truncated ? 1 : 0,
    );
    return {
      seq,
      ts,
      type: event.type,
      content: event.content,
      ...(event.raw === undefined ? {} : { raw: event.raw }),
      ...(event.truncated ? { truncated: true as const } : {}),
    };
  }
  const appendEventAlone = db.transaction(appendEventNow);
  const removeEventRows = chunkRemover(db, 'task_events', 'task_id');
  const endDeletion = db.prepare<[string]>('DELETE FROM task_deletions WHERE task_id = ?');

  const stateById = db.prepare<[string], { state: TaskState }>('SELECT state FROM tasks WHERE id = ?');

  function get(id: string): TaskRecord | undefined {
    const row = byId.get(id);
    return row && toRecord(row);
  }

  function mustGet(id: string): TaskRecord {
    const task = get(id);
    if (!task) throw new AgentboxError('task_not_found', `no task ${id}`);
    return task;
  }

  return {
    get,

    /** A task's state alone (what a follower checks at each wake, without reading its spec). */
    stateOf(id: string): TaskState | undefined {
      return stateById.get(id)?.state;
    },

    /**
     * Removes a task; true when there was one. Its events (up to 256 MiB of them) are removed
     * after, a chunk at a time (`removeEventsChunk`): the task is listed in `deletedTaskIds` until
     * they are all gone, so a daemon that stops meanwhile finishes the job on its next start.
     */
    remove(id: string): boolean {
      return db.transaction(() => {
        const removed = db.prepare('DELETE FROM tasks WHERE id = ?').run(id).changes > 0;
        if (removed) db.prepare('INSERT OR IGNORE INTO task_deletions (task_id) VALUES (?)').run(id);
        return removed;
      })();
    },

    /** Deleted tasks whose events are not all removed yet. */
    deletedTaskIds(): string[] {
      return db
        .prepare<[], { task_id: string }>('SELECT task_id FROM task_deletions')
        .all()
        .map((row) => row.task_id);
    },

    /**
     * Removes up to `limit` of a deleted task's events, oldest first; true while more are left.
     * The last chunk takes the task off `deletedTaskIds`.
     */
    removeEventsChunk(id: string, limit: number): boolean {
      return db.transaction(() => {
        const more = removeEventRows(id, limit);
        if (!more) endDeletion.run(id);
        return more;
      })();
    },

    /** Ended tasks that finished before `before` (Unix ms), oldest first, at most `limit`. */
    endedBefore(before: number, limit: number): string[] {
      return db
        .prepare<[number, number], { id: string }>(
          `SELECT id FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?
           AND state NOT IN ('queued', 'running') ORDER BY finished_at LIMIT ?`,
        )
        .all(before, limit)
        .map((r) => r.id);
    },

    insert(task: {
      id: string;
      ownerKeyId: string;
      target: TaskTarget;
      boxId: string | null;
      userId: string | null;
      agent: AgentKind;
      spec: TaskSpec;
      continueLastSession?: boolean;
    }): TaskRecord {
      insertTask.run({
        ...task,
        spec: JSON.stringify(task.spec),
        createdAt: clock(),
        continueLastSession: task.continueLastSession ? 1 : 0,
      });
      return mustGet(task.id);
    },

    /** queued → running, with the box it runs on and the library items it resolved. */
    start(id: string, patch: { boxId: string; library: TaskLibraryItem[] }): TaskRecord {
      const changed = db
        .prepare(
          `UPDATE tasks SET state = 'running', started_at = ?, box_id = ?, library = ?
           WHERE id = ? AND state = 'queued'`,
        )
        .run(clock(), patch.boxId, JSON.stringify(patch.library), id).changes;
      if (changed === 0) throw new AgentboxError('invalid_state', `task ${id} is not queued`);
      return mustGet(id);
    },

    /**
     * How many bytes of the agent's journaled stdout the task's stored events cover (set in the
     * transaction that stores them); undefined when its output is not journaled in the box.
     */
    outputOffset(id: string): number | undefined {
      return byId.get(id)?.output_offset ?? undefined;
    },

    setOutputOffset(id: string, offset: number): void {
      updateOutputOffset.run(offset, id);
    },

    /** What the task's model calls cost so far by the host's count, while it runs (see task-service). */
    meteredUsd(id: string): number | undefined {
      return byId.get(id)?.metered_usd ?? undefined;
    },

    setMeteredUsd(id: string, usd: number): void {
      updateMeteredUsd.run(usd, id);
    },

    /** Records the box a task's target resolved to before it starts (user and ephemeral boxes). */
    setBox(id: string, boxId: string | null): void {
      db.prepare('UPDATE tasks SET box_id = ? WHERE id = ?').run(boxId, id);
    },

    /** Ends a queued or running task; a task already ended keeps its first ending. */
    finish(id: string, end: TaskFinish): TaskRecord {
      db.prepare(
        `UPDATE tasks SET state = ?, finished_at = ?, result = ?, error_code = ?, error_message = ?,
           session_id = COALESCE(?, session_id)
         WHERE id = ? AND state IN ('queued', 'running')`,
      ).run(
        end.state,
        clock(),
        end.result ? JSON.stringify(end.result) : null,
        end.error?.code ?? null,
        end.error?.message ?? null,
        end.sessionId ?? null,
        id,
      );
      return mustGet(id);
    },

    /** Appends an event with the next sequence number. */
    appendEvent(id: string, event: Omit<TaskEvent, 'seq' | 'ts'>): TaskEvent {
      // Within a batch the batch's transaction holds the sequence read and the insert together.
      return db.inTransaction ? appendEventNow(id, event) : appendEventAlone(id, event);
    },

    /**
     * Runs `fn` in one transaction: a commit per event cost ~60 µs (most of a short line's cost), so
     * a task's output is stored a slice of lines at a time. All or nothing: a failure rolls back
     * every event `fn` appended.
     */
    batch<T>(fn: () => T): T {
      return db.transaction(fn)();
    },

    /**
     * The events after `after`, in order: at most `limit` of them, and no more once they add up to
     * `maxBytes` (of content JSON and raw; the one that reaches it is the last). Rows are read one
     * by one, so a page never holds more than that plus one event. `more`: the page was cut short,
     * so more events may follow it.
     */
    eventPage(
      id: string,
      options: { after?: number; limit?: number; maxBytes?: number } = {},
    ): { events: TaskEvent[]; more: boolean } {
      const limit = options.limit ?? 1000;
      const maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
      const events: TaskEvent[] = [];
      let bytes = 0;
      for (const row of eventsAfter.iterate(id, options.after ?? 0, limit)) {
        events.push(toEvent(row));
        bytes += Buffer.byteLength(row.content) + (row.raw === null ? 0 : Buffer.byteLength(row.raw));
        // Leaving the loop ends the statement; the rows after this one are never read.
        if (bytes >= maxBytes) return { events, more: true };
      }
      return { events, more: events.length === limit };
    },

    /** How many events a task has stored, and their bytes (content JSON and raw, as eventPage counts). */
    eventTotals(id: string): { events: number; bytes: number } {
      return totals.get(id)!;
    },

    eventCount(id: string): number {
      return lastSeq.get(id)?.seq ?? 0;
    },

    /**
     * A page of tasks, newest first, ties by id (descending): a total order on values a task never
     * changes, so paging with `after` (the last task of the previous page) skips and repeats
     * nothing, whatever is created meanwhile. `next` is null when nothing follows this page.
     */
    list(filter: { ownerKeyId?: string; boxId?: string; limit?: number; after?: TaskCursor } = {}): {
      tasks: TaskRecord[];
      next: TaskCursor | null;
    } {
      const limit = filter.limit ?? 100;
      const where: string[] = [];
      const args: (string | number)[] = [];
      if (filter.ownerKeyId !== undefined) {
        where.push('owner_key_id = ?');
        args.push(filter.ownerKeyId);
      }
      if (filter.boxId !== undefined) {
        where.push('box_id = ?');
        args.push(filter.boxId);
      }
      if (filter.after !== undefined) {
        where.push('(created_at < ? OR (created_at = ? AND id < ?))');
        args.push(filter.after.createdAt, filter.after.createdAt, filter.after.id);
      }
      const sql = `SELECT * FROM tasks ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
        ORDER BY created_at DESC, id DESC LIMIT ?`;
      // One row more than asked says whether another page follows. A page also ends after about
      // LIST_PAGE_BYTES of specs (a task's files ride in its spec, up to the body limit each), so a
      // list of big tasks is walked a few at a time instead of read whole into one answer.
      const tasks: TaskRecord[] = [];
      let bytes = 0;
      let more = false;
      for (const row of db.prepare<(string | number)[], TaskRow>(sql).iterate(...args, limit + 1)) {
        if (tasks.length === limit || (tasks.length > 0 && bytes + row.spec.length > LIST_PAGE_BYTES)) {
          more = true;
          break;
        }
        bytes += row.spec.length;
        tasks.push(toRecord(row));
      }
      const last = tasks.at(-1);
      return { tasks, next: more && last ? { createdAt: last.createdAt, id: last.id } : null };
    },

    /** Tasks in a state, oldest first (the queue's FIFO order is creation order). */
    inState(state: TaskState): TaskRecord[] {
      return db
        .prepare<[string], TaskRow>('SELECT * FROM tasks WHERE state = ? ORDER BY created_at, rowid')
        .all(state)
        .map(toRecord);
    },

    /** Tasks of one key that are queued or running. */
    countOpen(ownerKeyId: string): number {
      return db
        .prepare<[string], { n: number }>(
          "SELECT COUNT(*) AS n FROM tasks WHERE state IN ('queued', 'running') AND owner_key_id = ?",
        )
        .get(ownerKeyId)!.n;
    },

    countRunning(): number {
      return db.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM tasks WHERE state = 'running'").get()!
        .n;
    },

    /** The Claude session the box's last finished claude task left, for the seed API's resume. */
    lastSession(boxId: string): string | undefined {
      return (
        db
          .prepare<[string], { session_id: string }>(
            `SELECT session_id FROM tasks WHERE box_id = ? AND agent = 'claude' AND session_id IS NOT NULL
             ORDER BY finished_at DESC, rowid DESC LIMIT 1`,
          )
          .get(boxId)?.session_id ?? undefined
      );
    },
  };
}

export type TaskStore = ReturnType<typeof createTaskStore>;
