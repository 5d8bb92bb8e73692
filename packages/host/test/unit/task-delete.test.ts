import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { TaskSpecSchema, type Task } from '@agentbox/protocol';
import { DELETE_CHUNK_ROWS } from '../../src/services/chunked-delete.js';
import { errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';
import { standInTaskService, tempDataDirs } from '../helpers/task-service-standins.js';

describe('DELETE /v1/tasks/:id', () => {
  let h: FakeHost;
  let boxId: string;
  beforeAll(async () => {
    h = await fakeHost();
    const box = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } });
    boxId = box.json<{ id: string }>().id;
  });
  afterAll(() => h.close());

  const submit = async (prompt: string) =>
    (
      await h.admin_({ method: 'POST', url: '/v1/tasks', payload: { agent: 'shell', boxId, prompt } })
    ).json<Task>();
  const state = async (id: string) =>
    (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}` })).json<Task>().state;

  it('deletes an ended task and its events; then it is not found', async () => {
    const t = await submit('echo gone soon');
    await vi.waitFor(async () => expect(await state(t.id)).toBe('succeeded'));
    const r = await h.admin_({ method: 'DELETE', url: `/v1/tasks/${t.id}` });
    expect(r.statusCode, r.body).toBe(200);
    expect(r.json()).toEqual({ id: t.id, deleted: true });
    expect(errorCode(await h.admin_({ method: 'GET', url: `/v1/tasks/${t.id}` }))).toBe('task_not_found');
    expect(errorCode(await h.admin_({ method: 'GET', url: `/v1/tasks/${t.id}/events` }))).toBe(
      'task_not_found',
    );
    expect(h.host.taskStore.eventCount(t.id)).toBe(0);
    expect(errorCode(await h.admin_({ method: 'DELETE', url: `/v1/tasks/${t.id}` }))).toBe('task_not_found');
  });

  it('refuses a running task (409: cancel it first), and another key’s (404, as if none)', async () => {
    const t = await submit('sleep 30');
    await vi.waitFor(async () => expect(await state(t.id)).toBe('running'));
    const running = await h.admin_({ method: 'DELETE', url: `/v1/tasks/${t.id}` });
    expect(running.statusCode).toBe(409);
    expect(running.json()).toMatchObject({
      error: { code: 'invalid_state', message: expect.stringMatching(/cancel it first/) },
    });
    const other = h.host.keys.create({ name: 'other', scope: 'user' }).secret;
    const foreign = await h.call({
      method: 'DELETE',
      url: `/v1/tasks/${t.id}`,
      headers: { 'x-api-key': other },
    });
    expect(foreign.statusCode).toBe(404);
    await h.admin_({ method: 'POST', url: `/v1/tasks/${t.id}/cancel` });
    expect((await h.admin_({ method: 'DELETE', url: `/v1/tasks/${t.id}` })).statusCode).toBe(200);
  });
});

describe('task retention (serve --task-retention-days)', () => {
  const { make, dbs } = tempDataDirs('agentbox-retention-');

  it('deletes ended tasks past the retention, with their events; keeps newer and unfinished ones', async () => {
    const { store, tasks } = standInTaskService(make(), { maxConcurrent: 1, dbs });
    const actor = { keyId: 'k', scope: 'user' as const };
    const spec = TaskSpecSchema.parse({ agent: 'claude', prompt: 'go' });
    const old = tasks.submit({ actor, spec, userId: 'alice' });
    await vi.waitFor(() => expect(store.get(old.id)!.state).toBe('succeeded'));
    tasks.setMaxConcurrent(0);
    const queued = tasks.submit({ actor, spec, userId: 'alice' });
    const day = 86_400_000;
    const endedAt = store.get(old.id)!.finishedAt!;
    // Not yet past it: kept.
    expect(await tasks.prune(day, endedAt + day - 1)).toEqual([]);
    expect(await tasks.prune(day, endedAt + day + 1)).toEqual([old.id]);
    expect(store.get(old.id)).toBeUndefined();
    expect(store.eventCount(old.id)).toBe(0);
    expect(store.get(queued.id)!.state).toBe('queued');
  });
});

describe('a big task deleted', () => {
  const { make, dbs } = tempDataDirs('agentbox-delete-chunks-');
  const actor = { keyId: 'k', scope: 'user' as const };
  const spec = TaskSpecSchema.parse({ agent: 'claude', prompt: 'go' });
  const EVENTS = 3 * DELETE_CHUNK_ROWS + 10;

  async function endedTaskWithEvents() {
    const service = standInTaskService(make(), { maxConcurrent: 1, dbs });
    const task = service.tasks.submit({ actor, spec, userId: 'alice' });
    await vi.waitFor(() => expect(service.store.get(task.id)!.state).toBe('succeeded'));
    service.store.batch(() => {
      for (let i = 0; i < EVENTS; i++) service.store.appendEvent(task.id, { type: 'text', content: 'x' });
    });
    return { ...service, id: task.id };
  }

  it('is gone at once, and its events go a chunk at a time with the event loop turning between', async () => {
    const { store, tasks, id } = await endedTaskWithEvents();
    let turns = 0;
    let counting = true;
    const count = () => {
      turns++;
      if (counting) setImmediate(count);
    };
    setImmediate(count);
    const removing = tasks.remove({ actor, id });
    expect(store.get(id)).toBeUndefined();
    await removing;
    counting = false;
    expect(store.eventCount(id)).toBe(0);
    expect(store.deletedTaskIds()).toEqual([]);
    // One statement for them all took the thread ~1 s for a 256 MiB task.
    expect(turns).toBeGreaterThanOrEqual(3);
  });

  it('has what a stopped daemon left of its events removed by the next one', async () => {
    const { store, tasks, id } = await endedTaskWithEvents();
    // The task row went; the daemon stopped before its events did.
    store.remove(id);
    expect(store.deletedTaskIds()).toEqual([id]);
    expect(store.eventCount(id)).toBeGreaterThan(EVENTS);
    await tasks.removeDeletedEvents();
    expect(store.eventCount(id)).toBe(0);
    expect(store.deletedTaskIds()).toEqual([]);
  });
});
