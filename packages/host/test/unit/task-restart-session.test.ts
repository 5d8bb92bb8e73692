import { describe, expect, it, vi } from 'vitest';
import { AgentboxError, TaskSpecSchema } from '@agentbox/protocol';
import type { OpenBudgetOptions } from '@agentbox/egress';
import type { AgentRunner, RunnerContext } from '@agentbox/runners';
import {
  standInRunner,
  quietGuest,
  standInTaskService,
  tempDataDirs,
  USER_BOX,
} from '../helpers/task-service-standins.js';

const { make: newDataDir, dbs } = tempDataDirs('agentbox-restart-');

const actor = { keyId: 'key-1', scope: 'user' as const };

function service(dataDir: string, maxConcurrent: number) {
  const contexts: RunnerContext[] = [];
  const made = standInTaskService(dataDir, { maxConcurrent, runner: standInRunner(contexts), dbs });
  return { ...made, contexts };
}

const spec = (prompt: string) => TaskSpecSchema.parse({ agent: 'claude', prompt });

describe('a seed task re-queued after a daemon restart', () => {
  it('still continues the session the user’s box last ran; a task that did not ask, does not', async () => {
    // The daemon before the restart: the user's box has a finished session; no task may start.
    const dataDir = newDataDir();
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

describe('tasks submitted while a starting daemon recovers the last one’s', () => {
  it('wait behind them, and are neither started early nor taken for one of them', async () => {
    const dataDir = newDataDir();
    const before = service(dataDir, 0);
    const left = before.tasks.submit({ actor, spec: spec('left queued'), userId: 'alice' });
    before.db.close();

    // The new daemon serves while it re-adopts boxes: a task comes in before recover() ran.
    const after = service(dataDir, 1);
    const leftover = after.tasks.holdForRecovery();
    expect(leftover.queued.map((t) => t.id)).toEqual([left.id]);
    const fresh = after.tasks.submit({ actor, spec: spec('submitted meanwhile'), userId: 'alice' });
    await new Promise((r) => setTimeout(r, 50));
    expect(after.store.get(fresh.id)!.state).toBe('queued');
    expect(after.contexts).toEqual([]);

    const recovered = await after.tasks.recover(leftover);
    expect(recovered.requeued).toEqual([left.id]);
    await vi.waitFor(() => expect(after.store.get(fresh.id)!.state).toBe('succeeded'));
    expect(after.store.get(left.id)!.state).toBe('succeeded');
    // One at a time, the last daemon's first.
    expect(after.store.get(fresh.id)!.startedAt).toBeGreaterThanOrEqual(
      after.store.get(left.id)!.finishedAt!,
    );
  });
});

describe('a running task whose agent journals its output, across a daemon restart', () => {
  /** A runner whose parser makes a text event of each line and keeps every line for its outcome. */
  const lineRunner = (): AgentRunner => {
    const base = standInRunner();
    return {
      ...base,
      parser: () => {
        const seen: string[] = [];
        return {
          line: (line) => {
            seen.push(line);
            return [{ type: 'text', content: line }];
          },
          end: () => [],
          outcome: () => ({ ...base.parser().outcome(), text: seen.join(' ') }),
        };
      },
    };
  };
  const exit0 = { type: 'exit', exitCode: 0, signal: null, timedOut: false, durationMs: 1 } as const;
  const texts = (s: ReturnType<typeof standInTaskService>, id: string) =>
    [...s.tasks.events({ actor, id })].filter((e) => e.type === 'text').map((e) => e.content);

  it('is taken up: the parser reads every line again, only the new ones are stored, the journal is forgotten', async () => {
    const dataDir = newDataDir();
    const journals: string[] = [];
    const before = standInTaskService(dataDir, {
      maxConcurrent: 1,
      runner: lineRunner(),
      dbs,
      guest: {
        ...quietGuest,
        keepsJournals: true,
        exec: async (request, handlers = {}) => {
          journals.push(request.journal!);
          await handlers.onStdout?.(Buffer.from('one\ntwo\nthr'));
          // The daemon dies here: this call never ends.
          return new Promise(() => undefined);
        },
      },
    });
    const task = before.tasks.submit({ actor, spec: spec('go'), userId: 'alice' });
    await vi.waitFor(() => expect(before.store.outputOffset(task.id)).toBe(8));
    expect(journals).toEqual([task.id]);
    expect(texts(before, task.id)).toEqual(['one', 'two']);
    before.db.close();

    const attached: unknown[] = [];
    const forgotten: string[] = [];
    const after = standInTaskService(dataDir, {
      maxConcurrent: 1,
      runner: lineRunner(),
      dbs,
      guest: {
        ...quietGuest,
        keepsJournals: true,
        attachExec: async (journal, handlers = {}) => {
          attached.push(journal);
          await handlers.onStdout?.(Buffer.from('one\ntwo\nthree\n'));
          await handlers.onStdout?.(Buffer.from('four\n'));
          return exit0;
        },
        forgetExec: (journal) => {
          forgotten.push(journal);
          return Promise.resolve();
        },
      },
    });
    const recovered = await after.tasks.recover();
    expect(recovered).toMatchObject({ resumed: [task.id], failed: [] });
    await vi.waitFor(() => expect(after.store.get(task.id)!.state).toBe('succeeded'));
    expect(attached).toEqual([{ journal: task.id, stdoutOffset: 0, stderrOffset: 0 }]);
    expect(texts(after, task.id)).toEqual(['one', 'two', 'three', 'four']);
    expect(after.store.get(task.id)!.result!.text).toBe('one two three four');
    expect(after.store.outputOffset(task.id)).toBe(19);
    expect(forgotten).toEqual([task.id]);
  });

  it('goes on counting its spend from what the host had counted (its limit holds across)', async () => {
    const dataDir = newDataDir();
    /** A budget as the gateway keeps one: a charge of `usd` once the agent runs. */
    const budgetCharging =
      (usd: number, opened: OpenBudgetOptions[]) => (_box: string, options: OpenBudgetOptions) => {
        opened.push(options);
        const budget = {
          limitUsd: options.limitUsd ?? Infinity,
          spentUsd: (options.spentUsd ?? 0) + usd,
          exceeded: undefined,
          close: () => undefined,
        };
        options.onCharge?.(budget);
        return budget;
      };
    const before = standInTaskService(dataDir, {
      maxConcurrent: 1,
      dbs,
      openSpendBudget: budgetCharging(0.4, []),
      guest: { ...quietGuest, keepsJournals: true, exec: () => new Promise(() => undefined) },
    });
    const task = before.tasks.submit({
      actor,
      spec: TaskSpecSchema.parse({ agent: 'claude', prompt: 'p', maxSpendUsd: 1 }),
      userId: 'alice',
    });
    await vi.waitFor(() => expect(before.store.meteredUsd(task.id)).toBe(0.4));
    before.db.close();

    const opened: OpenBudgetOptions[] = [];
    const after = standInTaskService(dataDir, {
      maxConcurrent: 1,
      dbs,
      openSpendBudget: budgetCharging(0.1, opened),
      guest: {
        ...quietGuest,
        keepsJournals: true,
        attachExec: () => Promise.resolve(exit0),
        forgetExec: () => Promise.resolve(),
      },
    });
    await after.tasks.recover();
    await vi.waitFor(() => expect(after.store.get(task.id)!.state).toBe('succeeded'));
    expect(opened).toMatchObject([{ limitUsd: 1, spentUsd: 0.4 }]);
    expect(after.store.get(task.id)!.result!.meteredCostUsd).toBeCloseTo(0.5, 9);
  });

  it('fails as before when the box no longer has the journal, or the task’s credentials were not kept', async () => {
    const dataDir = newDataDir();
    const forgotten: string[] = [];
    const before = service(dataDir, 0);
    const gone = before.tasks.submit({ actor, spec: spec('journal gone'), userId: 'alice' });
    const secret = before.tasks.submit({
      actor,
      spec: TaskSpecSchema.parse({ agent: 'claude', prompt: 'p', envVars: { ANTHROPIC_API_KEY: 'sk-real' } }),
      userId: 'alice',
    });
    for (const id of [gone.id, secret.id]) {
      before.store.start(id, { boxId: USER_BOX, library: [] });
      before.store.setOutputOffset(id, 0);
    }
    before.db.close();

    const after = standInTaskService(dataDir, {
      maxConcurrent: 2,
      dbs,
      guest: {
        ...quietGuest,
        keepsJournals: true,
        attachExec: () => Promise.reject(new AgentboxError('process_not_found', 'no exec journal')),
        forgetExec: (journal) => {
          forgotten.push(journal);
          return Promise.resolve();
        },
      },
    });
    const recovered = await after.tasks.recover();
    expect(recovered).toMatchObject({ resumed: [gone.id], failed: [secret.id] });
    await vi.waitFor(() => expect(after.store.get(gone.id)!.state).toBe('failed'));
    expect(after.store.get(gone.id)!.error).toEqual({
      code: 'daemon_restarted',
      message:
        'the daemon restarted while the task ran, and its agent could not be taken up: no exec journal',
    });
    expect(after.store.get(secret.id)!.error).toMatchObject({ code: 'daemon_restarted' });
    // Neither agent is left running in the user's box (nor its journal there).
    await vi.waitFor(() => expect(forgotten.sort()).toEqual([gone.id, secret.id].sort()));
  });
});

describe('a graceful shutdown with tasks running', () => {
  it('leaves a journaled agent running for the next daemon and stops any other', async () => {
    const dataDir = newDataDir();
    const forgotten: string[] = [];
    let cancelled = 0;
    let started = 0;
    const agent = (journaled: boolean) => ({
      ...quietGuest,
      keepsJournals: journaled,
      exec: async (
        _request: unknown,
        handlers: { onStdout?: (c: Buffer) => Promise<void> | void; signal?: AbortSignal } = {},
      ) => {
        started++;
        await handlers.onStdout?.(Buffer.from('one\n'));
        await new Promise<void>((resolve) =>
          handlers.signal?.addEventListener('abort', () => {
            cancelled++;
            resolve();
          }),
        );
        return { type: 'exit', exitCode: null, signal: 'SIGKILL', timedOut: false, durationMs: 1 } as const;
      },
      forgetExec: (journal: string) => {
        forgotten.push(journal);
        return Promise.resolve();
      },
    });
    const journaled = standInTaskService(dataDir, { maxConcurrent: 1, dbs, guest: agent(true) });
    const task = journaled.tasks.submit({ actor, spec: spec('runs on'), userId: 'alice' });
    await vi.waitFor(() => expect(journaled.store.outputOffset(task.id)).toBe(4));
    const seen: string[] = [];
    const following = journaled.tasks.follow({ actor, id: task.id }, (e) => void seen.push(e.type));
    expect(await journaled.tasks.stopAll()).toEqual([task.id]);
    // Its follower ends at what is stored, the task still running: it resumes with the next daemon.
    const followed = await Promise.race([
      following,
      new Promise((r) => setTimeout(() => r('still waiting'), 2000)),
    ]);
    expect(followed).toMatchObject({ id: task.id, state: 'running' });
    expect(seen).toContain('status');
    expect(journaled.store.get(task.id)).toMatchObject({ state: 'running', error: null });
    expect(cancelled).toBe(0);
    expect(forgotten).toEqual([]);
    journaled.db.close();

    const plain = standInTaskService(newDataDir(), { maxConcurrent: 1, dbs, guest: agent(false) });
    const other = plain.tasks.submit({ actor, spec: spec('stopped'), userId: 'alice' });
    await vi.waitFor(() => expect(started).toBe(2));
    expect(await plain.tasks.stopAll()).toEqual([]);
    expect(cancelled).toBe(1);
    expect(plain.store.get(other.id)).toMatchObject({ state: 'failed', error: { code: 'daemon_stopped' } });
  });

  it('lets a run whose agent has exited store its end', async () => {
    let exited = false;
    const s = standInTaskService(newDataDir(), {
      maxConcurrent: 1,
      dbs,
      guest: {
        ...quietGuest,
        // Its last line is stored after the exit, and that takes a while (a read pause).
        chargeHostWork: () => 300,
        exec: async (_request, handlers = {}) => {
          await handlers.onStdout?.(Buffer.from('a last line without its newline'));
          exited = true;
          return { type: 'exit', exitCode: 0, signal: null, timedOut: false, durationMs: 1 };
        },
      },
    });
    const task = s.tasks.submit({ actor, spec: spec('ends'), userId: 'alice' });
    await vi.waitFor(() => expect(exited).toBe(true));
    expect(await s.tasks.stopAll()).toEqual([]);
    expect(s.store.get(task.id)).toMatchObject({ state: 'succeeded', error: null });
  });
});
