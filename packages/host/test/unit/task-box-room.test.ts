import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Task, TaskEvent } from '@agentbox/protocol';
import { fakeHost, type FakeHost } from '../helpers/fake-host.js';

/**
 * A task whose fresh box the host has no room for (its box limit here; its disk or memory reserve,
 * or the key's own limits, alike) waits for room instead of failing: room comes back as boxes are
 * deleted and tasks end.
 */
describe('a task waits for room for its box', () => {
  let h: FakeHost;
  afterEach(() => h.close());

  async function fullHost(): Promise<string> {
    h = await fakeHost({ maxBoxes: 1 });
    const box = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } });
    expect(box.statusCode).toBe(201);
    return box.json<{ id: string }>().id;
  }
  const submit = async (payload: Record<string, unknown>) => {
    const r = await h.admin_({ method: 'POST', url: '/v1/tasks', payload: { agent: 'shell', ...payload } });
    expect(r.statusCode, r.body).toBe(201);
    return r.json<Task>();
  };
  const task = async (id: string) => (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}` })).json<Task>();
  const events = async (id: string) =>
    (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}/events?follow=false` })).body
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as TaskEvent);
  const waiting = async (id: string) =>
    (await events(id)).filter(
      (e) => e.type === 'status' && (e.content as { state: string }).state === 'waiting_for_box',
    );

  it('says so once, and runs once a box is deleted', async () => {
    const holder = await fullHost();
    const t = await submit({ prompt: 'echo ran' });
    await vi.waitFor(async () => expect(await waiting(t.id)).toHaveLength(1), { timeout: 5_000 });
    expect((await waiting(t.id))[0]!.content).toMatchObject({
      message: 'this host runs as many boxes as it may; retry later',
    });
    // Retried meanwhile, told once.
    await new Promise((r) => setTimeout(r, 2_200));
    expect(await waiting(t.id)).toHaveLength(1);
    expect((await task(t.id)).state).toBe('queued');

    expect((await h.admin_({ method: 'DELETE', url: `/v1/boxes/${holder}` })).statusCode).toBe(200);
    await vi.waitFor(async () => expect((await task(t.id)).state).toBe('succeeded'), { timeout: 10_000 });
    expect((await events(t.id)).filter((e) => e.type === 'text').map((e) => e.content)).toEqual(['ran']);
  });

  it('a cancel or its timeout ends the wait, and no box is made after it', async () => {
    await fullHost();
    const cancelled = await submit({ prompt: 'echo never' });
    const timed = await submit({ prompt: 'echo never', timeoutSeconds: 1 });
    await vi.waitFor(async () => expect(await waiting(cancelled.id)).toHaveLength(1), { timeout: 5_000 });
    expect((await h.admin_({ method: 'POST', url: `/v1/tasks/${cancelled.id}/cancel` })).statusCode).toBe(
      200,
    );
    await vi.waitFor(async () => expect((await task(cancelled.id)).state).toBe('cancelled'), {
      timeout: 5_000,
    });
    await vi.waitFor(async () => expect((await task(timed.id)).state).toBe('timed_out'), { timeout: 5_000 });
    await new Promise((r) => setTimeout(r, 1_200));
    expect(h.host.store.live()).toHaveLength(1);
  });
});
