import { describe, expect, it, vi } from 'vitest';
import { TaskSpecSchema } from '@agentbox/protocol';
import type { RunnerContext } from '@agentbox/runners';
import {
  standInRunner,
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
