import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { TaskSpecSchema, type Task, type TaskEvent } from '@agentbox/protocol';
import { createKeyStore, openDatabase } from '../../src/index.js';
import { errorCode, fakeHost, processGone, type FakeHost } from '../helpers/fake-host.js';

/** How often the daemon under test re-checks keys (the default is 5 s). */
const CHECK_MS = 50;
/** Longer than any stream may stay open after its key was revoked here. */
const ENDS_WITHIN_MS = 5000;

const REVOKED_LINE = {
  type: 'error',
  error: { code: 'unauthorized', details: { reason: 'key_revoked' } },
};

/** An open streamed response, read a chunk at a time. */
function reader(res: Response) {
  const body = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = '';
  return {
    /** Reads until `done(text so far)` holds. */
    async until(done: (text: string) => boolean): Promise<string> {
      while (!done(text)) {
        const chunk = await body.read();
        if (chunk.done) throw new Error(`the stream ended early: ${text}`);
        text += decoder.decode(chunk.value, { stream: true });
      }
      return text;
    },
    /** Reads to the end of the stream; fails if it is still open after ENDS_WITHIN_MS. */
    async rest(): Promise<string> {
      const timer = setTimeout(() => void body.cancel(new Error('still open')), ENDS_WITHIN_MS);
      try {
        for (;;) {
          const chunk = await body.read();
          if (chunk.done) return text;
          text += decoder.decode(chunk.value, { stream: true });
        }
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

const lines = (text: string) =>
  text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>);

/**
 * Revoking a key (as `agentbox keys revoke` does, on the same database) ends what it keeps going,
 * not only its new requests: open streams, queued and running tasks.
 */
describe('a revoked key', () => {
  let h: FakeHost;
  let base: string;
  let boxId: string;
  beforeAll(async () => {
    h = await fakeHost({ keyCheckIntervalMs: CHECK_MS, maxConcurrentTasks: 2 });
    base = await h.host.app.listen({ host: '127.0.0.1', port: 0 });
    const box = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } });
    expect(box.statusCode).toBe(201);
    boxId = box.json<{ id: string }>().id;
  });
  afterAll(() => h.close());

  const key = (name: string, scope: 'admin' | 'user') => h.host.keys.create({ name, scope });
  const task = async (id: string) => (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}` })).json<Task>();
  const events = async (id: string) =>
    lines(
      (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}/events?follow=false` })).body,
    ) as TaskEvent[];
  const submit = async (secret: string, payload: Record<string, unknown>) => {
    const r = await h.call({
      method: 'POST',
      url: '/v1/tasks',
      headers: { 'x-api-key': secret },
      payload: { agent: 'shell', ...payload },
    });
    expect(r.statusCode, r.body).toBe(201);
    return r.json<Task>();
  };

  it('ends its open task event streams, NDJSON and SSE, with a last error saying so', async () => {
    const t = await submit(h.admin, { boxId, prompt: 'echo started; sleep 30' });
    await vi.waitFor(async () => expect((await task(t.id)).state).toBe('running'));
    // Another admin key follows the task: revoking it ends its streams, not the task.
    const watcher = key('watcher', 'admin');
    const headers = { 'x-api-key': watcher.secret };
    const ndjson = await fetch(`${base}/v1/tasks/${t.id}/events`, { headers });
    const sse = await fetch(`${base}/v1/tasks/${t.id}/events?format=sse`, { headers });
    expect([ndjson.status, sse.status]).toEqual([200, 200]);
    const ndjsonBody = reader(ndjson);
    const sseBody = reader(sse);
    await ndjsonBody.until((text) => text.includes('"started"'));
    await sseBody.until((text) => text.includes('"started"'));

    h.host.keys.revoke(watcher.key.id);
    const all = lines(await ndjsonBody.rest());
    expect(all.at(-1)).toMatchObject(REVOKED_LINE);
    // The events before it are the task's own, whole.
    expect(all.slice(0, -1).map((e) => e.seq)).toEqual(all.slice(0, -1).map((_, i) => i + 1));
    const frames = (await sseBody.rest()).split('\n\n').filter(Boolean);
    const last = frames.at(-1)!;
    // No id: a client resuming with Last-Event-ID resumes after the last real event.
    expect(last).toMatch(/^event: error\ndata: /);
    expect(last).not.toMatch(/^id: /m);
    expect(JSON.parse(last.slice(last.indexOf('data: ') + 6))).toMatchObject(REVOKED_LINE);

    // The task goes on (its own key is fine), and the revoked key gets no new stream.
    expect((await task(t.id)).state).toBe('running');
    const again = await fetch(`${base}/v1/tasks/${t.id}/events`, { headers });
    expect(again.status).toBe(401);
    await h.admin_({ method: 'POST', url: `/v1/tasks/${t.id}/cancel` });
  });

  it('ends its exec stream as a client that went away would: the command is killed', async () => {
    const execer = key('execer', 'admin');
    const res = await fetch(`${base}/v1/boxes/${boxId}/exec`, {
      method: 'POST',
      headers: { 'x-api-key': execer.secret, 'content-type': 'application/json' },
      body: JSON.stringify({ argv: ['sh', '-c', 'while true; do echo x; sleep 0.2; done'] }),
    });
    expect(res.status).toBe(200);
    const body = reader(res);
    const head = lines(await body.until((text) => lines(text).some((e) => e.type === 'stdout')));
    const pid = head.find((e) => e.type === 'started')!.pid as number;
    expect(processGone(pid)).toBe(false);

    h.host.keys.revoke(execer.key.id);
    const all = lines(await body.rest());
    expect(all.at(-1)).toMatchObject(REVOKED_LINE);
    expect(all.some((e) => e.type === 'exit')).toBe(false);
    await vi.waitFor(() => expect(processGone(pid), 'the command still runs').toBe(true));
  });

  it('sees a revocation another process wrote (the CLI’s): the seed task stream ends too', async () => {
    const erin = key('erin', 'user');
    h.host.tasks.setMaxConcurrent(0);
    try {
      const res = await fetch(`${base}/claude_in_the_box`, {
        method: 'POST',
        headers: { 'x-api-key': erin.secret, 'content-type': 'application/json' },
        body: JSON.stringify({ user_id: 'erin-user', task: 'hello' }),
      });
      expect(res.status).toBe(200);
      const id = res.headers.get('x-agentbox-task-id')!;
      // `agentbox keys revoke` opens the same database on its own connection.
      const cli = openDatabase(h.dataDir);
      try {
        createKeyStore(cli).revoke(erin.key.id);
      } finally {
        cli.close();
      }
      const last = lines(await reader(res).rest()).at(-1);
      expect(last).toMatchObject({ type: 'error', content: expect.stringContaining('revoked') });
      await vi.waitFor(async () =>
        expect(await task(id)).toMatchObject({ state: 'failed', error: { code: 'key_revoked' } }),
      );
    } finally {
      h.host.tasks.setMaxConcurrent(2);
    }
  });

  it('answers 401 to a request it made that was still running (exec without a stream)', async () => {
    const execer = key('collector', 'admin');
    const pending = h.call({
      method: 'POST',
      url: `/v1/boxes/${boxId}/exec?stream=false`,
      headers: { 'x-api-key': execer.secret },
      payload: { command: 'sleep 30' },
    });
    await new Promise((r) => setTimeout(r, 4 * CHECK_MS));
    h.host.keys.revoke(execer.key.id);
    const answer = await pending;
    expect(answer.statusCode).toBe(401);
    expect(errorCode(answer)).toBe('unauthorized');
    expect(answer.json()).toMatchObject({ error: { details: { reason: 'key_revoked' } } });
  });

  it('acts on nothing a request asked once its key was revoked while the body was still arriving', async () => {
    const slow = key('slow', 'admin');
    const body = new PassThrough();
    const pending = h.call({
      method: 'POST',
      url: `/v1/boxes/${boxId}/exec?stream=false`,
      headers: { 'x-api-key': slow.secret, 'content-type': 'application/json' },
      payload: body,
    });
    body.write('{"command": "echo ran > after-revoke.txt; echo ');
    await new Promise((r) => setTimeout(r, 2 * CHECK_MS));
    h.host.keys.revoke(slow.key.id);
    // Several key checks go by before the body is done.
    await new Promise((r) => setTimeout(r, 6 * CHECK_MS));
    body.end('done"}');
    const answer = await pending;
    expect(answer.statusCode).toBe(401);
    expect(answer.json()).toMatchObject({ error: { details: { reason: 'key_revoked' } } });
    expect(fs.existsSync(path.join(h.dataDir, 'guest', boxId, 'workspace', 'after-revoke.txt'))).toBe(false);
  });

  it('lands no upload whose key was revoked while its bytes were arriving', async () => {
    const uploader = key('uploader', 'admin');
    const body = new PassThrough();
    const pending = h.call({
      method: 'PUT',
      url: `/v1/boxes/${boxId}/files?path=revoked-upload.txt`,
      headers: { 'x-api-key': uploader.secret, 'content-type': 'application/octet-stream' },
      payload: body,
    });
    body.write('part1-');
    await new Promise((r) => setTimeout(r, 2 * CHECK_MS));
    h.host.keys.revoke(uploader.key.id);
    await new Promise((r) => setTimeout(r, 6 * CHECK_MS));
    body.end('part2-after-revocation');
    const answer = await pending;
    expect(answer.statusCode).toBe(401);
    expect(answer.json()).toMatchObject({ error: { details: { reason: 'key_revoked' } } });
    expect(fs.existsSync(path.join(h.dataDir, 'guest', boxId, 'workspace', 'revoked-upload.txt'))).toBe(
      false,
    );
  });

  it('fails its queued task `key_revoked`; the task never starts and gets no box', async () => {
    const alice = key('alice', 'user');
    // Nothing may start: the task waits in the queue.
    h.host.tasks.setMaxConcurrent(0);
    try {
      // No boxId: it would run in a fresh box, made when it starts.
      const t = await submit(alice.secret, { prompt: 'echo should never run' });
      expect((await task(t.id)).state).toBe('queued');
      h.host.keys.revoke(alice.key.id);
      await vi.waitFor(async () =>
        expect(await task(t.id)).toMatchObject({ state: 'failed', error: { code: 'key_revoked' } }),
      );
      const list = await events(t.id);
      expect(list.at(-1)).toMatchObject({ type: 'error', content: { code: 'key_revoked' } });
      expect(list.some((e) => (e.content as { state?: string }).state === 'running')).toBe(false);
      h.host.tasks.setMaxConcurrent(2);
      await new Promise((r) => setTimeout(r, 4 * CHECK_MS));
      expect(await task(t.id)).toMatchObject({ state: 'failed', startedAt: null, boxId: null });
      expect(h.host.store.list().filter((b) => b.labels['agentbox.task'] === t.id)).toEqual([]);
    } finally {
      h.host.tasks.setMaxConcurrent(2);
    }
  });

  it('fails a queued task whose key was revoked since the last check when its turn comes', async () => {
    const bob = key('bob', 'user');
    h.host.tasks.setMaxConcurrent(0);
    let id: string;
    try {
      id = (await submit(bob.secret, { prompt: 'echo should never run' })).id;
      // Its turn comes before any sweep could run: the start itself checks the key.
      h.host.keys.revoke(bob.key.id);
    } finally {
      h.host.tasks.setMaxConcurrent(2);
    }
    await vi.waitFor(async () =>
      expect(await task(id)).toMatchObject({ state: 'failed', error: { code: 'key_revoked' } }),
    );
    expect(await task(id)).toMatchObject({ startedAt: null, boxId: null });
    expect(h.host.store.list().filter((b) => b.labels['agentbox.task'] === id)).toEqual([]);
  });

  it('stops its running task: `key_revoked`, the agent killed, its fresh box deleted', async () => {
    const carol = key('carol', 'user');
    const t = await submit(carol.secret, { prompt: 'echo started; sleep 30' });
    await vi.waitFor(async () => {
      const list = await events(t.id);
      expect(list.some((e) => e.type === 'text' && e.content === 'started')).toBe(true);
    });
    const { boxId: taskBox } = await task(t.id);
    expect(taskBox).not.toBeNull();

    h.host.keys.revoke(carol.key.id);
    await vi.waitFor(async () =>
      expect(await task(t.id)).toMatchObject({ state: 'failed', error: { code: 'key_revoked' } }),
    );
    expect((await events(t.id)).at(-1)).toMatchObject({ type: 'error', content: { code: 'key_revoked' } });
    await vi.waitFor(() => expect(h.host.store.get(taskBox!)!.state).toBe('deleted'));
  });

  it('recover() fails its queued task instead of queueing it again; another key’s goes back in the queue', async () => {
    const dave = key('dave', 'user');
    const spec = TaskSpecSchema.parse({ agent: 'shell', prompt: 'echo again' });
    // As an earlier daemon left them: queued, one of them by a key revoked while it was down.
    const record = (id: string, ownerKeyId: string) =>
      h.host.taskStore.insert({
        id,
        ownerKeyId,
        target: 'ephemeral',
        boxId: null,
        userId: null,
        agent: 'shell',
        spec,
      });
    record('task-of-revoked', dave.key.id);
    record('task-of-active', h.host.keys.list().find((k) => k.name === 'test admin')!.id);
    h.host.keys.revoke(dave.key.id);

    const recovered = await h.host.tasks.recover();
    expect(recovered.failed).toEqual(['task-of-revoked']);
    expect(recovered.requeued).toEqual(['task-of-active']);
    expect(await task('task-of-revoked')).toMatchObject({
      state: 'failed',
      startedAt: null,
      error: { code: 'key_revoked' },
    });
    await vi.waitFor(async () => expect((await task('task-of-active')).state).toBe('succeeded'));
    expect((await task('task-of-revoked')).state).toBe('failed');
    // The fresh box the other one ran in goes with it.
    const { boxId: ranIn } = await task('task-of-active');
    await vi.waitFor(() => expect(h.host.store.get(ranIn!)!.state).toBe('deleted'));
  });
});
