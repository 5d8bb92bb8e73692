import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TaskEvent } from '@agentbox/protocol';
import {
  AgentboxClient,
  DaemonUnreachableError,
  InternalError,
  InvalidRequestError,
  Sandbox,
  TaskNotFoundError,
  UnauthorizedError,
} from '../../src/index.js';
import { deadUrl, sdkDaemon, type SdkDaemon } from '../helpers/sdk-daemon.js';

const seqs = (events: TaskEvent[]) => events.map((e) => e.seq);
const oneToN = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

/** Tasks through the SDK: the real task queue and shell runner over the fake driver. */
describe('tasks over the fake driver', () => {
  let d: SdkDaemon;
  let client: AgentboxClient;
  let box: Sandbox;

  beforeAll(async () => {
    d = await sdkDaemon();
    client = new AgentboxClient({ url: d.url, apiKey: d.admin });
    box = await Sandbox.create({ client });
  });
  afterAll(() => d.close());

  it('box.tasks.run: the run iterates every event in order, and result() is the finished task', async () => {
    const run = await box.tasks.run({
      agent: 'shell',
      prompt: 'cat hello.txt; echo second',
      files: { 'hello.txt': 'from the spec\n' },
    });
    expect(run.id).toBe(run.task.id);
    expect(run.task).toMatchObject({ boxId: box.id, agent: 'shell' });
    const events: TaskEvent[] = [];
    for await (const event of run) events.push(event);
    expect(seqs(events)).toEqual(oneToN(events.length));
    expect(events.filter((e) => e.type === 'text').map((e) => e.content)).toEqual([
      'from the spec',
      'second',
    ]);
    expect(events.at(-1)!.type).toBe('completion');
    const task = await run.result();
    expect(task).toMatchObject({ state: 'succeeded', result: { exitCode: 0 }, eventCount: events.length });
    // Iterating again replays the stored events from the start.
    const again: TaskEvent[] = [];
    for await (const event of run) again.push(event);
    expect(again).toEqual(events);
    // And from a given seq.
    const tail: TaskEvent[] = [];
    for await (const event of run.events({ after: 2 })) tail.push(event);
    expect(tail).toEqual(events.slice(2));
    expect((await box.tasks.list()).map((t) => t.id)).toContain(run.id);
  });

  it('result() without iterating waits for the end; a failing script is a failed task, not a throw', async () => {
    const run = await box.tasks.run({ agent: 'shell', prompt: 'echo oops >&2; exit 7' });
    const task = await run.result();
    expect(task.state).toBe('failed');
    expect(task.error).toMatchObject({ code: 'exit_nonzero' });
  });

  it('client.tasks.run without a box: a fresh box, deleted when the task ends', async () => {
    const run = await client.tasks.run({ agent: 'shell', prompt: 'echo fresh' });
    const task = await run.result();
    expect(task.state).toBe('succeeded');
    expect(task.boxId).not.toBe(box.id);
    await expect
      .poll(async () => (await client.boxes.list()).map((b) => b.id), { timeout: 5000 })
      .not.toContain(task.boxId);
  });

  it('resumes a stream cut mid-task from the last seq: nothing lost, nothing repeated', async () => {
    const cutting = new AgentboxClient({ url: d.proxyUrl, apiKey: d.admin });
    const run = await cutting.tasks.run({
      agent: 'shell',
      boxId: box.id,
      prompt: 'for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.1; done',
    });
    const events: TaskEvent[] = [];
    let cuts = 0;
    const connectionsBefore = d.connections();
    for await (const event of run.events({ reconnect: { delayMs: 20 } })) {
      events.push(event);
      // Cut the connection twice while the task is still talking.
      if (event.type === 'text' && (event.content === 'line 2' || event.content === 'line 5')) {
        expect(d.cutConnections()).toBeGreaterThan(0);
        cuts++;
      }
    }
    expect(cuts).toBe(2);
    expect(d.connections() - connectionsBefore).toBeGreaterThanOrEqual(3);
    expect(seqs(events)).toEqual(oneToN(events.length));
    expect(events.filter((e) => e.type === 'text').map((e) => e.content)).toEqual(
      oneToN(8).map((i) => `line ${i}`),
    );
    expect(events.at(-1)!.type).toBe('completion');
    expect((await run.result()).eventCount).toBe(events.length);
  });

  it('keeps following a quiet task through more cuts than its attempts (each connection was healthy)', async () => {
    const cutting = new AgentboxClient({ url: d.proxyUrl, apiKey: d.admin });
    const run = await cutting.tasks.run({ agent: 'shell', boxId: box.id, prompt: 'sleep 2; echo late' });
    let cuts = 0;
    const cutter = setInterval(() => (cuts += d.cutConnections() > 0 ? 1 : 0), 400);
    const texts: unknown[] = [];
    try {
      for await (const event of run.events({ reconnect: { attempts: 2, delayMs: 10, healthyMs: 100 } }))
        if (event.type === 'text') texts.push(event.content);
    } finally {
      clearInterval(cutter);
    }
    expect(cuts).toBeGreaterThan(2);
    expect(texts).toEqual(['late']);
  });

  it('gives up after its reconnect attempts when the daemon stays away', async () => {
    const run = await client.tasks.run({ agent: 'shell', boxId: box.id, prompt: 'echo hi' });
    await run.result();
    const gone = new AgentboxClient({ url: await deadUrl(), apiKey: d.admin });
    const err = await (async () => {
      for await (const event of gone.tasks.events(run.id, { reconnect: { attempts: 2, delayMs: 5 } }))
        void event;
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DaemonUnreachableError);
  });

  it('a proxy’s 502/503/504 without an error body is retried like a lost connection, within its attempts', async () => {
    const run = await client.tasks.run({ agent: 'shell', boxId: box.id, prompt: 'echo one; echo two' });
    await run.result();
    // What a proxy answers the next follow requests with, before passing them to the daemon.
    let answers: Response[] = [];
    let requests = 0;
    const proxied = new AgentboxClient({
      url: d.url,
      apiKey: d.admin,
      fetch: (input, init) => {
        if ((input as string).includes('/events')) {
          requests++;
          const answer = answers.shift();
          if (answer) return Promise.resolve(answer);
        }
        return fetch(input, init);
      },
    });
    const gateway = (status: number) =>
      new Response(`<html><body>${status} Bad Gateway</body></html>`, {
        status,
        headers: { 'content-type': 'text/html' },
      });
    const follow = async (attempts: number) => {
      const events: TaskEvent[] = [];
      for await (const event of proxied.tasks.events(run.id, { reconnect: { attempts, delayMs: 5 } }))
        events.push(event);
      return events;
    };

    answers = [gateway(502), gateway(503), gateway(504)];
    const events = await follow(3);
    expect(events.filter((e) => e.type === 'text').map((e) => e.content)).toEqual(['one', 'two']);
    expect(requests).toBe(4);

    // A proxy that stays down: given up after the attempts, as DaemonUnreachableError.
    answers = Array.from({ length: 10 }, () => gateway(502));
    requests = 0;
    const down = await follow(2).catch((e: unknown) => e);
    expect(down).toBeInstanceOf(DaemonUnreachableError);
    expect(down).toMatchObject({ status: 502 });
    expect(requests).toBe(3);

    // A 503 carrying the daemon's error body is the daemon's answer: thrown at once.
    answers = [
      new Response(JSON.stringify({ error: { code: 'internal', message: 'boom', requestId: 'req_1' } }), {
        status: 503,
        headers: { 'content-type': 'application/json' },
      }),
    ];
    requests = 0;
    const answered = await follow(2).catch((e: unknown) => e);
    expect(answered).toBeInstanceOf(InternalError);
    expect(answered).toMatchObject({ message: 'boom', status: 503 });
    expect(requests).toBe(1);
  });

  it('attach, cancel, get and list; an unknown task is TaskNotFoundError; a bad spec InvalidRequestError', async () => {
    const run = await box.tasks.run({ agent: 'shell', prompt: 'sleep 30' });
    const attached = await client.tasks.attach(run.id);
    expect(attached.task.id).toBe(run.id);
    const cancelled = await attached.cancel();
    expect(cancelled.id).toBe(run.id);
    expect((await run.result()).state).toBe('cancelled');
    expect((await client.tasks.get(run.id)).state).toBe('cancelled');
    expect((await client.tasks.list({ boxId: box.id, limit: 1 })).map((t) => t.id)).toEqual([run.id]);
    await client.tasks.delete(run.id);
    expect(await client.tasks.get(run.id).catch((e: unknown) => e)).toBeInstanceOf(TaskNotFoundError);
    const missing = await client.tasks.get('task-nope').catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(TaskNotFoundError);
    const events = await (async () => {
      for await (const event of client.tasks.events('task-nope')) void event;
    })().catch((e: unknown) => e);
    expect(events).toBeInstanceOf(TaskNotFoundError);
    const bad = await box.tasks
      .run({ agent: 'shell', prompt: 'true', gitRepoUrl: 'git@github.com:o/r.git' })
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(InvalidRequestError);
    expect((bad as InvalidRequestError).field).toBe('gitRepoUrl');
  });

  it('listPage gives a page and its nextCursor; listAll iterates every page; a bad cursor is InvalidRequestError', async () => {
    const host = d.fake.host;
    const owner = host.keys.authenticate(d.admin)!.keyId;
    const boxId = 'box-sdkpages01';
    const ids = Array.from({ length: 5 }, (_, i) => {
      const id = `task-sdkpage${i}`;
      host.taskStore.insert({
        id,
        ownerKeyId: owner,
        target: 'box',
        boxId,
        userId: null,
        agent: 'shell',
        spec: { prompt: id, agent: 'shell', effort: 'low', timeoutSeconds: 10 },
      });
      return id;
    });
    const first = await client.tasks.listPage({ boxId, limit: 2 });
    expect(first.tasks).toHaveLength(2);
    expect(first.nextCursor).toEqual(expect.any(String));
    const second = await client.tasks.listPage({ boxId, limit: 2, cursor: first.nextCursor! });
    expect(second.tasks.map((t) => t.id)).not.toContain(first.tasks[0]!.id);

    const all: string[] = [];
    for await (const task of client.tasks.listAll({ boxId, limit: 2 })) all.push(task.id);
    expect(all).toHaveLength(5);
    expect([...all].sort()).toEqual(ids);
    expect(all.slice(0, 2)).toEqual(first.tasks.map((t) => t.id));
    // From a cursor: the rest.
    const rest: string[] = [];
    for await (const task of client.tasks.listAll({ boxId, limit: 2, cursor: first.nextCursor! }))
      rest.push(task.id);
    expect(rest).toEqual(all.slice(2));
    expect(await client.tasks.list({ boxId, limit: 2 })).toEqual(first.tasks);

    const bad = await client.tasks.listPage({ cursor: 'not-a-cursor' }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(InvalidRequestError);
    expect((bad as InvalidRequestError).field).toBe('cursor');
  });

  it('box.tasks.listAll goes through every task of the box', async () => {
    const listed: string[] = [];
    for await (const task of box.tasks.listAll({ limit: 1 })) listed.push(task.id);
    expect(listed).toEqual((await box.tasks.listPage({ limit: 1000 })).tasks.map((t) => t.id));
    expect(listed.length).toBeGreaterThan(1);
  });
});

describe('following a task with a key that is revoked meanwhile', () => {
  let d: SdkDaemon;
  beforeAll(async () => {
    d = await sdkDaemon({ keyCheckIntervalMs: 50 });
  });
  afterAll(() => d.close());

  it('ends the iteration with UnauthorizedError (reason key_revoked), after the events it had', async () => {
    const admin = new AgentboxClient({ url: d.url, apiKey: d.admin });
    const box = await Sandbox.create({ client: admin });
    const run = await box.tasks.run({ agent: 'shell', prompt: 'echo started; sleep 30' });
    const watcher = d.fake.host.keys.create({ name: 'watcher', scope: 'admin' });
    const client = new AgentboxClient({ url: d.url, apiKey: watcher.secret });
    const seen: TaskEvent[] = [];
    const ended = await (async () => {
      for await (const event of client.tasks.events(run.id)) {
        seen.push(event);
        if (event.type === 'text') d.fake.host.keys.revoke(watcher.key.id);
      }
    })().catch((e: unknown) => e);
    expect(ended).toBeInstanceOf(UnauthorizedError);
    expect((ended as UnauthorizedError).details).toEqual({ reason: 'key_revoked' });
    expect(seqs(seen)).toEqual(oneToN(seen.length));
    expect(seen.at(-1)).toMatchObject({ type: 'text', content: 'started' });
    await run.cancel();
  });
});
