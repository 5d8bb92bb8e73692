import { randomBytes } from 'node:crypto';
import {
  AgentboxError,
  DEFAULT_KEEP_OUTPUT_BYTES,
  JOURNAL_END_OFFSET,
  MAX_RUNNING_COMMANDS_PER_BOX,
  type StartCommandRequest,
  type Command,
  type CommandOutputEvent,
  type ExecExit,
} from '@agentbox/protocol';
import type { CommandRecord, CommandStore } from '../store/command-store.js';
import type { BoxRecord } from '../store/box-store.js';
import type { Actor } from '../store/key-store.js';
import type { BoxLease, BoxLogger, BoxService } from './box-service.js';
import { messageOf } from './error-message.js';

/** Watch attempts in a row that may fail (the guest agent restarted) before a command is lost. */
const WATCH_ATTEMPTS = 3;
const WATCH_RETRY_MS = 1000;
/** A guest that has not started a command by then (wedged, or hostile) fails the start. */
export const COMMAND_START_TIMEOUT_MS = 60_000;
/** Who watches commands: it sees every box (the request's key was checked when it started). */
const WATCHER: Actor = { keyId: 'commands', scope: 'admin' };

export interface CommandServiceDeps {
  store: CommandStore;
  boxes: Pick<BoxService, 'acquire' | 'get'>;
  log: BoxLogger;
}

export interface CommandRef {
  actor: Actor;
  /** The box. */
  id: string;
  commandId: string;
}

export interface OutputOptions extends CommandRef {
  follow: boolean;
  stdoutOffset: number;
  stderrOffset: number;
  signal?: AbortSignal;
}

function newCommandId(): string {
  return `cmd-${randomBytes(6).toString('hex')}`;
}

export function commandView(record: CommandRecord): Command {
  return {
    id: record.id,
    boxId: record.boxId,
    argv: record.argv,
    cwd: record.cwd,
    pid: record.pid,
    state: record.state,
    exitCode: record.exitCode,
    signal: record.signal,
    timedOut: record.timedOut,
    durationMs: record.durationMs,
    startedAt: new Date(record.startedAt).toISOString(),
    finishedAt: record.finishedAt === null ? null : new Date(record.finishedAt).toISOString(),
    failureReason: record.failureReason,
  };
}

/** 501 for a box whose guest agent predates a feature: `what` it does instead, then the way out. */
function olderAgent(boxId: string, what: string, wayOut = 'make a new box'): AgentboxError {
  return new AgentboxError(
    'not_implemented',
    `box ${boxId} runs an older guest agent ${what}; ${wayOut} (after \`agentbox image build\`)`,
  );
}

function needsWatch(lease: BoxLease, boxId: string): void {
  if (!lease.guest.watchesJournals) throw olderAgent(boxId, 'without background commands');
}

/**
 * What a command keeps of its output. An agent from before `exec.keep` keeps all of it: the
 * default goes unsaid there, an explicit ask is refused.
 */
export function keepBytesFor(
  trims: boolean,
  boxId: string,
  asked: number | undefined,
): { keepBytes?: number } {
  if (trims) return { keepBytes: asked ?? DEFAULT_KEEP_OUTPUT_BYTES };
  if (asked === undefined) return {};
  throw olderAgent(
    boxId,
    "that keeps all of a command's output",
    'leave out keepOutputBytes, or make a new box',
  );
}

/** Whether a command's stdin stays open; refused by an agent from before `exec.input`. */
function stdinOpenFor(takesInput: boolean, boxId: string, asked: boolean | undefined): { stdinOpen?: true } {
  if (!asked) return {};
  if (!takesInput) throw olderAgent(boxId, "that cannot keep a command's stdin open");
  return { stdinOpen: true };
}

/**
 * Background commands: a process started in a box that outlives its request (a dev server, a long
 * build). It runs as a journaled exec (its output kept in files in the box), so clients read its
 * output when they like, from where they like, and neither they nor a daemon restart end it. Each
 * running command holds its box awake (no idle pause: a server would freeze) until it exits.
 */
