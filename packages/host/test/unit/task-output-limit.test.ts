import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { TaskEventSchema, TaskSpecSchema, type Task, type TaskEvent } from '@agentbox/protocol';
import { EVENT_PAGE_BYTES } from '../../src/services/task-service.js';
import { MAX_EVENT_FIELD_BYTES } from '../../src/services/task-output.js';
import { fakeHost, type FakeHost } from '../helpers/fake-host.js';

const MiB = 1024 * 1024;
const LIMITS = { maxBytes: 4 * MiB, maxEvents: 300 };

/**
 * A task's output is the guest's: the daemon keeps a bounded amount of it. Over the fake driver,
 * with small caps so the tests are quick; the real `shell` runner turns each line into an event.
 */
describe('task output limits', () => {
  let h: FakeHost;
  let boxId: string;
  beforeAll(async () => {
    h = await fakeHost({ maxConcurrentTasks: 2, taskOutputLimits: LIMITS });
    const box = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } });
    expect(box.statusCode).toBe(201);
    boxId = box.json<{ id: string }>().id;
  });
  afterAll(() => h.close());

  const submit = async (prompt: string) => {
    const r = await h.admin_({
      method: 'POST',
      url: '/v1/tasks',
      payload: { agent: 'shell', boxId, prompt, timeoutSeconds: 120 },
    });
    expect(r.statusCode, r.body).toBe(201);
    return r.json<Task>();
  };
  /** Follows the task to its end (the default), as a streaming client does. */
  const follow = async (id: string, query = '') => {
    const r = await h.admin_({ method: 'GET', url: `/v1/tasks/${id}/events${query}` });
    expect(r.statusCode, r.body).toBe(200);
    return r.body
      .split('\n')
      .filter(Boolean)
      .map((line) => TaskEventSchema.parse(JSON.parse(line)));
  };
  const task = async (id: string) => (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}` })).json<Task>();
  const contiguous = (events: TaskEvent[]) => events.every((e, i) => e.seq === i + 1);

  it('stops an agent that prints too many bytes: failed output_limit, under the cap, all of it followed', async () => {
    const started = Date.now();
    // 100 KB lines without end; the sleep would hold the task for minutes if the agent lived on.
    const t = await submit(
      'line=$(head -c 100000 /dev/zero | tr "\\0" x); while :; do echo "$line"; done; sleep 100',
    );
    const events = await follow(t.id);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(contiguous(events)).toBe(true);
    const last = events.at(-1)!;
    expect(last).toMatchObject({ type: 'error', content: { code: 'output_limit' } });
    expect((last.content as { message: string }).message).toContain('4 MiB of stored events');
    expect(events.filter((e) => e.type === 'error')).toHaveLength(1);
    const done = await task(t.id);
    expect(done).toMatchObject({ state: 'failed', error: { code: 'output_limit' } });
    expect(done.eventCount).toBe(events.length);
    const stored = h.host.taskStore.eventTotals(t.id);
    expect(stored.bytes).toBeLessThanOrEqual(LIMITS.maxBytes);
    // It was filled, not refused early.
    expect(stored.bytes).toBeGreaterThan(LIMITS.maxBytes - 512 * 1024);
    expect(events.filter((e) => e.type === 'text').length).toBeGreaterThan(15);
    // A reader that comes later reads the same log.
    expect(await follow(t.id, '?follow=false')).toEqual(events);
  });

  it('stops an agent that prints too many events: failed output_limit, under the cap', async () => {
    const t = await submit('seq 1 1000000; sleep 100');
    const events = await follow(t.id);
    expect(contiguous(events)).toBe(true);
    expect(events.length).toBeLessThanOrEqual(LIMITS.maxEvents);
    expect(events.length).toBeGreaterThan(LIMITS.maxEvents - 20);
    expect(events.at(-1)).toMatchObject({
      type: 'error',
      content: { code: 'output_limit', message: expect.stringContaining('300 events') as unknown },
    });
    // What was kept is the start of the output, in order, nothing skipped.
    const texts = events.filter((e) => e.type === 'text').map((e) => e.content);
    expect(texts).toEqual(texts.map((_, i) => String(i + 1)));
    expect(await task(t.id)).toMatchObject({ state: 'failed', error: { code: 'output_limit' } });
  });

  it('stores a single 8 MiB line cut to 256 KiB, marked; the task goes on and succeeds', async () => {
    const t = await submit('head -c 8388000 /dev/zero | tr "\\0" y; echo; echo after');
    const events = await follow(t.id);
    const texts = events.filter((e) => e.type === 'text');
    expect(texts).toHaveLength(2);
    const [big, after] = texts as [TaskEvent, TaskEvent];
    expect(big.truncated).toBe(true);
    expect(big.raw).toHaveLength(MAX_EVENT_FIELD_BYTES);
    expect(/^y+$/.test(big.content as string)).toBe(true);
    expect(Buffer.byteLength(JSON.stringify(big.content))).toBeLessThanOrEqual(MAX_EVENT_FIELD_BYTES);
    expect(after).toMatchObject({ content: 'after', raw: 'after' });
    expect(after.truncated).toBeUndefined();
    const done = await task(t.id);
    expect(done.state).toBe('succeeded');
    // The final text (the output's tail) is bounded too.
    expect(done.result!.text!.length).toBeLessThanOrEqual(MAX_EVENT_FIELD_BYTES);
  });

  it('reads a big log a few MiB at a time; rows stored before the cuts are served whole', async () => {
    // As an older daemon stored them: 2 MiB rows (1 MiB raw and content each), nothing cut.
    const id = 'task-old-big-rows';
    h.host.taskStore.insert({
      id,
      ownerKeyId: h.host.store.get(boxId)!.ownerKeyId,
      target: 'box',
      boxId,
      userId: null,
      agent: 'shell',
      spec: TaskSpecSchema.parse({ agent: 'shell', prompt: 'old' }),
    });
    const line = (i: number) => `${i}`.padEnd(MiB, 'o');
    const rows = 10;
    for (let i = 1; i <= rows; i++)
      h.host.taskStore.appendEvent(id, { type: 'text', content: line(i), raw: line(i) });
    for (let i = 1; i <= 400; i++) h.host.taskStore.appendEvent(id, { type: 'text', content: `small ${i}` });
    h.host.taskStore.finish(id, { state: 'succeeded' });

    const pages = vi.spyOn(h.host.taskStore, 'eventPage');
    try {
      for (const query of ['', '?follow=false']) {
        pages.mockClear();
        const events = await follow(id, query);
        expect(events, query).toHaveLength(rows + 400);
        expect(contiguous(events), query).toBe(true);
        expect(events[4]).toMatchObject({ content: line(5), raw: line(5) });
        expect(events[4]!.truncated).toBeUndefined();
        expect(pages.mock.results.length, query).toBeGreaterThan(3);
        for (const result of pages.mock.results) {
          const page = result.value as { events: TaskEvent[] };
          const size = page.events.reduce(
            (n, e) => n + Buffer.byteLength(JSON.stringify(e.content)) + Buffer.byteLength(e.raw ?? ''),
            0,
          );
          // At most the page's bytes and the one row that passed them.
          expect(size, query).toBeLessThan(EVENT_PAGE_BYTES + 2 * MiB + 16);
        }
      }
    } finally {
      pages.mockRestore();
    }
  });
});
