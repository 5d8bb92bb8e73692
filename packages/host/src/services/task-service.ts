import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import {
  AgentboxError,
  agentDefinitionIssues,
  encodeTaskCursor,
  isCredentialEnvName,
  TERMINAL_TASK_STATES,
  type AgentDefinition,
  type AgentKind,
  type EgressPresetName,
  type ExecExit,
  type Runtime,
  type TaskCursor,
  type TaskEvent,
  type TaskLibraryItem,
  type TaskResult,
  type TaskSpec,
} from '@agentbox/protocol';
import { repoFromGitUrl, type SpendBudget } from '@agentbox/egress';
import type { AgentExit, AgentRunner, ResolvedLibraryItem, TaskEventDraft } from '@agentbox/runners';
import { grantsOf, type Actor, type KeyStore } from '../store/key-store.js';
import type { TaskFinish, TaskRecord, TaskStore, TaskTarget } from '../store/task-store.js';
import type { ExecHandlers, GuestConnection } from '@agentbox/vm';
import type { BoxLease, BoxService } from './box-service.js';
import type { KeyWatch } from './key-watch.js';
import { removeInChunks } from './chunked-delete.js';
import type { LibraryService } from './library-service.js';
import { splitLines } from './lines.js';
import {
  boundResult,
  createOutputBudget,
  cutEvent,
  cutUtf8,
  DEFAULT_TASK_OUTPUT_LIMITS,
  MAX_ERROR_MESSAGE_BYTES,
  OUTPUT_LIMIT_CODE,
  outputLimitMessage,
  type TaskOutputLimits,
} from './task-output.js';
import { within } from './within.js';
import { messageOf } from './error-message.js';

export const DEFAULT_MAX_CONCURRENT_TASKS = 5;
/** The guest user the agents run as. */
export const GUEST_HOME = '/root';
/** stderr kept for an error event when an agent fails without saying why. */
const STDERR_TAIL_BYTES = 8 * 1024;
/**
 * An agent's output lines are parsed and stored this long at a time, in one transaction; then the
 * event loop turns. A chunk of output can hold tens of thousands of lines: handled at once, 100 000
 * short ones held the daemon's thread for over 5 s (every box and request waited).
 */
const OUTPUT_SLICE_MS = 10;
/**
 * Bytes of specs the queue may hold in memory, all keys together (a task's files ride in its spec,
 * up to the body limit each); past it a submit is 429 until tasks start.
 */
export const MAX_QUEUED_SPEC_BYTES = 512 * 1024 * 1024;
/** Tasks the retention sweep deletes at once (each with its events, in its own transaction). */
const PRUNE_BATCH = 500;
/** Longest a clone may take; the task's own timeout, which covers the clone, may end it sooner. */
const CLONE_TIMEOUT_MS = 10 * 60_000;
/** How often a task whose box the host (or its key) has no room for asks again. */
export const BOX_ROOM_RETRY_MS = 1_000;
/** Stored events read at once; a longer log is read page by page, never cut. */
export const EVENT_PAGE = 1000;
/** Bytes of stored events read at once (a page ends with the event that reaches it). */
export const EVENT_PAGE_BYTES = 4 * 1024 * 1024;

/** The label of a box made for one task (its id): such a box is deleted with the task. */
export const TASK_LABEL = 'agentbox.task';

/** Hosts an agent's CLI talks to: its box may reach them for the task. */
export const AGENT_PRESETS: Record<AgentKind, EgressPresetName[]> = {
  claude: ['anthropic'],
  opencode: ['anthropic'],
  codex: ['openai'],
  shell: [],
};

/** The seed runtime (image profile) of a box made for a task. */
const AGENT_RUNTIME: Record<AgentKind, Runtime> = {
  claude: 'claude-agent',
  opencode: 'claude-agent',
  codex: 'claude-agent',
  shell: 'bash',
};

export interface TaskLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface TaskServiceDeps {
  store: TaskStore;
  boxes: Pick<
    BoxService,
    | 'get'
    | 'list'
    | 'create'
    | 'createForUser'
    | 'remove'
    | 'acquire'
    | 'widenEgress'
    | 'isCredential'
    | 'openSpendBudget'
    | 'heldMs'
  >;
  library: Pick<LibraryService, 'resolveForTask'>;
  /** A task runs as its owner's key: one revoked meanwhile fails it (queued or running). */
  keys: Pick<KeyWatch, 'isActive' | 'watch'> & Pick<KeyStore, 'grantsFor'>;
  runnerFor: (kind: AgentKind) => AgentRunner;
  maxConcurrent: number;
  log: TaskLogger;
  /** Env every agent process gets under the spec's own (e.g. tuning for emulated CPUs). */
  agentEnv?: Record<string, string>;
  /** Caps on each task's stored events (default DEFAULT_TASK_OUTPUT_LIMITS). */
  outputLimits?: TaskOutputLimits;
  /** Bytes of queued specs held in memory (default MAX_QUEUED_SPEC_BYTES). */
  maxQueuedSpecBytes?: number;
}

/** The tasks an earlier daemon left queued or running (see `recover`). */
export interface LeftoverTasks {
  running: TaskRecord[];
  queued: TaskRecord[];
}

export interface SubmitOptions {
  actor: Actor;
  spec: TaskSpec;
  /** Default: a fresh box made for the task and deleted after it. */
  boxId?: string | undefined;
  userId?: string | undefined;
  /** Seed API: continue the Claude session the user's box last ran, unless `resume`/`context` say otherwise. */
  continueLastSession?: boolean;
}

type Listener = () => void;

interface Running {
  controller: AbortController;
  /** Why the run was aborted: the caller cancelled, the task ran out of time or output, its key was revoked. */
  abortReason?: AbortReason;
  /** Said in the final error instead of the reason's usual message. */
  abortMessage?: string;
  /** Settles once the run has ended and its outcome is stored. */
  ended?: Promise<void>;
  /** Waiting for room for its box: it holds no run slot meanwhile. */
  waitingForRoom?: boolean;
  /**
   * While its journaled agent runs: leaves it running in its box, for the next daemon to take up
   * (a graceful shutdown), and ends the run here without storing anything more.
   */
  detach?: () => void;
  /** Detached: the run ended here; the task stays `running` for the next daemon. */
  detached?: boolean;
  /** Its agent exited: what is left is storing the end (a shutdown lets it). */
  agentExited?: boolean;
}

