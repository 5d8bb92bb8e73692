import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Task, TaskEvent } from '@agentbox/protocol';
import { errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

/**
 * The task queue, runner loop and events API over the fake driver: the real guest agent runs each
 * "box" as a host process and the real `shell` runner drives it, so everything but the VM is real.
 */
describe('tasks over the fake driver', () => {
  let h: FakeHost;
  let boxId: string;
  beforeAll(async () => {
    h = await fakeHost({ maxConcurrentTasks: 3 });
    const box = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } });
    expect(box.statusCode).toBe(201);
    boxId = box.json<{ id: string }>().id;
  });
  afterAll(() => h.close());

  const submit = async (payload: Record<string, unknown>) => {
    const r = await h.admin_({
      method: 'POST',
      url: '/v1/tasks',
      payload: { agent: 'shell', boxId, ...payload },
    });
    expect(r.statusCode, r.body).toBe(201);
    return r.json<Task>();
  };
  const events = async (id: string, query = '') => {
    const r = await h.admin_({ method: 'GET', url: `/v1/tasks/${id}/events${query}` });
    expect(r.statusCode, r.body).toBe(200);
    return r.body
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as TaskEvent);
  };
  const task = async (id: string) => (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}` })).json<Task>();

  it('runs a shell task: files written first, output streamed as events in order, result stored', async () => {
    const t = await submit({
      prompt: 'cat notes/hello.txt; echo second line; exit 0',
      files: { 'notes/hello.txt': 'hello from the spec\n' },
    });
    const list = await events(t.id);
    expect(list.map((e) => e.seq)).toEqual(list.map((_, i) => i + 1));
    expect(list[0]).toMatchObject({ type: 'status', content: { state: 'queued' } });
    const texts = list.filter((e) => e.type === 'text').map((e) => e.content);
    expect(texts).toEqual(['hello from the spec', 'second line']);
    expect(list.at(-1)!.type).toBe('completion');
    const done = await task(t.id);
    expect(done).toMatchObject({ state: 'succeeded', boxId, result: { exitCode: 0 }, queuePosition: null });
    expect(done.eventCount).toBe(list.length);
  });

  it('replays from ?after=seq and speaks SSE with id = seq', async () => {
    const t = await submit({ prompt: 'echo one; echo two; echo three' });
    const all = await events(t.id);
    const tail = await events(t.id, `?after=${all[1]!.seq}`);
    expect(tail).toEqual(all.slice(2));
    const sse = await h.admin_({
      method: 'GET',
      url: `/v1/tasks/${t.id}/events?after=1`,
      headers: { accept: 'text/event-stream' },
    });
    expect(sse.headers['content-type']).toContain('text/event-stream');
    const ids = [...sse.body.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    expect(ids).toEqual(all.slice(1).map((e) => e.seq));
    const resumed = await h.admin_({
      method: 'GET',
      url: `/v1/tasks/${t.id}/events`,
      headers: { accept: 'text/event-stream', 'last-event-id': String(all.length - 1) },
    });
    expect([...resumed.body.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]))).toEqual([all.length]);
  });

  it('a failing script fails the task with its exit code', async () => {
    const t = await submit({ prompt: 'echo about to fail; exit 3' });
    await events(t.id);
    expect(await task(t.id)).toMatchObject({ state: 'failed', result: { exitCode: 3 } });
  });

  it('never runs more than the cap at once; the rest wait FIFO with positions; all finish', async () => {
    const tasks: Task[] = [];
    for (let i = 0; i < 7; i++) tasks.push(await submit({ prompt: `sleep 0.4; echo task ${i}` }));
    let maxRunning = 0;
    const seenPositions = new Set<number>();
    for (;;) {
      const states = await Promise.all(tasks.map((t) => task(t.id)));
      const running = h.host.taskStore.countRunning();
      maxRunning = Math.max(maxRunning, running);
      for (const s of states) if (s.queuePosition) seenPositions.add(s.queuePosition);
      if (states.every((s) => s.state === 'succeeded')) break;
      expect(states.some((s) => s.state === 'failed')).toBe(false);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(maxRunning).toBeLessThanOrEqual(3);
    expect(maxRunning).toBeGreaterThan(1);
    expect(seenPositions.has(1)).toBe(true);
    // FIFO: tasks started in the order they were queued.
    const started = await Promise.all(tasks.map((t) => task(t.id)));
    const order = [...started].sort((a, b) => a.startedAt!.localeCompare(b.startedAt!)).map((t) => t.id);
    expect(order.slice(0, 3).sort()).toEqual(
      tasks
        .slice(0, 3)
        .map((t) => t.id)
        .sort(),
    );
  });

  it('cancels a queued task and a running one (its process is killed)', async () => {
    const blockers = [];
    for (let i = 0; i < 3; i++) blockers.push(await submit({ prompt: 'sleep 30' }));
    const queued = await submit({ prompt: 'echo should never run' });
    expect((await task(queued.id)).state).toBe('queued');
    expect((await task(queued.id)).queuePosition).toBe(1);
    const c1 = await h.admin_({ method: 'POST', url: `/v1/tasks/${queued.id}/cancel` });
    expect(c1.json<Task>().state).toBe('cancelled');
    for (const b of blockers) {
      while ((await task(b.id)).state !== 'running') await new Promise((r) => setTimeout(r, 20));
      await h.admin_({ method: 'POST', url: `/v1/tasks/${b.id}/cancel` });
    }
    for (const b of blockers) {
      const list = await events(b.id);
      expect(list.at(-1)).toMatchObject({ type: 'error', content: { code: 'cancelled' } });
      expect((await task(b.id)).state).toBe('cancelled');
    }
    expect((await events(queued.id)).some((e) => e.type === 'text')).toBe(false);
    const again = await h.admin_({ method: 'POST', url: `/v1/tasks/${queued.id}/cancel` });
    expect(again.statusCode).toBe(409);
    expect(errorCode(again)).toBe('invalid_state');
  });

  it('cancels a task the moment it was submitted, while its box is being made ready', async () => {
    // Its files are written first, so the cancel lands before the agent starts (it never does).
    const files = Object.fromEntries(
      Array.from({ length: 20 }, (_, i) => [`f/${i}.txt`, 'x'.repeat(10_000)]),
    );
    const t = await submit({ prompt: 'sleep 30', files });
    const c = await h.admin_({ method: 'POST', url: `/v1/tasks/${t.id}/cancel` });
    expect(c.statusCode, c.body).toBe(200);
    const list = await events(t.id);
    expect(list.at(-1)).toMatchObject({ type: 'error', content: { code: 'cancelled' } });
    expect((await task(t.id)).state).toBe('cancelled');
  });

  it('times a task out: timed_out, and the script is killed', async () => {
    const t = await submit({ prompt: 'echo start; sleep 20; echo never', timeoutSeconds: 1 });
    const list = await events(t.id);
    expect(list.some((e) => e.content === 'never')).toBe(false);
    expect(list.at(-1)).toMatchObject({ type: 'error', content: { code: 'timed_out' } });
    expect(await task(t.id)).toMatchObject({ state: 'timed_out' });
  });

  it('refuses bad task specs with 400 naming the field', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ prompt: 'x', gitRepoUrl: 'http://github.com/a/b' }, 'gitRepoUrl'],
      [{ prompt: 'x', gitRepoUrl: 'ssh://git@github.com/a/b.git' }, 'gitRepoUrl'],
      [{ prompt: 'x', gitRepoUrl: 'git@github.com:a/b.git' }, 'gitRepoUrl'],
      [{ prompt: 'x', gitRepoUrl: 'https://user:pw@github.com/a/b' }, 'gitRepoUrl'],
      [{ prompt: 'x', effort: 'extreme' }, 'effort'],
      [{ prompt: 'x', agent: 'gpt-engineer' }, 'agent'],
      [{ prompt: '' }, 'prompt'],
      [{ prompt: '   ' }, 'prompt'],
      [{ prompt: 'x', files: { '../escape.txt': 'x' } }, 'files'],
      [{ prompt: 'x', files: { 'a/../../b': 'x' } }, 'files'],
      [{ prompt: 'x', files: { '/etc/passwd': 'x' } }, 'files'],
      [{ prompt: 'x', timeoutSeconds: 0 }, 'timeoutSeconds'],
      [{ prompt: 'x', resume: 'abc', context: [{ role: 'user', content: 'hi' }] }, 'context'],
      [{ prompt: 'x', envVars: { 'BAD-NAME': 'x' } }, 'envVars'],
      [{ prompt: 'x', surprise: true }, 'surprise'],
    ];
    for (const [payload, field] of cases) {
      const r = await h.admin_({
        method: 'POST',
        url: '/v1/tasks',
        payload: { boxId, agent: 'shell', ...payload },
      });
      expect(r.statusCode, JSON.stringify(payload)).toBe(400);
      expect(errorCode(r)).toBe('invalid_request');
      expect(JSON.stringify(r.json()), JSON.stringify(payload)).toContain(field);
    }
    const unknownBox = await h.admin_({
      method: 'POST',
      url: '/v1/tasks',
      payload: { agent: 'shell', prompt: 'x', boxId: 'box-nope' },
    });
    expect(unknownBox.statusCode).toBe(404);
    const unknownTask = await h.admin_({ method: 'GET', url: '/v1/tasks/task-nope' });
    expect(errorCode(unknownTask)).toBe('task_not_found');
  });

  it('another key sees neither the task nor its events', async () => {
    const t = await submit({ prompt: 'echo private' });
    const other = h.host.keys.create({ name: 'other', scope: 'user' }).secret;
    for (const url of [`/v1/tasks/${t.id}`, `/v1/tasks/${t.id}/events`]) {
      const r = await h.call({ method: 'GET', url, headers: { 'x-api-key': other } });
      expect(r.statusCode).toBe(404);
    }
    const mine = await h.call({ method: 'GET', url: '/v1/tasks', headers: { 'x-api-key': other } });
    expect(mine.json<{ tasks: Task[] }>().tasks).toEqual([]);
  });
});

describe('library', () => {
  let h: FakeHost;
  beforeAll(async () => {
    h = await fakeHost();
  });
  afterAll(() => h.close());

  it('stores, lists, shows and removes items; validates them per kind', async () => {
    const put = await h.admin_({
      method: 'PUT',
      url: '/v1/library/skill/_global/greet',
      payload: { files: { 'SKILL.md': '---\nname: greet\ndescription: say hi\n---\nSay hi.\n' } },
    });
    expect(put.statusCode, put.body).toBe(200);
    expect(put.json()).toMatchObject({
      kind: 'skill',
      namespace: '_global',
      name: 'greet',
      sha256: expect.any(String),
    });
    const agent = await h.admin_({
      method: 'PUT',
      url: '/v1/library/agent/myproj/reviewer',
      payload: {
        files: {
          'agent.json': JSON.stringify({
            name: 'reviewer',
            systemPrompt: 'Review.',
            disallowedTools: ['Bash'],
          }),
        },
      },
    });
    expect(agent.statusCode, agent.body).toBe(200);
    const list = await h.admin_({ method: 'GET', url: '/v1/library' });
    expect(
      list
        .json<{ items: { name: string }[] }>()
        .items.map((i) => i.name)
        .sort(),
    ).toEqual(['greet', 'reviewer']);
    const shown = await h.admin_({ method: 'GET', url: '/v1/library/agent/myproj/reviewer' });
    expect(shown.json()).toMatchObject({ files: { 'agent.json': expect.stringContaining('reviewer') } });

    const bad: [string, Record<string, string>][] = [
      ['/v1/library/agent/_global/x', { 'agent.json': '{not json' }],
      ['/v1/library/agent/_global/x', { 'agent.json': JSON.stringify({ name: 'other' }) }],
      ['/v1/library/mcp/_global/x', { 'mcp.json': JSON.stringify({ servers: {} }) }],
      ['/v1/library/skill/_global/x', { 'README.md': 'no SKILL.md' }],
      ['/v1/library/skill/_global/x', { '../SKILL.md': 'x' }],
      ['/v1/library/skill/..%2Fx/y', { 'SKILL.md': 'x' }],
      ['/v1/library/plugin/_global/x', { 'SKILL.md': 'x' }],
    ];
    for (const [url, files] of bad) {
      const r = await h.admin_({ method: 'PUT', url, payload: { files } });
      expect(r.statusCode, `${url} ${r.body}`).toBe(400);
    }
    const user = h.host.keys.create({ name: 'u', scope: 'user' }).secret;
    const forbidden = await h.call({
      method: 'PUT',
      url: '/v1/library/skill/_global/y',
      headers: { 'x-api-key': user },
      payload: { files: { 'SKILL.md': 'x' } },
    });
    expect(forbidden.statusCode).toBe(403);

    const del = await h.admin_({ method: 'DELETE', url: '/v1/library/skill/_global/greet' });
    expect(del.statusCode).toBe(200);
    const gone = await h.admin_({ method: 'GET', url: '/v1/library/skill/_global/greet' });
    expect(errorCode(gone)).toBe('library_item_not_found');
  });

  it('resolves project over _global and records the hashes a task ran with', async () => {
    await h.admin_({
      method: 'PUT',
      url: '/v1/library/rules/_global/style',
      payload: { files: { 'RULES.md': 'global style' } },
    });
    const project = await h.admin_({
      method: 'PUT',
      url: '/v1/library/rules/proj/style',
      payload: { files: { 'RULES.md': 'project style' } },
    });
    const { items } = h.host.library.resolveForTask({
      prompt: 'x',
      agent: 'shell',
      effort: 'low',
      timeoutSeconds: 10,
      project: 'proj',
    });
    const style = items.filter((i) => i.kind === 'rules');
    expect(style).toHaveLength(1);
    expect(style[0]).toMatchObject({ namespace: 'proj', sha256: project.json<{ sha256: string }>().sha256 });

    const box = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } });
    const t = await h.admin_({
      method: 'POST',
      url: '/v1/tasks',
      payload: { agent: 'shell', prompt: 'true', project: 'proj', boxId: box.json<{ id: string }>().id },
    });
    await h.admin_({ method: 'GET', url: `/v1/tasks/${t.json<Task>().id}/events` });
    const done = (await h.admin_({ method: 'GET', url: `/v1/tasks/${t.json<Task>().id}` })).json<Task>();
    expect(done.library).toContainEqual({
      kind: 'rules',
      namespace: 'proj',
      name: 'style',
      sha256: project.json<{ sha256: string }>().sha256,
    });
    const missingRef = await h.admin_({
      method: 'POST',
      url: '/v1/tasks',
      payload: {
        agent: 'shell',
        prompt: 'true',
        agentDefinition: { ref: 'ghost' },
        boxId: box.json<{ id: string }>().id,
      },
    });
    expect(missingRef.statusCode).toBe(400);
    expect(missingRef.json<{ error: { message: string; details: unknown } }>().error).toMatchObject({
      message: expect.stringContaining('library agent ghost does not exist'),
      details: { field: 'agentDefinition.ref' },
    });
  });
});

describe('tasks and the idle policy', () => {
  it('a running task holds its box awake; a task on a paused box wakes it', async () => {
    const h = await fakeHost({ idle: { pauseAfterMs: 200, hibernateAfterMs: 0, checkEveryMs: 50 } });
    try {
      const box = (await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } })).json<{
        id: string;
      }>();
      const state = () => h.host.store.get(box.id)!.state;
      const run = async (prompt: string) => {
        const r = await h.admin_({
          method: 'POST',
          url: '/v1/tasks',
          payload: { agent: 'shell', boxId: box.id, prompt },
        });
        const id = r.json<Task>().id;
        await h.admin_({ method: 'GET', url: `/v1/tasks/${id}/events` });
        return (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}` })).json<Task>();
      };
      // Silent for longer than the idle time: the box must not be paused under the agent.
      const long = await run('sleep 1; echo still here');
      expect(long.state).toBe('succeeded');
      expect(h.host.store.transitions(box.id).some((t) => t.to === 'paused')).toBe(false);
      await new Promise((r) => setTimeout(r, 500));
      expect(state()).toBe('paused');
      const woken = await run('echo awake');
      expect(woken.state).toBe('succeeded');
    } finally {
      await h.close();
    }
  });
});
