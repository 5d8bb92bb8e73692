import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TaskSpecSchema, type AgentKind } from '@agentbox/protocol';
import type { AgentRunner, RunnerContext } from '@agentbox/runners';
import { createTaskService, createTaskStore, openDatabase, type Db } from '../../src/index.js';
import type { TaskServiceDeps } from '../../src/services/task-service.js';
import { NO_GRANTS } from '../../src/store/key-store.js';

const dirs: string[] = [];
const dbs: Db[] = [];
afterEach(() => {
  for (const db of dbs.splice(0)) if (db.open) db.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const USER_BOX = 'box-useruser01';
const actor = { keyId: 'key-1', scope: 'user' as const };

/**
 * A task service over a real SQLite store and stand-ins for everything else: the user's box is
 * always USER_BOX, and the runner only records the context it was asked to run with.
 */
function service(dataDir: string, maxConcurrent: number) {
  const db = openDatabase(dataDir);
  dbs.push(db);
  const store = createTaskStore(db, Date.now);
  const contexts: RunnerContext[] = [];
  const runner: AgentRunner = {
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
  const guest = {
    writeFile: () => Promise.resolve(),
    exec: () => Promise.resolve({ exitCode: 0, signal: null, timedOut: false }),
  };
  const boxes = {
    get: () => undefined,
    list: () => [],
    create: () => Promise.reject(new Error('no fresh boxes here')),
    createForUser: () => Promise.resolve({ status: 'existing', box: { id: USER_BOX } }),
    remove: () => Promise.resolve(),
    acquire: () => Promise.resolve({ guest, env: {}, workspace: '/workspace', release: () => undefined }),
    widenEgress: () => Promise.resolve(),
    isCredential: () => false,
  } as unknown as TaskServiceDeps['boxes'];
  const tasks = createTaskService({
    store,
    boxes,
    library: { resolveForTask: () => ({ items: [], agentDefinition: undefined }) },
    // No key table here: every key stays active.
    keys: { isActive: () => true, watch: () => () => undefined, grantsFor: () => NO_GRANTS },
    runnerFor: (kind: AgentKind) => ({ ...runner, kind }),
    maxConcurrent,
    log: { info: () => undefined, warn: () => undefined },
  });
  return { db, store, tasks, contexts };
}

const spec = (prompt: string) => TaskSpecSchema.parse({ agent: 'claude', prompt });

describe('a seed task re-queued after a daemon restart', () => {
  it('still continues the session the user’s box last ran; a task that did not ask, does not', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-restart-'));
    dirs.push(dataDir);

    // The daemon before the restart: the user's box has a finished session; no task may start.
    const before = service(dataDir, 0);
    before.store.insert({
      id: 'task-earlier',
      ownerKeyId: actor.keyId,
      target: 'user',
      boxId: USER_BOX,
      userId: 'alice',
      agent: 'claude',
      spec: spec('first'),
    });
    before.store.start('task-earlier', { boxId: USER_BOX, library: [] });
    before.store.finish('task-earlier', { state: 'succeeded', sessionId: 'session-last' });
    const seed = before.tasks.submit({
      actor,
      spec: spec('go on'),
      userId: 'alice',
      continueLastSession: true,
    });
    const plain = before.tasks.submit({ actor, spec: spec('start afresh'), userId: 'alice' });
    expect(before.store.get(seed.id)).toMatchObject({ state: 'queued', continueLastSession: true });
    expect(before.store.get(plain.id)).toMatchObject({ state: 'queued', continueLastSession: false });
    // The daemon dies: nothing it held in memory survives.
    before.db.close();

    const after = service(dataDir, 1);
    const recovered = await after.tasks.recover();
    expect(recovered.requeued).toEqual([seed.id, plain.id]);
    await vi.waitFor(() => expect(after.store.get(plain.id)!.state).toBe('succeeded'));
    expect(after.store.get(seed.id)!.state).toBe('succeeded');
    // In queue order: the seed task resumes; the other starts a new session, as it would have.
    expect(after.contexts.map((c) => c.resumeSessionId)).toEqual(['session-last', undefined]);
  });
});