/** How a detached run's wait for its agent ends. */
class RunDetached extends Error {}

/** How long a cancel waits for the run to end, so it can answer with the final state. */
const CANCEL_WAIT_MS = 10_000;

function newTaskId(): string {
  return `task-${randomBytes(6).toString('hex')}`;
}

/** A task failure that is not an API error (the agent failed, the clone failed). */
class TaskFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Refuses a task whose agent would drop part of its resolved agent definition. The spec schema
 * checks an inline one already; a `{ref}` is only known here, once the library item is read.
 */
function checkAgentDefinition(spec: TaskSpec, definition: AgentDefinition | undefined): void {
  const issue = agentDefinitionIssues(spec.agent, definition)[0];
  if (!issue) return;
  const ref = spec.agentDefinition && 'ref' in spec.agentDefinition ? spec.agentDefinition.ref : undefined;
  throw new AgentboxError(
    'invalid_request',
    ref === undefined ? issue.message : `library agent ${ref}: ${issue.message}`,
    { details: { field: ['agentDefinition', ...(ref === undefined ? issue.path : ['ref'])].join('.') } },
  );
}

const REDACTED = '[redacted]';

/** The error code of a task whose owner's key was revoked before it ended. */
export const KEY_REVOKED_CODE = 'key_revoked';

const ABORTS = {
  cancelled: { state: 'cancelled', code: 'cancelled', message: 'cancelled by request' },
  timed_out: {
    state: 'timed_out',
    code: 'timed_out',
    message: 'the task ran past its timeoutSeconds; the agent and its children were killed',
  },
  shutdown: { state: 'failed', code: 'daemon_stopped', message: 'the daemon shut down while the task ran' },
  output_limit: {
    state: 'failed',
    code: OUTPUT_LIMIT_CODE,
    message: "the agent's output passed the task's limit; the agent and its children were stopped",
  },
  key_revoked: {
    state: 'failed',
    code: KEY_REVOKED_CODE,
    message: 'the API key that submitted the task was revoked; the agent and its children were stopped',
  },
  budget_exceeded: {
    state: 'failed',
    code: 'budget_exceeded',
    message: "the task's model calls passed its maxSpendUsd; the agent and its children were stopped",
  },
} as const;
type AbortReason = keyof typeof ABORTS;

/**
 * Stops a run for `reason`. The first reason given is the one its record keeps (said with
 * `message` instead of the reason's usual words); whether this call was it.
 */
function stopRun(entry: Running, reason: AbortReason, message?: string): boolean {
  const first = entry.abortReason === undefined;
  if (first) {
    entry.abortReason = reason;
    if (message !== undefined) entry.abortMessage = message;
  }
  entry.controller.abort();
  return first;
}

const usd = (value: number): string => `$${value.toFixed(4)}`;

/** Why the host stopped a task at its budget, with the figures the host counted. */
function budgetMessage(budget: SpendBudget): string {
  switch (budget.exceeded) {
    case 'unreadable':
      return "the cost of one of the box's model calls could not be read, so the task's spend limits could not be held; the agent and its children were stopped";
    case 'account':
      return 'the API key that submitted the task reached its model spend cap (`agentbox keys update --max-spend`); the agent and its children were stopped';
    default:
      return `the task's model calls cost ${usd(budget.spentUsd)} by the host's count, past its maxSpendUsd of ${usd(budget.limitUsd)}; the agent and its children were stopped`;
  }
}

/** Said by a task whose key was revoked before it started (while queued, or across a restart). */
const REVOKED_BEFORE_START = 'the API key that submitted the task was revoked; the task was not started';

/** Directory name a clone of `url` gets in the workspace (like `git clone` picks it). */
export function cloneDirName(url: string): string {
  const last = new URL(url).pathname.replace(/\/+$/, '').split('/').pop() ?? '';
  const name = last.replace(/\.git$/i, '');
  return /^[A-Za-z0-9._-]+$/.test(name) && name !== '.' && name !== '..' ? name : 'repo';
}

/**
 * The task queue and runner loop: at most `maxConcurrent` tasks run at once per host, the rest
 * wait in FIFO order. Every event is appended to the store before it is published, so a client
 * that reconnects with `after=seq` misses nothing.
 */
