import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach } from 'vitest';
import type { AgentKind } from '@agentbox/protocol';
import type { AgentRunner, RunnerContext } from '@agentbox/runners';
import type { GuestConnection } from '@agentbox/vm';
import { createTaskService, createTaskStore, openDatabase, type Db } from '../../src/index.js';
import type { TaskServiceDeps } from '../../src/services/task-service.js';
import { NO_GRANTS } from '../../src/store/key-store.js';

export const USER_BOX = 'box-useruser01';

/**
 * Data dirs for stand-in task services, each removed (its database closed first) after every test
 * of the file that calls this at its top level.
 */
export function tempDataDirs(prefix: string): { make: () => string; dbs: Db[] } {
  const dirs: string[] = [];
  const dbs: Db[] = [];
  afterEach(() => {
    for (const db of dbs.splice(0)) if (db.open) db.close();
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  return {
    make: () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
      dirs.push(dir);
      return dir;
    },
    dbs,
  };
}

/** A runner that runs `true` and reports a finished session; tests override parts of it. */
export function standInRunner(contexts: RunnerContext[] = []): AgentRunner {
  return {
    kind: 'claude',
    command: (_spec, ctx) => {
      contexts.push(ctx);
      return { argv: ['true'], env: {}, cwd: ctx.cwd, files: [] };
    },
    parser: () => ({
      line: () => [],
      end: () => [],
      outcome: () => ({
        ok: true,
        sessionId: 'session-new',
        numTurns: 1,
        costUsd: null,
        usage: null,
        text: 'done',
        error: null,
      }),
    }),
    materialize: () => [],
  };
}

/** The part of a guest connection a task uses; by default every process exits 0 at once. */
export type StandInGuest = Pick<GuestConnection, 'writeFile' | 'exec'> &
  Partial<Pick<GuestConnection, 'keepsJournals' | 'attachExec' | 'forgetExec' | 'chargeHostWork'>>;

export const quietGuest: StandInGuest = {
  writeFile: () => Promise.resolve({ bytes: 0 }),
  exec: () => Promise.resolve({ type: 'exit', exitCode: 0, signal: null, timedOut: false, durationMs: 0 }),
};

/** An agent that does what `onRun` says, and exits as killed if it was stopped meanwhile. */
export function standInAgent(onRun: (signal: AbortSignal | undefined) => Promise<void>): StandInGuest {
  return {
    writeFile: () => Promise.resolve({ bytes: 0 }),
    exec: async (_request, handlers = {}) => {
      await onRun(handlers.signal);
      const stopped = handlers.signal?.aborted === true;
      return {
        type: 'exit',
        exitCode: stopped ? 137 : 0,
        signal: stopped ? 'SIGKILL' : null,
        timedOut: false,
        durationMs: 1,
      };
    },
  };
}

/**
 * A task service over a real SQLite store in `dataDir` and stand-ins for everything else: every
 * task's box is USER_BOX, every key stays active, and `runner` and `guest` do what a test says.
 */
export function standInTaskService(
  dataDir: string,
  options: {
    maxConcurrent: number;
    runner?: AgentRunner;
    guest?: StandInGuest;
    dbs?: Db[];
    maxQueuedSpecBytes?: number;
    /** The box's spend budgets (default: none, as without egress). */
    openSpendBudget?: TaskServiceDeps['boxes']['openSpendBudget'];
    /** How long the disk guard has held the box (default: never). */
    heldMs?: TaskServiceDeps['boxes']['heldMs'];
  },
) {
  const db = openDatabase(dataDir);
  options.dbs?.push(db);
  const store = createTaskStore(db, Date.now);
  const runner = options.runner ?? standInRunner();
  const guest = options.guest ?? quietGuest;
  const boxes = {
    get: () => undefined,
    list: () => [],
    create: () => Promise.reject(new Error('no fresh boxes here')),
    createForUser: () => Promise.resolve({ status: 'existing', box: { id: USER_BOX } }),
    remove: () => Promise.resolve(),
    // No socket to pace: the time a task's output took counts for nothing here.
    acquire: () =>
      Promise.resolve({
        guest: { chargeHostWork: () => 0, ...guest },
        env: {},
        workspace: '/workspace',
        release: () => undefined,
      }),
    widenEgress: () => Promise.resolve(),
    isCredential: () => false,
    openSpendBudget: options.openSpendBudget ?? (() => undefined),
    heldMs: options.heldMs ?? (() => 0),
  } as unknown as TaskServiceDeps['boxes'];
  const tasks = createTaskService({
    store,
    boxes,
    library: { resolveForTask: () => ({ items: [], agentDefinition: undefined }) },
    keys: { isActive: () => true, watch: () => () => undefined, grantsFor: () => NO_GRANTS },
    runnerFor: (kind: AgentKind) => ({ ...runner, kind }),
    maxConcurrent: options.maxConcurrent,
    ...(options.maxQueuedSpecBytes !== undefined ? { maxQueuedSpecBytes: options.maxQueuedSpecBytes } : {}),
    log: { info: () => undefined, warn: () => undefined },
  });
  return { db, store, tasks };
}
