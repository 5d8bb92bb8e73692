import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { TaskSpecSchema, type Task, type TaskEvent } from '@agentbox/protocol';
import { errorCode, fakeHost, processGone, type FakeHost } from '../helpers/fake-host.js';

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

  it('ends when its agent exits: a process it left running goes on, and what it prints later is not the task’s', async () => {
    const mark = path.join(os.tmpdir(), `agentbox-left-${process.pid}-${Date.now()}`);
    // The background process keeps the agent's stdout: a pipe would hold the task open for it.
    const t = await submit({ prompt: `(sleep 2; echo late; touch ${mark}) & echo now` });
    const list = await events(t.id);
    expect(await task(t.id)).toMatchObject({ state: 'succeeded' });
    expect(list.filter((e) => e.type === 'text').map((e) => e.content)).toEqual(['now']);
    expect(fs.existsSync(mark)).toBe(false);
    // It did go on.
    await vi.waitFor(() => expect(fs.existsSync(mark)).toBe(true), { timeout: 10_000 });
    fs.rmSync(mark, { force: true });
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
      // The answer waits for the run to end: it says what the task became.
      const c = await h.admin_({ method: 'POST', url: `/v1/tasks/${b.id}/cancel` });
      expect(c.json<Task>().state).toBe('cancelled');
    }
    for (const b of blockers) {
      const list = await events(b.id);
      // One error, the host's reason: not also the script's "killed by SIGKILL" that it caused.
      expect(list.filter((e) => e.type === 'error')).toMatchObject([{ content: { code: 'cancelled' } }]);
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
    expect(c.json<Task>().state).toBe('cancelled');
    const list = await events(t.id);
    expect(list.at(-1)).toMatchObject({ type: 'error', content: { code: 'cancelled' } });
    expect((await task(t.id)).state).toBe('cancelled');
  });

  it('times a task out: timed_out, and the script is killed', async () => {
    const t = await submit({ prompt: 'echo start; sleep 20; echo never', timeoutSeconds: 1 });
    const list = await events(t.id);
    expect(list.some((e) => e.content === 'never')).toBe(false);
    expect(list.filter((e) => e.type === 'error')).toHaveLength(1);
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
      // Limits an agent cannot enforce are refused, not silently dropped.
      [{ prompt: 'x', agent: 'codex', allowedTools: ['Read'] }, 'only claude and opencode can'],
      [{ prompt: 'x', agent: 'shell', disallowedTools: ['Bash'] }, 'disallowedTools'],
      // So are the parts of an agent definition it would drop, or the whole of one.
      [
        { prompt: 'x', agent: 'shell', agentDefinition: { name: 'rev' } },
        'shell cannot run as an agentDefinition',
      ],
      [{ prompt: 'x', agent: 'shell', agentDefinition: { ref: 'rev' } }, '"field":"agentDefinition"'],
      [
        { prompt: 'x', agent: 'codex', agentDefinition: { name: 'rev', tools: ['Read'] } },
        '"field":"agentDefinition.tools","message":"codex cannot honour agentDefinition.tools',
      ],
      [
        { prompt: 'x', agent: 'codex', agentDefinition: { name: 'rev', disallowedTools: ['Bash'] } },
        'agentDefinition.disallowedTools',
      ],
      [
        { prompt: 'x', agent: 'codex', agentDefinition: { name: 'rev', maxTokens: 10 } },
        'agentDefinition.maxTokens',
      ],
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

  it('redacts credential-like env values in the task it stores and shows; the script still gets them', async () => {
    const envVars = {
      GH_TOKEN: 'ghp_real',
      AWS_SECRET_ACCESS_KEY: 'aws_real',
      DB_PASSWORD: 'pw_real',
      MODE: 'fast',
    };
    const t = await submit({ prompt: 'echo "$GH_TOKEN $AWS_SECRET_ACCESS_KEY $DB_PASSWORD $MODE"', envVars });
    const shown = {
      GH_TOKEN: '[redacted]',
      AWS_SECRET_ACCESS_KEY: '[redacted]',
      DB_PASSWORD: '[redacted]',
      MODE: 'fast',
    };
    expect(t.spec.envVars).toEqual(shown);
    const list = await events(t.id);
    expect(list.filter((e) => e.type === 'text').map((e) => e.content)).toEqual([
      'ghp_real aws_real pw_real fast',
    ]);
    expect((await task(t.id)).spec.envVars).toEqual(shown);
    const all = (await h.admin_({ method: 'GET', url: '/v1/tasks' })).json<{ tasks: Task[] }>().tasks;
    expect(all.find((x) => x.id === t.id)!.spec.envVars).toEqual(shown);
    expect(JSON.stringify(h.host.taskStore.get(t.id)!.spec)).not.toMatch(/ghp_real|aws_real|pw_real/);
  });

  it('serves every event of a log longer than a store page, with and without follow', async () => {
    // A finished task whose log is longer than any page the store is read in (10,000 was a cut).
    const count = 10_050;
    const id = 'task-long-log';
    h.host.taskStore.insert({
      id,
      ownerKeyId: h.host.store.get(boxId)!.ownerKeyId,
      target: 'box',
      boxId,
      userId: null,
      agent: 'shell',
      spec: TaskSpecSchema.parse({ agent: 'shell', prompt: `seq ${count}` }),
    });
    for (let i = 1; i <= count; i++) h.host.taskStore.appendEvent(id, { type: 'text', content: String(i) });
    h.host.taskStore.finish(id, { state: 'succeeded' });
    for (const query of ['?follow=false', '', `?after=${count - 5}`]) {
      const ended = await Promise.race([
        events(id, query),
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error(`events${query} did not end`)), 10_000),
        ),
      ]);
      const after = query.startsWith('?after=') ? count - 5 : 0;
      expect(ended.length, query).toBe(count - after);
      expect(
        ended.map((e) => e.seq).every((seq, i) => seq === after + i + 1),
        query,
      ).toBe(true);
    }
  });

  it('sends a stream’s headers at once, before its first event (a queued task)', async () => {
    const base = await h.host.app.listen({ host: '127.0.0.1', port: 0 });
    // Nothing runs: the task stays queued, and neither stream has an event to send.
    h.host.tasks.setMaxConcurrent(0);
    try {
      const headers = { 'x-api-key': h.admin, 'content-type': 'application/json' };
      const seed = await fetch(`${base}/claude_in_the_box`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ user_id: 'queued-alice', task: 'hello' }),
        signal: AbortSignal.timeout(5000),
      });
      expect(seed.status).toBe(200);
      expect(seed.headers.get('content-type')).toContain('application/x-ndjson');
      const id = seed.headers.get('x-agentbox-task-id')!;
      const queued = await task(id);
      expect(queued.state).toBe('queued');
      const tail = await fetch(`${base}/v1/tasks/${id}/events?after=${queued.eventCount}`, {
        headers,
        signal: AbortSignal.timeout(5000),
      });
      expect(tail.status).toBe(200);
      expect(tail.headers.get('content-type')).toContain('application/x-ndjson');
      await h.admin_({ method: 'POST', url: `/v1/tasks/${id}/cancel` });
      expect(JSON.parse((await seed.text()).trim())).toEqual({
        type: 'error',
        content: 'cancelled while queued',
      });
      expect(JSON.parse((await tail.text()).trim())).toMatchObject({
        type: 'error',
        content: { code: 'cancelled' },
      });
    } finally {
      h.host.tasks.setMaxConcurrent(3);
    }
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
        agent: 'claude',
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