export function createCommandService(deps: CommandServiceDeps) {
  const { store, boxes, log } = deps;
  /** The exit watch of each running command, by id. */
  const watches = new Map<string, AbortController>();
  let stopping = false;

  /** Follows a running command to its exit (holding its box awake) and records how it ended. */
  function watch(record: CommandRecord, first?: BoxLease): void {
    const abort = new AbortController();
    watches.set(record.id, abort);
    let lease = first;
    void (async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          lease ??= await boxes.acquire({ actor: WATCHER, id: record.boxId });
          needsWatch(lease, record.boxId);
          const exit = await lease.guest.attachExec(
            {
              journal: record.id,
              stdoutOffset: JOURNAL_END_OFFSET,
              stderrOffset: JOURNAL_END_OFFSET,
              watch: true,
            },
            { signal: abort.signal },
          );
          if (store.finish(record.id, exit))
            log.info(
              { boxId: record.boxId, commandId: record.id, exitCode: exit.exitCode },
              'command exited',
            );
          return;
        } catch (err) {
          if (abort.signal.aborted) return;
          const final =
            attempt >= WATCH_ATTEMPTS ||
            (err instanceof AgentboxError &&
              ['process_not_found', 'box_not_found', 'invalid_state', 'not_implemented'].includes(err.code));
          if (final) {
            if (store.lose(record.id, messageOf(err)))
              log.warn({ boxId: record.boxId, commandId: record.id, err: messageOf(err) }, 'command lost');
            return;
          }
          lease?.release();
          lease = undefined;
          await new Promise((resolve) => setTimeout(resolve, WATCH_RETRY_MS));
          if (abort.signal.aborted) return;
        }
      }
    })().finally(() => {
      lease?.release();
      if (watches.get(record.id) === abort) watches.delete(record.id);
    });
  }

  /** The command and its box, if it is this box's and the actor may see the box. */
  function find(ref: CommandRef): { box: BoxRecord; record: CommandRecord } {
    const box = boxes.get({ actor: ref.actor, id: ref.id });
    const record = store.get(ref.commandId);
    if (!record || record.boxId !== ref.id)
      throw new AgentboxError('command_not_found', `no command ${ref.commandId} in box ${ref.id}`);
    return { box, record };
  }

  /** Starts a command and answers once its process runs (or could not start: exit 127/126). */
  async function start(options: {
    actor: Actor;
    id: string;
    request: StartCommandRequest;
  }): Promise<Command> {
    if (stopping) throw new AgentboxError('shutting_down', 'the daemon is stopping');
    const { request } = options;
    const lease = await boxes.acquire(options);
    let watched = false;
    try {
      needsWatch(lease, options.id);
      if (store.runningCount(options.id) >= MAX_RUNNING_COMMANDS_PER_BOX)
        throw new AgentboxError(
          'capacity_exhausted',
          `box ${options.id} has ${MAX_RUNNING_COMMANDS_PER_BOX} commands running already; end one first`,
        );
      const id = newCommandId();
      const argv = request.argv ?? ['sh', '-c', request.command ?? ''];
      // The follow this exec opens is dropped once the process runs (a watch: it runs on); the
      // exit watch reads none of its output. Not the client's signal: once spawned, it is recorded.
      const started = new AbortController();
      const tooLong = setTimeout(
        () =>
          started.abort(
            new AgentboxError(
              'guest_unreachable',
              `the guest did not start the command within ${COMMAND_START_TIMEOUT_MS / 1000} s`,
            ),
          ),
        COMMAND_START_TIMEOUT_MS,
      );
      let pid: number | undefined;
      let exit: ExecExit | undefined;
      await lease.guest
        .exec(
          {
            argv,
            env: { ...lease.env, ...request.env },
            cwd: request.cwd ?? lease.workspace,
            ...(request.timeoutMs !== undefined ? { timeoutMs: request.timeoutMs } : {}),
            journal: id,
            watch: true,
            ...keepBytesFor(lease.guest.trimsJournals, options.id, request.keepOutputBytes),
            ...stdinOpenFor(lease.guest.takesInput, options.id, request.stdinOpen),
          },
          {
            onStarted: (p) => {
              pid = p;
              started.abort();
            },
            ...(request.stdin !== undefined ? { stdin: Buffer.from(request.stdin, 'base64') } : {}),
            signal: started.signal,
          },
        )
        .then(
          (e) => (exit = e),
          (err: unknown) => {
            if (pid === undefined) throw err;
          },
        )
        .finally(() => clearTimeout(tooLong));
      const record = store.add({
        id,
        boxId: options.id,
        ownerKeyId: options.actor.keyId,
        argv,
        ...(request.cwd !== undefined ? { cwd: request.cwd } : {}),
        pid: pid ?? null,
      });
      log.info({ boxId: options.id, commandId: id, pid }, 'command started');
      if (exit) {
        store.finish(id, exit);
        return commandView(store.get(id)!);
      }
      watch(record, lease);
      watched = true;
      return commandView(record);
    } finally {
      if (!watched) lease.release();
    }
  }

  /**
   * Sends the command's output from the offsets given: what it printed so far, then `running`
   * with the offsets to read on from (or, with `follow`, the rest as it comes), then its exit.
   */
  async function output(
    options: OutputOptions,
    onEvent: (event: CommandOutputEvent) => void | Promise<void>,
  ) {
    const { record } = find(options);
    const lease = await boxes.acquire(options);
    try {
      needsWatch(lease, options.id);
      const stat = options.follow ? undefined : await lease.guest.statExec(record.id);
      const offset = { stdout: options.stdoutOffset, stderr: options.stderrOffset };
      // While it runs, what it printed so far; once it ended, all of it and the exit.
      const until =
        stat?.state === 'running' ? { stdout: stat.stdoutBytes, stderr: stat.stderrBytes } : undefined;
      const caughtUp = () =>
        until !== undefined && offset.stdout >= until.stdout && offset.stderr >= until.stderr;
      const reading = new AbortController();
      const onClientGone = () => reading.abort();
      options.signal?.addEventListener('abort', onClientGone, { once: true });
      const sink = (stream: 'stdout' | 'stderr') => async (chunk: Buffer) => {
        const room = until ? until[stream] - offset[stream] : chunk.length;
        const part = chunk.subarray(0, Math.max(0, room));
        offset[stream] += part.length;
        if (part.length > 0) await onEvent({ type: stream, data: part.toString('base64') });
        if (caughtUp()) reading.abort();
      };
      let exit: ExecExit | undefined;
      try {
        if (!caughtUp())
          exit = await lease.guest.attachExec(
            { journal: record.id, stdoutOffset: offset.stdout, stderrOffset: offset.stderr, watch: true },
            {
              onStarted: (pid) => void onEvent({ type: 'started', pid }),
              // What the command no longer keeps: the reader goes on from where it starts.
              onSkipped: (stream, at) => {
                offset[stream] = at;
                if (caughtUp()) reading.abort();
                return onEvent({ type: 'skipped', stream, offset: at });
              },
              onStdout: sink('stdout'),
              onStderr: sink('stderr'),
              signal: reading.signal,
            },
          );
      } catch (err) {
        if (options.signal?.aborted || !reading.signal.aborted) throw err;
      } finally {
        options.signal?.removeEventListener('abort', onClientGone);
      }
      if (exit) {
        await onEvent({ ...exit, type: 'exit' });
        return;
      }
      await onEvent({ type: 'running', stdoutOffset: offset.stdout, stderrOffset: offset.stderr });
    } catch (err) {
      if (err instanceof AgentboxError && err.code === 'process_not_found' && record.state === 'exited')
        throw new AgentboxError(
          'file_not_found',
          `the output of ${record.id} is no longer in the box (a command's output is kept a day after it ended)`,
        );
      throw err;
    } finally {
      lease.release();
    }
  }

  return {
    start,
    output,

    list(options: { actor: Actor; id: string }): Command[] {
      boxes.get(options);
      return store.listByBox(options.id).map(commandView);
    },

    get(ref: CommandRef): Command {
      return commandView(find(ref).record);
    },

    /** Writes to the open stdin of a running command (`stdinOpen`); `eof` then closes it. */
    async input(ref: CommandRef & { data: Buffer; eof: boolean }): Promise<{ bytes: number }> {
      const { record } = find(ref);
      if (record.state !== 'running')
        throw new AgentboxError(
          'invalid_state',
          `command ${record.id} is ${record.state}: its stdin is not open`,
        );
      const lease = await boxes.acquire(ref);
      try {
        if (!lease.guest.takesInput)
          throw new AgentboxError(
            'invalid_state',
            `command ${record.id} was not started with its stdin open`,
          );
        return await lease.guest.inputExec(record.id, ref.data, ref.eof);
      } finally {
        lease.release();
      }
    },

    /** Ends the command if it still runs and drops it and its output. */
    async remove(ref: CommandRef): Promise<void> {
      const { box, record } = find(ref);
      watches.get(record.id)?.abort();
      if (box.state === 'running' || box.state === 'paused' || box.state === 'hibernated') {
        const lease = await boxes.acquire(ref);
        try {
          if (lease.guest.keepsJournals) await lease.guest.forgetExec(record.id);
        } finally {
          lease.release();
        }
      }
      store.remove(record.id);
      log.info({ boxId: ref.id, commandId: record.id }, 'command removed');
    },

    /** A starting daemon watches the commands the last one left running (their boxes re-adopted). */
    recover(): number {
      const left = store.running();
      for (const record of left) watch(record);
      return left.length;
    },

    /** The daemon stops: the watches end, the commands run on for the next daemon. */
    stopAll(): void {
      stopping = true;
      for (const abort of watches.values()) abort.abort();
      watches.clear();
    },
  };
}

export type CommandService = ReturnType<typeof createCommandService>;
