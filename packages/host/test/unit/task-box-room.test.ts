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

  async function fullHost(options: { maxBoxes?: number; maxConcurrentTasks?: number } = {}): Promise<string> {
    h = await fakeHost({ maxBoxes: 1, ...options });
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

  it('holds no run slot while it waits: a task on a box that exists runs meanwhile', async () => {
    const holder = await fullHost({ maxConcurrentTasks: 1 });
    const waiter = await submit({ prompt: 'echo last' });
    await vi.waitFor(async () => expect(await waiting(waiter.id)).toHaveLength(1), { timeout: 5_000 });
    const onHolder = await submit({ boxId: holder, prompt: 'echo first' });
    await vi.waitFor(async () => expect((await task(onHolder.id)).state).toBe('succeeded'), {
      timeout: 5_000,
    });
    expect((await task(waiter.id)).state).toBe('queued');

    // Once its box fits, it takes the slot back and runs.
    expect((await h.admin_({ method: 'DELETE', url: `/v1/boxes/${holder}` })).statusCode).toBe(200);
    await vi.waitFor(async () => expect((await task(waiter.id)).state).toBe('succeeded'), {
      timeout: 10_000,
    });
  });

  it('takes its slot back only once one is free: the cap on running tasks holds', async () => {
    const holder = await fullHost({ maxBoxes: 2, maxConcurrentTasks: 1 });
    const spare = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } });
    const waiter = await submit({ prompt: 'echo last' });
    await vi.waitFor(async () => expect(await waiting(waiter.id)).toHaveLength(1), { timeout: 5_000 });
    const busy = await submit({ boxId: holder, prompt: 'sleep 3' });
    await vi.waitFor(async () => expect((await task(busy.id)).state).toBe('running'), { timeout: 5_000 });
    // Room for the waiter's box from now, but no slot.
    const spareId = spare.json<{ id: string }>().id;
    expect((await h.admin_({ method: 'DELETE', url: `/v1/boxes/${spareId}` })).statusCode).toBe(200);
    await new Promise((r) => setTimeout(r, 1_500));
    expect((await task(waiter.id)).state).toBe('queued');
    expect(h.host.store.live().map((b) => b.id)).toEqual([holder]);
    await vi.waitFor(async () => expect((await task(waiter.id)).state).toBe('succeeded'), {
      timeout: 10_000,
    });
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