describe('agent definitions from the library an agent cannot honour', () => {
  let h: FakeHost;
  let boxId: string;
  beforeAll(async () => {
    h = await fakeHost({ maxConcurrentTasks: 1 });
    const box = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } });
    boxId = box.json<{ id: string }>().id;
  });
  afterAll(() => h.close());

  const putAgent = async (def: Record<string, unknown>) => {
    const r = await h.admin_({
      method: 'PUT',
      url: `/v1/library/agent/_global/${String(def.name)}`,
      payload: { files: { 'agent.json': JSON.stringify(def) } },
    });
    expect(r.statusCode, r.body).toBe(200);
  };
  const post = (payload: Record<string, unknown>) =>
    h.admin_({ method: 'POST', url: '/v1/tasks', payload: { boxId, prompt: 'x', ...payload } });

  it('refuses a codex task whose {ref} has tool lists (400 naming the ref); takes one with a persona only', async () => {
    await putAgent({ name: 'guarded', systemPrompt: 'Review.', disallowedTools: ['Bash'] });
    await putAgent({ name: 'persona', systemPrompt: 'Review.', model: 'gpt-x' });
    const refused = await post({ agent: 'codex', agentDefinition: { ref: 'guarded' } });
    expect(refused.statusCode, refused.body).toBe(400);
    expect(errorCode(refused)).toBe('invalid_request');
    expect(refused.json<{ error: { message: string; details: unknown } }>().error).toMatchObject({
      message:
        'library agent guarded: codex cannot honour agentDefinition.disallowedTools; only claude and opencode can',
      details: { field: 'agentDefinition.ref' },
    });
    // The same item is fine for an agent that enforces it.
    const claude = await post({ agent: 'opencode', agentDefinition: { ref: 'guarded' } });
    expect(claude.statusCode, claude.body).toBe(201);
    const codex = await post({ agent: 'codex', agentDefinition: { ref: 'persona' } });
    expect(codex.statusCode, codex.body).toBe(201);
    for (const r of [claude, codex]) {
      await h.admin_({ method: 'POST', url: `/v1/tasks/${r.json<Task>().id}/cancel` });
    }
  });

  it('checks a {ref} again when the task starts: an item changed while it waited fails it, nothing dropped', async () => {
    await putAgent({ name: 'changing', systemPrompt: 'Review.' });
    const blocker = await post({ agent: 'shell', prompt: 'sleep 30' });
    expect(blocker.statusCode, blocker.body).toBe(201);
    const waiting = await post({ agent: 'codex', agentDefinition: { ref: 'changing' } });
    expect(waiting.statusCode, waiting.body).toBe(201);
    await putAgent({ name: 'changing', systemPrompt: 'Review.', tools: ['Read'] });
    await h.admin_({ method: 'POST', url: `/v1/tasks/${blocker.json<Task>().id}/cancel` });
    const id = waiting.json<Task>().id;
    await h.admin_({ method: 'GET', url: `/v1/tasks/${id}/events` });
    const done = (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}` })).json<Task>();
    expect(done).toMatchObject({
      state: 'failed',
      error: {
        code: 'invalid_request',
        message: expect.stringContaining('codex cannot honour agentDefinition.tools') as unknown,
      },
      startedAt: null,
    });
  });
});

describe('task list pages', () => {
  let h: FakeHost;
  let now = 1_000_000;
  let owner: string;
  let other: string;
  beforeAll(async () => {
    // A clock the test moves, so that many tasks share a creation time (the ties a cursor must break).
    h = await fakeHost({ clock: () => now });
    owner = h.host.keys.authenticate(h.admin)!.keyId;
    other = h.host.keys.create({ name: 'other', scope: 'user' }).secret;
  });
  afterAll(() => h.close());

  let n = 0;
  const insert = (at: number, boxId: string | null = null, ownerKeyId = owner) => {
    now = at;
    // Ids not in creation order: a tie is broken by id, not by when the row was written.
    const id = `task-${((n++ * 7919) % 1000).toString().padStart(3, '0')}`;
    h.host.taskStore.insert({
      id,
      ownerKeyId,
      target: boxId ? 'box' : 'ephemeral',
      boxId,
      userId: null,
      agent: 'shell',
      spec: TaskSpecSchema.parse({ agent: 'shell', prompt: id }),
    });
    return id;
  };
  const page = async (query: string, key = h.admin) => {
    const r = await h.call({ method: 'GET', url: `/v1/tasks?${query}`, headers: { 'x-api-key': key } });
    expect(r.statusCode, r.body).toBe(200);
    return r.json<{ tasks: Task[]; nextCursor: string | null }>();
  };
  /** Every page from the start, with `between` run after each. */
  const walk = async (query: string, between: () => void = () => undefined, key = h.admin) => {
    const ids: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const body = await page(`${query}${cursor ? `&cursor=${cursor}` : ''}`, key);
      ids.push(...body.tasks.map((t) => t.id));
      cursor = body.nextCursor;
      pages++;
      between();
    } while (cursor !== null);
    return { ids, pages };
  };

  it('walks every task once, newest first, ties by id, while new tasks come in', async () => {
    const existing: [number, string][] = [];
    for (const at of [1000, 1000, 1000, 1000, 1000, 2000, 2000, 2000, 3000, 3000, 3000])
      existing.push([at, insert(at)]);
    const expected = existing.sort((a, b) => b[0] - a[0] || (a[1] < b[1] ? 1 : -1)).map(([, id]) => id);
    const added: string[] = [];
    // Tasks created between pages: newer, and at the time of the newest.
    const { ids, pages } = await walk('limit=3', () => {
      added.push(insert(3000), insert(4000));
    });
    expect(pages).toBeGreaterThanOrEqual(4);
    expect(ids.filter((id) => !added.includes(id))).toEqual(expected);
    expect(new Set(ids).size).toBe(ids.length);
    // A task made meanwhile shows up only where its key falls after the page read (a tie's smaller id).
    for (const id of ids.filter((i) => added.includes(i))) {
      expect(h.host.taskStore.get(id)!.createdAt, id).toBe(3000);
    }
    // The new ones are on the first page of a new walk.
    const fresh = await page('limit=100');
    expect(fresh.nextCursor).toBeNull();
    expect(fresh.tasks.map((t) => t.id).sort()).toEqual([...expected, ...added].sort());
  });

  it('says null when nothing follows, also when the last page is exactly full', async () => {
    const total = (await page('limit=1000')).tasks.length;
    const full = await page(`limit=${total}`);
    expect(full.tasks).toHaveLength(total);
    expect(full.nextCursor).toBeNull();
    const short = await page(`limit=${total - 1}`);
    expect(short.nextCursor).toEqual(expect.any(String));
    const last = await page(`limit=${total}&cursor=${short.nextCursor}`);
    expect(last).toEqual({
      tasks: [expect.objectContaining({ id: expect.any(String) as unknown })],
      nextCursor: null,
    });
  });

  it('pages within a box, and only through the tasks the key may see', async () => {
    const inBox = [
      insert(5000, 'box-paged00001'),
      insert(5000, 'box-paged00001'),
      insert(5001, 'box-paged00001'),
    ];
    insert(5001, 'box-other00001');
    const { ids } = await walk('limit=1&boxId=box-paged00001');
    expect(ids.sort()).toEqual(inBox.sort());

    const theirs = h.host.keys.authenticate(other)!.keyId;
    const hidden = insert(6000, null, theirs);
    const mine = [insert(6000, null, theirs), insert(6000, null, theirs)];
    const seen = await walk('limit=1', undefined, other);
    expect(seen.ids.sort()).toEqual([hidden, ...mine].sort());
    // The admin's cursor does not open the admin's tasks to another key.
    const adminFirst = await page('limit=1');
    const through = await page(`limit=1000&cursor=${adminFirst.nextCursor}`, other);
    expect(through.tasks.every((t) => [hidden, ...mine].includes(t.id))).toBe(true);
  });

  it('refuses a cursor it did not give out: 400 invalid_request naming `cursor`', async () => {
    const good = (await page('limit=1')).nextCursor!;
    for (const bad of ['nope', `${good}x`, Buffer.from('[1,2]').toString('base64url'), '']) {
      const r = await h.admin_({ method: 'GET', url: `/v1/tasks?cursor=${encodeURIComponent(bad)}` });
      expect(r.statusCode, `${bad}: ${r.body}`).toBe(400);
      expect(errorCode(r)).toBe('invalid_request');
      expect(r.json<{ error: { details: unknown } }>().error.details).toMatchObject({
        in: 'query',
        issues: [{ field: 'cursor' }],
      });
    }
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

describe('task recovery on daemon start', () => {
  let h: FakeHost;
  beforeAll(async () => {
    h = await fakeHost({ maxConcurrentTasks: 1 });
  });
  afterAll(() => h.close());

  /** A box as the task service makes one for a task (or as a caller makes their own). */
  const box = async (labels: Record<string, string> = {}) => {
    const r = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash', labels } });
    expect(r.statusCode, r.body).toBe(201);
    return h.host.store.get(r.json<{ id: string }>().id)!;
  };
  /** A task record as an earlier daemon left it. */
  const record = (id: string, ownerKeyId: string, target: 'ephemeral' | 'box', boxId: string | null) =>
    h.host.taskStore.insert({
      id,
      ownerKeyId,
      target,
      boxId,
      userId: null,
      agent: 'shell',
      spec: TaskSpecSchema.parse({ agent: 'shell', prompt: 'echo again' }),
    });

  it('deletes the fresh box of a task that ran or had got one; a re-queued task starts in a new box', async () => {
    // As a crash leaves them, or a shutdown whose tasks outlived stopAll's wait.
    const ran = await box({ 'agentbox.task': 'task-ran' });
    const owner = ran.ownerKeyId;
    record('task-ran', owner, 'ephemeral', ran.id);
    h.host.taskStore.start('task-ran', { boxId: ran.id, library: [] });
    const got = await box({ 'agentbox.task': 'task-got' });
    record('task-got', owner, 'ephemeral', got.id);
    // Its box was made, but the daemon stopped before recording it.
    const labelled = await box({ 'agentbox.task': 'task-unrecorded' });
    record('task-unrecorded', owner, 'ephemeral', null);
    // A caller's own box is theirs to keep, even if the task on it was running.
    const own = await box();
    record('task-own', owner, 'box', own.id);
    h.host.taskStore.start('task-own', { boxId: own.id, library: [] });

    const recovered = await h.host.tasks.recover();
    expect(recovered.failed.sort()).toEqual(['task-own', 'task-ran']);
    expect(recovered.requeued).toEqual(['task-got', 'task-unrecorded']);
    expect(recovered.deletedBoxes.sort()).toEqual([ran.id, got.id, labelled.id].sort());
    for (const b of [ran, got, labelled]) {
      expect(h.host.store.get(b.id)!.state, b.id).toBe('deleted');
      expect(processGone(b.pid!), `${b.id}: its VM still runs`).toBe(true);
    }
    expect(h.host.store.get(own.id)!.state).toBe('running');
    expect(h.host.taskStore.get('task-ran')).toMatchObject({
      state: 'failed',
      error: { code: 'daemon_restarted' },
    });

    for (const id of ['task-got', 'task-unrecorded']) {
      await h.admin_({ method: 'GET', url: `/v1/tasks/${id}/events` });
      const done = (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}` })).json<Task>();
      expect(done.state, id).toBe('succeeded');
      expect([got.id, labelled.id]).not.toContain(done.boxId);
      // Its new box goes with it.
      await vi.waitFor(() => expect(h.host.store.get(done.boxId!)!.state).toBe('deleted'));
    }
  });

  it('takes up a run whose agent ran on in its box: the events it had not stored, once, then its end', async () => {
    const own = await box();
    const actor = { keyId: own.ownerKeyId, scope: 'user' as const };
    const go = path.join(os.tmpdir(), `agentbox-go-${process.pid}-${Date.now()}`);
    record('task-ran-on', own.ownerKeyId, 'box', own.id);
    h.host.taskStore.start('task-ran-on', { boxId: own.id, library: [] });
    // The earlier daemon started the agent with a journal and stored the events of its first line.
    const lease = await h.host.boxes.acquire({ actor, id: own.id });
    const earlier = lease.guest.exec(
      {
        argv: ['sh', '-c', `echo one; echo two; while [ ! -e ${go} ]; do sleep 0.02; done; echo three`],
        journal: 'task-ran-on',
      },
      {},
    );
    h.host.taskStore.appendEvent('task-ran-on', { type: 'text', content: 'one' });
    h.host.taskStore.setOutputOffset('task-ran-on', 4);

    const recovered = await h.host.tasks.recover();
    expect(recovered.resumed).toEqual(['task-ran-on']);
    fs.writeFileSync(go, '');
    await vi.waitFor(() => expect(h.host.taskStore.get('task-ran-on')!.state).toBe('succeeded'), {
      timeout: 10_000,
    });
    fs.rmSync(go, { force: true });
    const events = [...h.host.tasks.events({ actor, id: 'task-ran-on' })];
    expect(events.filter((e) => e.type === 'text').map((e) => e.content)).toEqual(['one', 'two', 'three']);
    expect(events.find((e) => e.type === 'status')?.content).toMatchObject({
      state: 'reattached',
      boxId: own.id,
    });
    expect(h.host.taskStore.outputOffset('task-ran-on')).toBe(14);
    // The journal is gone from the box once the end is stored.
    await earlier;
    await expect(
      lease.guest.attachExec({ journal: 'task-ran-on', stdoutOffset: 0, stderrOffset: 0 }),
    ).rejects.toMatchObject({ code: 'process_not_found' });
    lease.release();
  });
});
