import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskEventSchema, type Task, type TaskEvent } from '@agentbox/protocol';
import { fakeHost, type FakeHost } from '../helpers/fake-host.js';

const LINES = 100_000;

/**
 * An agent's output is handled on the daemon's one thread: parsed into events and stored. Over the
 * fake driver (the real guest agent as a host process) with the real `shell` runner, whose every
 * line is an event.
 */
describe('task output handled a slice at a time', () => {
  let h: FakeHost;
  let events: TaskEvent[];
  let task: Task;
  let longestStallMs: number;
  let readPauses: number;

  beforeAll(async () => {
    h = await fakeHost({ taskOutputLimits: { maxBytes: 256 * 1024 * 1024, maxEvents: 200_000 } });
    const admin = { keyId: 'test', scope: 'admin' as const };
    const created = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } });
    const boxId = created.json<{ id: string }>().id;
    const lease = await h.host.boxes.acquire({ actor: admin, id: boxId });
    const stalls = monitorEventLoopDelay({ resolution: 10 });
    stalls.enable();
    // `seq` writes its lines in a few big chunks: tens of thousands of events per chunk.
    const submitted = await h.admin_({
      method: 'POST',
      url: '/v1/tasks',
      payload: { agent: 'shell', boxId, prompt: `seq 1 ${LINES}`, timeoutSeconds: 120 },
    });
    expect(submitted.statusCode, submitted.body).toBe(201);
    const id = submitted.json<Task>().id;
    const followed = await h.admin_({ method: 'GET', url: `/v1/tasks/${id}/events` });
    stalls.disable();
    longestStallMs = stalls.max / 1e6;
    events = followed.body
      .split('\n')
      .filter(Boolean)
      .map((line) => TaskEventSchema.parse(JSON.parse(line)));
    task = (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}` })).json<Task>();
    readPauses = lease.guest.limits.readPauses;
    lease.release();
  }, 120_000);
  afterAll(() => h.close());

  it('keeps every line, in order, and the thread turns while it stores them', () => {
    expect(task.state).toBe('succeeded');
    const texts = events.filter((e) => e.type === 'text').map((e) => e.content);
    expect(texts).toEqual(Array.from({ length: LINES }, (_, i) => String(i + 1)));
    expect(events.every((e, i) => e.seq === i + 1)).toBe(true);
    // Stored a chunk at a time, with a commit per event, the thread was held for seconds.
    expect(longestStallMs).toBeLessThan(500);
  });

  it('counts the time the output took against the box’s read budget', () => {
    // A few hundred KB in a handful of frames: only the work on its lines can exceed the budget.
    expect(readPauses).toBeGreaterThan(0);
  });
});