export function createTaskService(deps: TaskServiceDeps) {
  const { store, log } = deps;
  const outputLimits = deps.outputLimits ?? DEFAULT_TASK_OUTPUT_LIMITS;
  const queue: string[] = [];
  const running = new Map<string, Running>();
  const listeners = new Map<string, Set<Listener>>();
  /** Specs with their credential values, for queued tasks (the store holds them redacted). */
  const pendingSpecs = new Map<string, { spec: TaskSpec; bytes: number }>();
  let pendingBytes = 0;
  const maxPendingBytes = deps.maxQueuedSpecBytes ?? MAX_QUEUED_SPEC_BYTES;
  /** Takes a queued task's spec out of memory (it starts, or leaves the queue). */
  const takePending = (id: string): TaskSpec | undefined => {
    const pending = pendingSpecs.get(id);
    if (!pending) return undefined;
    pendingSpecs.delete(id);
    pendingBytes -= pending.bytes;
    return pending.spec;
  };
  /** The unsubscribe of each queued or running task's watch on its owner's key. */
  const ownerWatches = new Map<string, () => void>();
  let maxConcurrent = deps.maxConcurrent;
  /** While a starting daemon has not yet recovered the last one's tasks, none is started. */
  let heldForRecovery = false;
  /** A graceful shutdown began (stopAll): no follow waits for more events. */
  let stopping = false;

  const visible = (actor: Actor, task: TaskRecord | undefined): task is TaskRecord =>
    task !== undefined && (actor.scope === 'admin' || task.ownerKeyId === actor.keyId);

  function get(options: { actor: Actor; id: string }): TaskRecord {
    const task = store.get(options.id);
    if (!visible(options.actor, task)) throw new AgentboxError('task_not_found', `no task ${options.id}`);
    return task;
  }

  /** Wakes the task's followers: it has new events, has ended, or is gone. */
  function notify(id: string): void {
    for (const listener of listeners.get(id) ?? []) listener();
  }

  /** Tasks whose followers hear of their new events once the batch being stored commits. */
  let batchNotices: Set<string> | undefined;

  function emit(id: string, event: TaskEventDraft): TaskEvent {
    const stored = store.appendEvent(id, event);
    if (batchNotices) batchNotices.add(id);
    else notify(id);
    return stored;
  }

  /**
   * Runs `fn`, which emits events, in one store transaction; followers hear of them only once it
   * commits, so none reads an event that a failed batch rolls back.
   */
  function emitBatch(fn: () => void): void {
    const notices = new Set<string>();
    batchNotices = notices;
    try {
      store.batch(fn);
    } finally {
      batchNotices = undefined;
    }
    for (const id of notices) notify(id);
  }

  function finish(id: string, end: TaskFinish): TaskRecord {
    unwatchOwner(id);
    const task = store.finish(id, end);
    notify(id);
    return task;
  }

  /**
   * Every stored event after `after`, read from the store a page at a time: at most EVENT_PAGE
   * events and about EVENT_PAGE_BYTES, so a reader of a big log holds a few MiB, not the log.
   */
  function* storedEvents(id: string, after: number): Generator<TaskEvent> {
    for (;;) {
      const page = store.eventPage(id, { after, limit: EVENT_PAGE, maxBytes: EVENT_PAGE_BYTES });
      yield* page.events;
      if (!page.more || page.events.length === 0) return;
      after = page.events.at(-1)!.seq;
    }
  }

  function position(id: string): number | null {
    const i = queue.indexOf(id);
    return i < 0 ? null : i + 1;
  }

  /** Puts a task at the end of the queue, watched from now until it ends: see ownerRevoked. */
  function enqueue(task: TaskRecord): void {
    watchOwner(task);
    if (!queue.includes(task.id)) queue.push(task.id);
  }

  function watchOwner(task: TaskRecord): void {
    if (!ownerWatches.has(task.id))
      ownerWatches.set(
        task.id,
        deps.keys.watch(task.ownerKeyId, () => ownerRevoked(task.id)),
      );
  }

  function unwatchOwner(id: string): void {
    ownerWatches.get(id)?.();
    ownerWatches.delete(id);
  }

  /** A queued task whose key was revoked fails without starting; a running one is stopped. */
  function ownerRevoked(id: string): void {
    ownerWatches.delete(id);
    if (dequeue(id)) {
      endWithError(id, KEY_REVOKED_CODE, REVOKED_BEFORE_START);
      listeners.get(id)?.clear();
      log.info({ taskId: id }, 'queued task failed: its key was revoked');
      return;
    }
    const entry = running.get(id);
    if (!entry) return;
    stopRun(entry, 'key_revoked');
    log.info({ taskId: id }, 'stopping a task: its key was revoked');
  }

  /** Ends a task with an error event and the same error on it (failed, unless `end` says otherwise). */
  function endWithError(
    id: string,
    code: string,
    message: string,
    end: Pick<TaskFinish, 'state' | 'result'> = { state: 'failed' },
  ): void {
    emit(id, { type: 'error', content: { code, message } });
    finish(id, { ...end, error: { code, message } });
  }

  /** Takes a queued task out of the queue (its spec with it); false when it was not queued. */
  function dequeue(id: string): boolean {
    const i = queue.indexOf(id);
    if (i < 0) return false;
    queue.splice(i, 1);
    takePending(id);
    return true;
  }

  /**
   * The spec as stored and shown: credential-like env values redacted, and the gateway's own
   * credentials (which only ephemeral boxes take) whatever their name. The run gets the real spec.
   */
  function redact(spec: TaskSpec): TaskSpec {
    if (!spec.envVars) return spec;
    const envVars = Object.fromEntries(
      Object.entries(spec.envVars).map(([k, v]) => [
        k,
        isCredentialEnvName(k) || deps.boxes.isCredential(k) ? REDACTED : v,
      ]),
    );
    return { ...spec, envVars };
  }

  /**
   * The spec a runner builds the agent's command from. A credential a task brought (its fresh box
   * holds it as a gateway secret) stays out of the agent's env: the box's env has its placeholder,
   * which the gateway swaps on the wire. In the command's env the real value would override it.
   */
  function withoutCredentials(spec: TaskSpec): TaskSpec {
    if (!spec.envVars) return spec;
    const envVars = Object.fromEntries(
      Object.entries(spec.envVars).filter(([k]) => !deps.boxes.isCredential(k)),
    );
    return { ...spec, envVars };
  }

  function submit(options: SubmitOptions): TaskRecord {
    const { actor, spec } = options;
    const target: TaskTarget = options.boxId ? 'box' : options.userId ? 'user' : 'ephemeral';
    const credentials = Object.keys(spec.envVars ?? {}).filter((k) => deps.boxes.isCredential(k));
    if (credentials.length > 0 && target !== 'ephemeral') {
      throw new AgentboxError(
        'invalid_request',
        `envVars ${credentials.join(', ')} are credentials: they reach a box only when it is created ` +
          '(pass them to a task without boxId/userId, or as host secrets), never as plain env',
        { details: { field: 'envVars' } },
      );
    }
    // A named box must exist and be the caller's, and library refs must resolve, before the task
    // waits in the queue (they are resolved again when it starts: the library may change meanwhile).
    // The task runs as its owner's key (user scope): an admin naming another key's box is told now,
    // not when the task starts.
    if (options.boxId) deps.boxes.get({ actor: { keyId: actor.keyId, scope: 'user' }, id: options.boxId });
    const { maxTasks } = grantsOf(actor);
    if (maxTasks !== null) {
      const open = store.countOpen(actor.keyId);
      if (open >= maxTasks) {
        throw new AgentboxError(
          'capacity_exhausted',
          `API key ${actor.keyId} already has ${open} of at most ${maxTasks} tasks queued or running; retry once one ends`,
          { details: { limit: maxTasks, scope: 'key' } },
        );
      }
    }
    checkAgentDefinition(spec, deps.library.resolveForTask(spec).agentDefinition);
    const specBytes = JSON.stringify(spec).length;
    if (pendingBytes + specBytes > maxPendingBytes) {
      throw new AgentboxError(
        'capacity_exhausted',
        "the host's task queue holds as much as it may (its tasks' files); retry once some have started",
      );
    }
    const task = store.insert({
      id: newTaskId(),
      ownerKeyId: actor.keyId,
      target,
      boxId: options.boxId ?? null,
      userId: options.userId ?? null,
      agent: spec.agent,
      spec: redact(spec),
      continueLastSession: options.continueLastSession ?? false,
    });
    pendingSpecs.set(task.id, { spec, bytes: specBytes });
    pendingBytes += specBytes;
    enqueue(task);
    emit(task.id, { type: 'status', content: { state: 'queued', position: queue.length } });
    log.info({ taskId: task.id, agent: spec.agent, target }, 'task queued');
    pump();
    return store.get(task.id)!;
  }

  /** Runs that hold a run slot: every one but those waiting for room for their box. */
  function active(): number {
    let n = 0;
    for (const entry of running.values()) if (!entry.waitingForRoom) n++;
    return n;
  }

  function pump(): void {
    while (!heldForRecovery && active() < maxConcurrent && queue.length > 0) launch(queue.shift()!);
  }

  /** Runs a task (or takes up a run a daemon before this one left) in a run slot. */
  function launch(id: string, resume?: { outputOffset: number }): void {
    const entry: Running = { controller: new AbortController() };
    running.set(id, entry);
    entry.ended = run(id, entry, resume)
      .catch((err: unknown) => log.warn({ taskId: id, err: messageOf(err) }, 'task runner failed'))
      .finally(() => {
        running.delete(id);
        unwatchOwner(id);
        // A detached run's followers end at what is stored (the task goes on in the next daemon).
        if (entry.detached) notify(id);
        listeners.get(id)?.clear();
        pump();
      });
  }

  async function resolveBox(task: TaskRecord, actor: Actor, spec: TaskSpec): Promise<string> {
    switch (task.target) {
      case 'box':
        return task.boxId!;
      case 'user': {
        const { box } = await deps.boxes.createForUser({
          actor,
          userId: task.userId!,
          runtime: 'claude-agent',
        });
        // Another call may be booting the user's box right now: the lease taken next waits for it.
        return box.id;
      }
      case 'ephemeral': {
        const box = await deps.boxes.create({
          actor,
          runtime: AGENT_RUNTIME[spec.agent],
          env: Object.fromEntries(
            Object.entries(spec.envVars ?? {}).filter(([k]) => deps.boxes.isCredential(k)),
          ),
          labels: { [TASK_LABEL]: task.id },
          egressPolicy: { presets: AGENT_PRESETS[spec.agent] },
        });
        return box.id;
      }
    }
  }

  /**
   * The task's box, once there is room for it. No room (the host's box limit, disk or memory
   * reserve, or the key's own limits) passes as boxes are deleted, tasks end and idle boxes are
   * hibernated: the task waits, saying so once, as long as its timeout lets it (or a cancel).
   * Meanwhile it gives up its run slot, so queued tasks whose boxes exist run instead of waiting
   * behind it; it asks again once a slot is free.
   */
  async function boxWhenRoom(
    id: string,
    entry: Running,
    make: () => Promise<string>,
    signal: AbortSignal,
  ): Promise<string> {
    let told = false;
    for (;;) {
      try {
        return await make();
      } catch (err) {
        if (!(err instanceof AgentboxError && err.code === 'capacity_exhausted') || signal.aborted) throw err;
        if (!told) {
          emit(id, { type: 'status', content: { state: 'waiting_for_box', message: err.message } });
          log.info({ taskId: id, err: err.message }, 'task waiting for room for its box');
          told = true;
        }
        entry.waitingForRoom = true;
        pump();
        do {
          await sleep(BOX_ROOM_RETRY_MS, undefined, { signal }).catch(() => undefined);
          if (signal.aborted) throw err;
        } while (active() >= maxConcurrent);
        entry.waitingForRoom = false;
      }
    }
  }

  /** What the box must reach for this task: the agent's API and the repository. */
  function egressFor(spec: TaskSpec): { presets: EgressPresetName[]; repos: string[]; domains: string[] } {
    const presets = [...AGENT_PRESETS[spec.agent]];
    const repos: string[] = [];
    const domains: string[] = [];
    if (spec.gitRepoUrl) {
      const repo = repoFromGitUrl(spec.gitRepoUrl);
      if (repo) {
        presets.push('github');
        repos.push(repo);
      } else {
        domains.push(new URL(spec.gitRepoUrl).hostname.toLowerCase());
      }
    }
    return { presets, repos, domains };
  }

  /** How a run's agent is started (or taken up again) and whether its output is journaled. */
  interface AgentStart {
    start: (handlers: Pick<ExecHandlers, 'onStdout' | 'onStderr' | 'signal'>) => Promise<ExecExit>;
    journaled: boolean;
  }

  /**
   * Runs a task: its box, its files, its agent, its events, its end. With `resume`, a run that an
   * earlier daemon started and left (it died, or was killed): its agent ran on in the box with its
   * output journaled there, and this run takes it up (see recover).
   */
  async function run(id: string, entry: Running, resume?: { outputOffset: number }): Promise<void> {
    const record = store.get(id)!;
    const spec = takePending(id) ?? record.spec;
    // The task acts as its owner's key as it stands now: its own boxes only, its grants.
    const actor: Actor = {
      keyId: record.ownerKeyId,
      scope: 'user',
      grants: deps.keys.grantsFor(record.ownerKeyId),
    };
    const signal = entry.controller.signal;
    let boxId: string | undefined;
    /** The box's disk-hold time when the task took it, and the time the timeout was moved by since. */
    let heldAtStart: number | undefined;
    let heldGranted = 0;
    // Time the host held the box paused for want of disk space is not the task's to spend (its
    // agent did not run, as the in-guest timeout also sees): the deadline moves by it.
    const expire = (): void => {
      const held =
        boxId === undefined || heldAtStart === undefined
          ? 0
          : deps.boxes.heldMs(boxId) - heldAtStart - heldGranted;
      if (held <= 0) {
        stopRun(entry, 'timed_out');
        return;
      }
      heldGranted += held;
      timer = setTimeout(expire, held);
    };
    // A run taken up after a restart has what is left of its time.
    const ranMs = resume && record.startedAt !== null ? Date.now() - record.startedAt : 0;
    let timer = setTimeout(expire, Math.max(0, spec.timeoutSeconds * 1000 - ranMs));
    let lease: BoxLease | undefined;
    let budget: SpendBudget | undefined;
    /**
     * The agent ran with its output journaled in the box: the journal goes once the run ended (and
     * the agent with it, if it still runs: a run that failed or was cancelled before its exit).
     */
    let journaled = resume !== undefined;
    try {
      // Revoked since the last sweep: not even its fresh box is made.
      if (!deps.keys.isActive(record.ownerKeyId)) {
        entry.abortReason ??= 'key_revoked';
        entry.abortMessage ??= REVOKED_BEFORE_START;
        return endAborted(id, entry);
      }
      boxId = resume
        ? record.boxId!
        : await boxWhenRoom(id, entry, () => resolveBox(record, actor, spec), signal);
      heldAtStart = deps.boxes.heldMs(boxId);
      if (!resume) store.setBox(id, boxId);
      // The lease wakes a paused or hibernated box and keeps it from idling while the agent runs.
      lease = await deps.boxes.acquire({ actor, id: boxId });
      if (signal.aborted) return endAborted(id, entry);
      const agent = resume
        ? await reattach(id, boxId, actor, spec, lease.guest)
        : await prepare(id, record, spec, actor, boxId, lease, signal);
      if (agent) journaled = agent.journaled;
      // Cancelled while its files were written: the agent is not started at all.
      if (!agent || signal.aborted) return endAborted(id, entry);
      const { guest } = lease;

      const parser = deps.runnerFor(spec.agent).parser();
      const output = createOutputBudget(outputLimits, store.eventTotals(id));
      /** Output up to here (a resumed run's) was stored before: parsed again, not stored again. */
      const storedUpTo = resume?.outputOffset ?? 0;
      /**
       * Stores an agent event, cut to size, while the task's output is under its caps. The first
       * that is not stops the agent (like a timeout) and drops everything it prints after.
       */
      let lastKept: TaskEventDraft['type'] | undefined;
      const keep = (draft: TaskEventDraft) => {
        if (output.exceeded) return;
        const { event, bytes } = cutEvent(draft);
        if (output.admit(bytes)) {
          emit(id, event);
          lastKept = event.type;
          return;
        }
        stopForOutput();
      };
      /** The first cap passed stops the agent (like a timeout); everything it prints after is dropped. */
      function stopForOutput() {
        if (stopRun(entry, 'output_limit', outputLimitMessage(outputLimits, output.exceeded!)))
          log.warn({ taskId: id, ...output.used, limit: output.exceeded }, 'task output limit reached');
      }
      const pendingLines: { text: string; end: number }[] = [];
      const lines = splitLines((text, end) => pendingLines.push({ text, end }));
      /**
       * Parses and stores the lines received, a slice of OUTPUT_SLICE_MS at a time with the event
       * loop turning between. The time it took counts against the guest's read budget, as frames
       * do: a box whose output costs the daemon more than its share is read more slowly. A
       * journaled run's offset is stored with the events of its lines, in the same transaction.
       */
      const handleLines = async () => {
        let next = 0;
        while (next < pendingLines.length && !output.exceeded && !entry.detached) {
          const started = performance.now();
          emitBatch(() => {
            let end = 0;
            do {
              const line = pendingLines[next++]!;
              const events = parser.line(line.text);
              if (line.end > storedUpTo) for (const event of events) keep(event);
              else if (events.length > 0) lastKept = events.at(-1)!.type;
              end = line.end;
            } while (
              next < pendingLines.length &&
              !output.exceeded &&
              performance.now() - started < OUTPUT_SLICE_MS
            );
            if (journaled && end > storedUpTo) store.setOutputOffset(id, end);
          });
          const pauseMs = guest.chargeHostWork(performance.now() - started);
          if (pauseMs > 0) await sleep(pauseMs);
          else if (next < pendingLines.length) await nextTurn();
        }
        pendingLines.length = 0;
      };
      let stderrTail = '';
      let exit: ExecExit;
      // The agent's own flag holds maxSpendUsd only as far as the agent is honest; the host's
      // count (priced from the API's answers) stops it whatever runs in the box. The count is
      // kept as it grows: a daemon that takes the task up goes on from it.
      const spentBefore = resume ? store.meteredUsd(id) : undefined;
      budget = deps.boxes.openSpendBudget(boxId, {
        ...(spec.maxSpendUsd !== undefined ? { limitUsd: spec.maxSpendUsd } : {}),
        ...(spentBefore !== undefined ? { spentUsd: spentBefore } : {}),
        onCharge: (counted) => store.setMeteredUsd(id, counted.spentUsd),
        onExceeded: (passed) => {
          if (stopRun(entry, 'budget_exceeded', budgetMessage(passed)))
            log.warn(
              { taskId: id, spentUsd: passed.spentUsd, limitUsd: passed.limitUsd },
              'task budget passed',
            );
        },
      });
      const agentRun = agent.start({
        onStdout: async (chunk) => {
          // Detached: what is left is read again from the journal by the next daemon.
          if (output.exceeded || entry.detached) return;
          if (!output.read(chunk.length)) return stopForOutput();
          lines.push(chunk);
          await handleLines();
        },
        onStderr: (chunk) => {
          stderrTail = (stderrTail + chunk.toString('utf8')).slice(-STDERR_TAIL_BYTES);
        },
        signal,
      });
      if (agent.journaled) {
        agentRun.catch(() => undefined);
        const detached = new Promise<never>((_, reject) => {
          entry.detach = () => reject(new RunDetached());
        });
        exit = await Promise.race([agentRun, detached]).finally(() => (entry.detach = undefined));
      } else exit = await agentRun;
      entry.agentExited = true;
      lines.end();
      await handleLines();
      if (exit.timedOut) entry.abortReason ??= 'timed_out';
      const agentExit: AgentExit = {
        exitCode: exit.exitCode,
        signal: exit.signal,
        timedOut: entry.abortReason === 'timed_out',
        stderrTail,
      };
      for (const event of parser.end(agentExit)) {
        // Stopped by the host (a cancel, the timeout, a limit, a shutdown): the reason is the
        // task's one error, not also the agent's death ("killed by SIGKILL") that it caused.
        if (entry.abortReason && event.type === 'error') continue;
        keep(event);
      }
      const outcome = parser.outcome();
      const result: TaskResult = boundResult({
        sessionId: outcome.sessionId,
        numTurns: outcome.numTurns,
        costUsd: outcome.costUsd,
        ...(budget ? { meteredCostUsd: budget.spentUsd } : {}),
        usage: outcome.usage,
        text: outcome.text,
        exitCode: exit.exitCode,
      });
      if (entry.abortReason) return endAborted(id, entry, result);
      const ok = outcome.ok && exit.exitCode === 0;
      const error = ok
        ? null
        : outcome.error
          ? { code: outcome.error.code, message: cutUtf8(outcome.error.message, MAX_ERROR_MESSAGE_BYTES) }
          : {
              code: 'agent_failed',
              message: `the agent exited with ${exit.signal ?? `code ${exit.exitCode}`}`,
            };
      // A failure is the stream's last word, as it is the record's: after a completion (a result
      // line, then a non-zero exit) a reader of the events alone would take it for a success.
      if (error && lastKept !== 'error') emit(id, { type: 'error', content: error });
      finish(id, { state: ok ? 'succeeded' : 'failed', result, sessionId: result.sessionId, error });
      log.info({ taskId: id, ok, boxId }, 'task finished');
    } catch (err) {
      if (entry.detached) return;
      if (entry.abortReason) return endAborted(id, entry);
      // Ours to explain (a guest or task failure) or not (a bug, a full disk): the latter's detail
      // goes to the log, not into a record every reader of the task sees.
      const known = err instanceof AgentboxError || err instanceof TaskFailure;
      if (known) endWithError(id, err.code, messageOf(err));
      else endWithError(id, 'internal', `the daemon failed while running this task (task ${id} in its log)`);
      log.warn({ taskId: id, err: messageOf(err) }, 'task failed');
    } finally {
      clearTimeout(timer);
      budget?.close();
      // Its end is stored: the box may drop the journal (and end an agent a failed call left running).
      if (journaled && !entry.detached)
        await lease?.guest
          .forgetExec(id)
          .catch((err: unknown) =>
            log.warn({ taskId: id, boxId, err: messageOf(err) }, 'could not remove the agent journal'),
          );
      lease?.release();
      if (record.target === 'ephemeral' && boxId && !entry.detached) {
        await deps.boxes
          .remove({ actor, id: boxId })
          .catch((err: unknown) =>
            log.warn({ taskId: id, boxId, err: messageOf(err) }, 'could not delete the task box'),
          );
      }
    }
  }

  /**
   * Sets the box up for a task's agent (egress, files, repository, the agent's own files) and says
   * how to start it; undefined when the task was cancelled meanwhile.
   */
  async function prepare(
    id: string,
    record: TaskRecord,
    spec: TaskSpec,
    actor: Actor,
    boxId: string,
    lease: BoxLease,
    signal: AbortSignal,
  ): Promise<AgentStart | undefined> {
    const { items, agentDefinition } = deps.library.resolveForTask(spec);
    // The library item may have changed since the submit checked it.
    checkAgentDefinition(spec, agentDefinition);
    store.start(id, { boxId, library: items.map(summarize) });
    emit(id, { type: 'status', content: { state: 'running', boxId } });
    await deps.boxes.widenEgress({ actor, id: boxId, ...egressFor(spec) });

    const { guest, workspace } = lease;
    for (const [name, content] of Object.entries(spec.files ?? {})) {
      await guest.writeFile(path.posix.join(workspace, name), Buffer.from(content), {
        makeParents: true,
        signal,
      });
    }
    let cwd = workspace;
    if (spec.gitRepoUrl) cwd = await clone(id, guest, spec.gitRepoUrl, workspace, signal);
    if (signal.aborted) return undefined;

    const runner = deps.runnerFor(spec.agent);
    const resumeSessionId =
      spec.resume ??
      (record.continueLastSession && spec.context === undefined ? store.lastSession(boxId) : undefined);
    const ctx = {
      cwd,
      home: GUEST_HOME,
      ...(agentDefinition ? { agentDefinition } : {}),
      ...(resumeSessionId ? { resumeSessionId } : {}),
    };
    const command = runner.command(withoutCredentials(spec), ctx);
    for (const file of [...runner.materialize(items, ctx), ...command.files]) {
      await guest.writeFile(file.path, Buffer.from(file.content), {
        makeParents: true,
        ...(file.mode !== undefined ? { mode: file.mode } : {}),
        signal,
      });
    }
    if (resumeSessionId)
      emit(id, { type: 'status', content: { state: 'resuming', sessionId: resumeSessionId } });
    // An agent that keeps journals lets a restarted daemon take the run up; the offset stored
    // says so (0: none of its output is stored yet).
    const journaled = guest.keepsJournals;
    if (journaled) store.setOutputOffset(id, 0);
    return {
      journaled,
      start: (handlers) =>
        guest.exec(
          {
            argv: command.argv,
            env: { ...deps.agentEnv, ...command.env },
            cwd: command.cwd,
            timeoutMs: spec.timeoutSeconds * 1000,
            ...(journaled ? { journal: id } : {}),
          },
          { ...handlers, ...(command.stdin !== undefined ? { stdin: Buffer.from(command.stdin) } : {}) },
        ),
    };
  }

  /**
   * Takes up a run an earlier daemon left: the box's egress for the task again (this daemon's
   * gateway starts from the box's policy), then the agent's journal from its start, so the parser
   * sees every line again (its outcome is built from them all).
   */
  async function reattach(
    id: string,
    boxId: string,
    actor: Actor,
    spec: TaskSpec,
    guest: GuestConnection,
  ): Promise<AgentStart> {
    await deps.boxes.widenEgress({ actor, id: boxId, ...egressFor(spec) });
    emit(id, {
      type: 'status',
      content: { state: 'reattached', boxId, message: 'the daemon restarted; the agent ran on in its box' },
    });
    return {
      journaled: true,
      start: (handlers) =>
        guest
          .attachExec({ journal: id, stdoutOffset: 0, stderrOffset: 0 }, handlers)
          .catch((err: unknown) => {
            if (err instanceof AgentboxError && err.code === 'process_not_found')
              throw new TaskFailure(
                'daemon_restarted',
                `the daemon restarted while the task ran, and its agent could not be taken up: ${err.message}`,
              );
            throw err;
          }),
    };
  }

  function endAborted(id: string, entry: Running, result: TaskResult | null = null): void {
    const reason = entry.abortReason ?? 'cancelled';
    const { state, code } = ABORTS[reason];
    endWithError(id, code, entry.abortMessage ?? ABORTS[reason].message, { state, result });
  }

  /** Clones the task's repository into the workspace (a box that has it already keeps its copy). */
  async function clone(
    id: string,
    guest: GuestConnection,
    url: string,
    workspace: string,
    signal: AbortSignal,
  ): Promise<string> {
    const dir = path.posix.join(workspace, cloneDirName(url));
    emit(id, { type: 'status', content: { state: 'cloning', url, dir } });
    let stderr = '';
    const exit = await guest.exec(
      {
        argv: [
          'sh',
          '-c',
          // A box that has the repository keeps its copy; one whose directory of that name holds
          // another repository (same name, other owner) is refused, not worked on by mistake.
          'if [ -d "$2/.git" ]; then ' +
            'want=${1%/}; want=${want%.git}; have=$(git -C "$2" remote get-url origin 2>/dev/null); ' +
            'have=${have%/}; have=${have%.git}; [ "$have" = "$want" ] && exit 0; ' +
            'echo "$2 already holds another repository" >&2; exit 3; fi; ' +
            'exec git clone --quiet -- "$1" "$2"',
          'clone',
          url,
          dir,
        ],
        cwd: workspace,
        timeoutMs: CLONE_TIMEOUT_MS,
        env: { GIT_TERMINAL_PROMPT: '0' },
      },
      {
        onStderr: (chunk) => {
          stderr = (stderr + chunk.toString('utf8')).slice(-STDERR_TAIL_BYTES);
        },
        signal,
      },
    );
    if (exit.exitCode !== 0 && !signal.aborted) {
      throw new TaskFailure(
        'clone_failed',
        `git clone ${url} failed: ${stderr.trim() || `exit ${exit.exitCode}`}`,
      );
    }
    return dir;
  }

  function summarize(item: ResolvedLibraryItem): TaskLibraryItem {
    return { kind: item.kind, namespace: item.namespace, name: item.name, sha256: item.sha256 };
  }

  /**
   * Cancels a queued task at once, a running one by stopping its agent: the answer waits (a
   * bounded time) for the run to end, so it says `cancelled` rather than `running`.
   */
  async function cancel(options: { actor: Actor; id: string }): Promise<TaskRecord> {
    const task = get(options);
    if (TERMINAL_TASK_STATES.has(task.state)) {
      throw new AgentboxError('invalid_state', `task ${task.id} is already ${task.state}`, {
        details: { state: task.state },
      });
    }
    if (dequeue(task.id)) {
      endWithError(task.id, 'cancelled', 'cancelled while queued', { state: 'cancelled' });
      listeners.get(task.id)?.clear();
      return store.get(task.id)!;
    }
    const entry = running.get(task.id);
    if (entry) {
      stopRun(entry, 'cancelled');
      if (entry.ended) await within(entry.ended, CANCEL_WAIT_MS);
    }
    return store.get(task.id)!;
  }

  /**
   * Deletes an ended task, then its events a chunk at a time; a queued or running one must be
   * cancelled first. It is gone for readers at once.
   */
  async function remove(options: { actor: Actor; id: string }): Promise<{ id: string; deleted: true }> {
    const task = get(options);
    if (!TERMINAL_TASK_STATES.has(task.state)) {
      throw new AgentboxError('invalid_state', `task ${task.id} is ${task.state}: cancel it first`, {
        details: { state: task.state },
      });
    }
    store.remove(task.id);
    // Followers still reading it end (follow sees it gone).
    notify(task.id);
    await removeEventsOf(task.id);
    log.info({ taskId: task.id }, 'task deleted');
    return { id: task.id, deleted: true };
  }

  /** A removed task's events, a chunk at a time with the event loop turning between. */
  function removeEventsOf(id: string): Promise<void> {
    return removeInChunks((limit) => store.removeEventsChunk(id, limit));
  }

  /** Removes the events of tasks deleted before (by a daemon that stopped before it was done). */
  async function removeDeletedEvents(): Promise<void> {
    for (const id of store.deletedTaskIds()) await removeEventsOf(id);
  }

  /**
   * Deletes ended tasks (and their events) that finished more than `retentionMs` ago, a batch at
   * a time; what the reaper runs when the daemon keeps tasks for a while only.
   */
  async function prune(retentionMs: number, now = Date.now()): Promise<string[]> {
    const ids = store.endedBefore(now - retentionMs, PRUNE_BATCH);
    for (const id of ids) {
      store.remove(id);
      await removeEventsOf(id);
    }
    if (ids.length > 0) log.info({ tasks: ids.length }, 'ended tasks past their retention deleted');
    return ids;
  }

  /**
   * Calls `onEvent` for every event after `after`, stored ones first, then live ones as they come,
   * until the task has ended (or `signal` aborts). Events are never skipped or repeated.
   */
  async function follow(
    options: { actor: Actor; id: string; after?: number; signal?: AbortSignal },
    onEvent: (event: TaskEvent) => void | Promise<void>,
  ): Promise<TaskRecord> {
    const task = get(options);
    let last = options.after ?? 0;
    let wake: (() => void) | undefined;
    const listener: Listener = () => wake?.();
    let set = listeners.get(task.id);
    if (!set) listeners.set(task.id, (set = new Set()));
    set.add(listener);
    const onAbort = () => wake?.();
    options.signal?.addEventListener('abort', onAbort);
    try {
      for (;;) {
        const waiting = new Promise<void>((resolve) => (wake = resolve));
        for (const event of storedEvents(task.id, last)) {
          await onEvent(event);
          last = event.seq;
          if (options.signal?.aborted) return store.get(task.id) ?? task;
        }
        // The state alone at each wake: a task's spec may be megabytes (its files).
        const state = store.stateOf(task.id);
        // Deleted meanwhile: nothing more will come.
        if (state === undefined) return task;
        if (TERMINAL_TASK_STATES.has(state) && store.eventCount(task.id) <= last) return store.get(task.id)!;
        // The daemon is stopping: a follower resumes from `last` with the next one.
        if (options.signal?.aborted || stopping) return store.get(task.id) ?? task;
        await waiting;
      }
    } finally {
      set.delete(listener);
      if (set.size === 0 && !running.has(task.id) && !queue.includes(task.id)) listeners.delete(task.id);
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Deletes what is left of the fresh box an earlier daemon made for an ephemeral task: the one
   * the task recorded, and any labelled for it (made, but not yet recorded, when the daemon died).
   * A user's persistent box and a caller's box are never touched.
   */
  async function removeLeftoverBox(task: TaskRecord): Promise<string[]> {
    if (task.target !== 'ephemeral') return [];
    const actor: Actor = { keyId: task.ownerKeyId, scope: 'user' };
    const boxes = deps.boxes
      .list({ actor })
      .filter((box) => box.id === task.boxId || box.labels[TASK_LABEL] === task.id);
    const removed: string[] = [];
    for (const box of boxes) {
      try {
        await deps.boxes.remove({ actor, id: box.id });
        removed.push(box.id);
      } catch (err) {
        log.warn({ taskId: task.id, boxId: box.id, err: messageOf(err) }, 'could not delete a task box');
      }
    }
    return removed;
  }

  /**
   * On daemon start: a task that was running is taken up again where its agent's output was
   * journaled in its box (the agent ran on), so long as its key is active and its spec kept its
   * credentials; otherwise it lost its agent's stream and fails. Queued ones go back in the queue
   * in their order, unless their key was revoked meanwhile (`key_revoked`) or their spec lost a
   * credential to redaction. The fresh box an ephemeral task that is not taken up had got is
   * deleted (nothing else would: it has no TTL), so a re-queued task starts clean. This also
   * covers a shutdown whose tasks outlived stopAll's wait.
   */
  async function recover(left: LeftoverTasks = leftover()): Promise<{
    resumed: string[];
    requeued: string[];
    failed: string[];
    deletedBoxes: string[];
  }> {
    const out = {
      resumed: [] as string[],
      requeued: [] as string[],
      failed: [] as string[],
      deletedBoxes: [] as string[],
    };
    // Tasks submitted since this daemon started wait behind the last daemon's.
    const submittedSince = queue.splice(0);
    for (const task of left.running) {
      const outputOffset = store.outputOffset(task.id);
      if (
        outputOffset !== undefined &&
        task.boxId !== null &&
        deps.keys.isActive(task.ownerKeyId) &&
        !Object.values(task.spec.envVars ?? {}).includes(REDACTED)
      ) {
        watchOwner(task);
        launch(task.id, { outputOffset });
        out.resumed.push(task.id);
        continue;
      }
      endWithError(task.id, 'daemon_restarted', 'the daemon restarted while the task ran');
      out.failed.push(task.id);
      out.deletedBoxes.push(...(await removeLeftoverBox(task)));
      if (outputOffset !== undefined) void endLeftAgent(task);
    }
    for (const task of left.queued) {
      out.deletedBoxes.push(...(await removeLeftoverBox(task)));
      if (!deps.keys.isActive(task.ownerKeyId)) {
        endWithError(task.id, KEY_REVOKED_CODE, REVOKED_BEFORE_START);
        out.failed.push(task.id);
        continue;
      }
      if (Object.values(task.spec.envVars ?? {}).includes(REDACTED)) {
        endWithError(
          task.id,
          'daemon_restarted',
          'the daemon restarted and the task’s credentials were not kept; submit it again',
        );
        out.failed.push(task.id);
        continue;
      }
      if (task.target === 'ephemeral') store.setBox(task.id, null);
      enqueue(task);
      out.requeued.push(task.id);
    }
    for (const id of submittedSince) if (!queue.includes(id)) queue.push(id);
    heldForRecovery = false;
    pump();
    return out;
  }

  /**
   * Ends the agent a task that is not taken up left running in a box that stays (a user's or a
   * caller's; a fresh box is deleted whole), and drops its journal.
   */
  async function endLeftAgent(task: TaskRecord): Promise<void> {
    if (task.target === 'ephemeral' || task.boxId === null) return;
    try {
      const lease = await deps.boxes.acquire({
        actor: { keyId: task.ownerKeyId, scope: 'user' },
        id: task.boxId,
      });
      try {
        await lease.guest.forgetExec(task.id);
      } finally {
        lease.release();
      }
    } catch (err) {
      log.warn(
        { taskId: task.id, boxId: task.boxId, err: messageOf(err) },
        'could not end the agent a task left',
      );
    }
  }

  /** What the last daemon left queued or running, as the store has it now. */
  function leftover(): LeftoverTasks {
    return { running: store.inState('running'), queued: store.inState('queued') };
  }

  /**
   * On daemon start, before it takes any request: what the last daemon left, for `recover`; until
   * then no task is started, so a task submitted meanwhile is neither run ahead of them nor taken
   * for one of them.
   */
  function holdForRecovery(): LeftoverTasks {
    heldForRecovery = true;
    return leftover();
  }

  /**
   * A graceful shutdown: a journaled agent is left running in its box (the task stays `running`
   * and the next daemon takes it up, as after a crash); a run whose agent has exited is let
   * finish storing its end; any other is stopped, its events saying so.
   */
  async function stopAll(): Promise<string[]> {
    maxConcurrent = 0;
    stopping = true;
    const detached: string[] = [];
    for (const [id, entry] of running) {
      if (entry.detach) {
        entry.detached = true;
        entry.detach();
        detached.push(id);
      } else if (!entry.agentExited) stopRun(entry, 'shutdown');
    }
    // A task still winding down after this (a box still booting) stays `running` or `queued` in the
    // store, with its box: the next daemon's recover() ends it and deletes that box.
    const deadline = Date.now() + 5000;
    while (running.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    // Follows end now, each at the last event stored, rather than held until the shutdown's grace.
    for (const set of listeners.values()) for (const listener of [...set]) listener();
    return detached;
  }

  return {
    submit,
    get,
    cancel,
    remove,
    prune,
    removeDeletedEvents,
    follow,
    recover,
    holdForRecovery,
    stopAll,
    position,
    /** A page of the tasks the actor may see, newest first; `nextCursor` null when it is the last. */
    list(options: { actor: Actor; boxId?: string; limit?: number; cursor?: TaskCursor }) {
      const page = store.list({
        ...(options.actor.scope === 'admin' ? {} : { ownerKeyId: options.actor.keyId }),
        ...(options.boxId ? { boxId: options.boxId } : {}),
        ...(options.limit ? { limit: options.limit } : {}),
        ...(options.cursor ? { after: options.cursor } : {}),
      });
      return { tasks: page.tasks, nextCursor: page.next && encodeTaskCursor(page.next) };
    },
    /** All stored events after `after` (lazily, page by page). */
    events: (options: { actor: Actor; id: string; after?: number }) =>
      storedEvents(get(options).id, options.after ?? 0),
    setMaxConcurrent(n: number) {
      maxConcurrent = n;
      pump();
    },
  };
}

export type TaskService = ReturnType<typeof createTaskService>;
