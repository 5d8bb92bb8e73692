import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Command, CommandOutputEvent } from '@agentbox/protocol';
import { createCommandService, keepBytesFor } from '../../src/services/command-service.js';
import { createCommandStore } from '../../src/store/command-store.js';
import { openDatabase } from '../../src/store/db.js';
import { errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

const events = (body: string) =>
  body
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as CommandOutputEvent);
const text = (list: CommandOutputEvent[], type: 'stdout' | 'stderr') =>
  Buffer.concat(list.flatMap((e) => (e.type === type ? [Buffer.from(e.data, 'base64')] : []))).toString();
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

// Background commands over the fake driver: the real guest agent (a host process per box), the
// real routes, store and service. A command outlives its request, its readers and its daemon.
describe('/v1/boxes/:id/commands: background commands', () => {
  let h: FakeHost;
  let id: string;
  /** A file the test creates to let a command go on. */
  let go: string;
  beforeAll(async () => {
    h = await fakeHost();
    const r = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} });
    id = r.json<{ id: string }>().id;
    go = path.join(h.dataDir, 'go');
  });
  afterAll(async () => {
    // A test that failed midway leaves its command waiting for its go (a host process here).
    fs.writeFileSync(go, '');
    await new Promise((r) => setTimeout(r, 100));
    await h.close();
  });

  const start = async (payload: object) => {
    const r = await h.admin_({ method: 'POST', url: `/v1/boxes/${id}/commands`, payload });
    expect(r.statusCode, r.body).toBe(201);
    return r.json<Command>();
  };
  const get = async (commandId: string) =>
    (await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/commands/${commandId}` })).json<Command>();
  const output = async (commandId: string, query = '') => {
    const r = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/commands/${commandId}/output${query}` });
    expect(r.statusCode, r.body).toBe(200);
    return events(r.body);
  };

  it('runs past its request; its output is read so far, from offsets, and followed to its exit', async () => {
    const cmd = await start({
      command: `echo one; echo e1 >&2; i=0; while [ ! -e ${go} ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.02; done; echo two; exit 4`,
      env: { X: 'y' },
    });
    expect(cmd).toMatchObject({ state: 'running', argv: ['sh', '-c', expect.any(String)], exitCode: null });
    expect(cmd.id).toMatch(/^cmd-[0-9a-f]{12}$/);
    expect(alive(cmd.pid!)).toBe(true);
    await vi.waitFor(async () => expect(text(await output(cmd.id), 'stdout')).toBe('one\n'));

    const sofar = await output(cmd.id);
    expect(text(sofar, 'stderr')).toBe('e1\n');
    expect(sofar.at(-1)).toEqual({ type: 'running', stdoutOffset: 4, stderrOffset: 3 });
    // Read on from there: nothing new yet.
    expect(await output(cmd.id, '?stdoutOffset=4&stderrOffset=3')).toEqual([
      { type: 'running', stdoutOffset: 4, stderrOffset: 3 },
    ]);
    const list = (await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/commands` })).json<{
      commands: Command[];
    }>();
    expect(list.commands.map((c) => c.id)).toContain(cmd.id);

    const followed = h.admin_({
      method: 'GET',
      url: `/v1/boxes/${id}/commands/${cmd.id}/output?follow=true&stdoutOffset=4`,
    });
    fs.writeFileSync(go, '');
    const rest = events((await followed).body);
    fs.rmSync(go);
    expect(text(rest, 'stdout')).toBe('two\n');
    expect(text(rest, 'stderr')).toBe('e1\n');
    expect(rest.at(-1)).toMatchObject({ type: 'exit', exitCode: 4, signal: null, timedOut: false });
    // The host recorded the exit by itself (its own watch, not the reader's).
    await vi.waitFor(async () => expect(await get(cmd.id)).toMatchObject({ state: 'exited', exitCode: 4 }));
    expect((await get(cmd.id)).finishedAt).not.toBeNull();
    // After the exit, a read without follow ends with the exit too.
    expect((await output(cmd.id)).at(-1)).toMatchObject({ type: 'exit', exitCode: 4 });
  });

  it('a reader that goes away, or reads without follow, leaves the command running', async () => {
    const cmd = await start({ argv: ['sh', '-c', 'for i in $(seq 1 1200); do echo tick; sleep 0.05; done'] });
    const abort = new AbortController();
    const reading = h.admin_({
      method: 'GET',
      url: `/v1/boxes/${id}/commands/${cmd.id}/output?follow=true`,
      signal: abort.signal,
    });
    await new Promise((r) => setTimeout(r, 300));
    abort.abort();
    await reading.catch(() => undefined);
    await output(cmd.id);
    await new Promise((r) => setTimeout(r, 300));
    expect(alive(cmd.pid!)).toBe(true);
    expect((await get(cmd.id)).state).toBe('running');
    // Deleting it ends it and drops it.
    const del = await h.admin_({ method: 'DELETE', url: `/v1/boxes/${id}/commands/${cmd.id}` });
    expect(del.json()).toEqual({ id: cmd.id, deleted: true });
    await vi.waitFor(() => expect(alive(cmd.pid!)).toBe(false));
    const gone = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/commands/${cmd.id}` });
    expect(gone.statusCode).toBe(404);
    expect(errorCode(gone)).toBe('command_not_found');
  });

  it("a follow of a quiet command is answered at once (headers, its pid), not at the command's first output", async () => {
    const cmd = await start({
      command: `i=0; while [ ! -e ${go} ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.02; done; echo late`,
    });
    const address = await h.host.app.listen({ host: '127.0.0.1', port: 0 });
    // Resolves with the headers: before the go, the command has printed nothing.
    const response = await fetch(`${address}/v1/boxes/${id}/commands/${cmd.id}/output?follow=true`, {
      headers: { 'x-api-key': h.admin },
    });
    expect(response.status).toBe(200);
    expect(fs.existsSync(go)).toBe(false);
    fs.writeFileSync(go, '');
    const body = events(await response.text());
    expect(body[0]).toEqual({ type: 'started', pid: cmd.pid });
    expect(text(body, 'stdout')).toBe('late\n');
    expect(body.at(-1)).toMatchObject({ type: 'exit', exitCode: 0 });
    fs.rmSync(go);
  });

  it('takes input on its stdin when started with it open, until eof; refuses it otherwise', async () => {
    const cmd = await start({ command: 'cat; echo done', stdinOpen: true });
    const stdin = (commandId: string, payload: object) =>
      h.admin_({ method: 'POST', url: `/v1/boxes/${id}/commands/${commandId}/stdin`, payload });
    const b64 = (text: string) => Buffer.from(text).toString('base64');
    const sent = await stdin(cmd.id, { data: b64('hello\n') });
    expect(sent.statusCode, sent.body).toBe(200);
    expect(sent.json()).toEqual({ bytes: 6 });
    expect((await stdin(cmd.id, { data: b64('bye\n'), eof: true })).json()).toEqual({ bytes: 4 });
    await vi.waitFor(async () => expect((await get(cmd.id)).state).toBe('exited'));
    const out = await output(cmd.id);
    expect(text(out, 'stdout')).toBe('hello\nbye\ndone\n');
    expect(out.at(-1)).toMatchObject({ type: 'exit', exitCode: 0 });
    // Ended; never open; not base64; no such command; both stdin and stdinOpen.
    const ended = await stdin(cmd.id, { data: b64('x') });
    expect([ended.statusCode, errorCode(ended)]).toEqual([409, 'invalid_state']);
    const closed = await start({ command: 'sleep 30' });
    const never = await stdin(closed.id, { data: b64('x') });
    expect([never.statusCode, errorCode(never)]).toEqual([409, 'invalid_state']);
    expect(never.json<{ error: { message: string } }>().error.message).toMatch(/stdin .* is not open/);
    expect(errorCode(await stdin(closed.id, { data: 'not base64!' }))).toBe('invalid_request');
    const missing = await stdin('cmd-000000000000', { eof: true });
    expect([missing.statusCode, errorCode(missing)]).toEqual([404, 'command_not_found']);
    const both = await h.admin_({
      method: 'POST',
      url: `/v1/boxes/${id}/commands`,
      payload: { argv: ['cat'], stdin: b64('x'), stdinOpen: true },
    });
    expect(errorCode(both)).toBe('invalid_request');
    await h.admin_({ method: 'DELETE', url: `/v1/boxes/${id}/commands/${closed.id}` });
  });

  it('a program that cannot start is a command that exited 127, its reason in its stderr', async () => {
    const cmd = await start({ argv: ['no-such-program-here'] });
    expect(cmd).toMatchObject({ state: 'exited', exitCode: 127, pid: null });
    const out = await output(cmd.id);
    expect(text(out, 'stderr')).toBe('agentbox: no-such-program-here: command not found\n');
    expect(out.at(-1)).toMatchObject({ type: 'exit', exitCode: 127 });
  });

  it('keeps only about the last keepOutputBytes of its output: a read from 0 is told what was skipped', async () => {
    const MiB = 1024 * 1024;
    const cmd = await start({
      command: `head -c ${6 * MiB} /dev/zero | tr '\\0' x; printf END; i=0; while [ ! -e ${go} ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.02; done`,
      keepOutputBytes: MiB,
    });
    let out: CommandOutputEvent[] = [];
    await vi.waitFor(
      async () => {
        out = await output(cmd.id);
        expect(out.find((e) => e.type === 'skipped')).toBeDefined();
        expect(text(out, 'stdout').endsWith('END')).toBe(true);
      },
      { timeout: 10_000, interval: 200 },
    );
    const skipped = out.find((e) => e.type === 'skipped') as { stream: string; offset: number };
    expect(skipped.stream).toBe('stdout');
    expect(skipped.offset).toBeGreaterThanOrEqual(3 * MiB);
    const kept = text(out, 'stdout');
    expect(kept.length).toBe(6 * MiB + 3 - skipped.offset);
    expect(/^x+END$/.test(kept)).toBe(true);
    expect(out.at(-1)).toEqual({ type: 'running', stdoutOffset: 6 * MiB + 3, stderrOffset: 0 });
    const small = await h.admin_({
      method: 'POST',
      url: `/v1/boxes/${id}/commands`,
      payload: { argv: ['true'], keepOutputBytes: 1000 },
    });
    expect(errorCode(small)).toBe('invalid_request');
    fs.writeFileSync(go, '');
    await vi.waitFor(async () => expect((await get(cmd.id)).state).toBe('exited'));
    fs.rmSync(go);
  });

  it('a box whose agent predates exec.keep keeps all output: the default goes unsaid, an explicit ask is refused', () => {
    expect(keepBytesFor(true, 'b', undefined)).toEqual({ keepBytes: 32 * 1024 * 1024 });
    expect(keepBytesFor(true, 'b', 2 * 1024 * 1024)).toEqual({ keepBytes: 2 * 1024 * 1024 });
    expect(keepBytesFor(false, 'b', undefined)).toEqual({});
    expect(() => keepBytesFor(false, 'b', 2 * 1024 * 1024)).toThrow(
      expect.objectContaining({ code: 'not_implemented' }) as Error,
    );
  });

  it('a daemon that starts watches what the last one left running, and records its exit', async () => {
    const cmd = await start({
      command: `i=0; while [ ! -e ${go} ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.02; done; exit 6`,
    });
    // This daemon stops watching (as at its stop); the command runs on.
    h.host.commands.stopAll();
    const db = openDatabase(h.dataDir);
    try {
      const next = createCommandService({
        store: createCommandStore(db, Date.now),
        boxes: h.host.boxes,
        log: { info: () => undefined, warn: () => undefined, error: () => undefined } as never,
      });
      expect(next.recover()).toBe(1);
      fs.writeFileSync(go, '');
      await vi.waitFor(() =>
        expect(next.get({ actor: { keyId: 'x', scope: 'admin' }, id, commandId: cmd.id })).toMatchObject({
          state: 'exited',
          exitCode: 6,
        }),
      );
      fs.rmSync(go);
    } finally {
      db.close();
    }
  });
});

describe('background commands: bad input and other boxes', () => {
  let h: FakeHost;
  let id: string;
  beforeAll(async () => {
    h = await fakeHost();
    id = (await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} })).json<{ id: string }>().id;
  });
  afterAll(() => h.close());

  it('refuses a bad id, a command of another box, a box of another key, a missing cwd', async () => {
    const bad = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/commands/cmd-../output` });
    expect(bad.statusCode).toBe(400);
    const missing = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/commands/cmd-0123456789ab` });
    expect(errorCode(missing)).toBe('command_not_found');
    const other = (await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} })).json<{ id: string }>()
      .id;
    const cmd = (
      await h.admin_({ method: 'POST', url: `/v1/boxes/${other}/commands`, payload: { argv: ['true'] } })
    ).json<Command>();
    const crossed = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/commands/${cmd.id}` });
    expect(errorCode(crossed)).toBe('command_not_found');
    const user = h.host.keys.create({ name: 'user', scope: 'user' }).secret;
    const foreign = await h.call({
      method: 'GET',
      url: `/v1/boxes/${other}/commands`,
      headers: { 'x-api-key': user },
    });
    expect(errorCode(foreign)).toBe('box_not_found');
    const nowhere = await h.admin_({
      method: 'POST',
      url: `/v1/boxes/${id}/commands`,
      payload: { argv: ['true'], cwd: '/no/such/dir' },
    });
    expect(nowhere.statusCode).toBe(404);
    expect(errorCode(nowhere)).toBe('file_not_found');
    const both = await h.admin_({
      method: 'POST',
      url: `/v1/boxes/${id}/commands`,
      payload: { argv: ['true'], command: 'true' },
    });
    expect(errorCode(both)).toBe('invalid_request');
  });

  it('holds its box awake while it runs (no idle pause: a server would freeze), and lets it pause after', async () => {
    const idle = await fakeHost({ idle: { pauseAfterMs: 300, hibernateAfterMs: 0, checkEveryMs: 50 } });
    try {
      const box = (await idle.admin_({ method: 'POST', url: '/v1/boxes', payload: {} })).json<{
        id: string;
      }>().id;
      const cmd = (
        await idle.admin_({
          method: 'POST',
          url: `/v1/boxes/${box}/commands`,
          payload: { command: 'sleep 1.2; echo done' },
        })
      ).json<Command>();
      await new Promise((r) => setTimeout(r, 900));
      expect(idle.host.store.get(box)!.state).toBe('running');
      await vi.waitFor(() => expect(idle.host.store.get(box)!.state).toBe('paused'), { timeout: 3000 });
      const done = (
        await idle.admin_({ method: 'GET', url: `/v1/boxes/${box}/commands/${cmd.id}` })
      ).json<Command>();
      expect(done).toMatchObject({ state: 'exited', exitCode: 0 });
    } finally {
      await idle.close();
    }
  });

  it('deleting the box drops its commands', async () => {
    const box = (await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} })).json<{ id: string }>().id;
    const cmd = (
      await h.admin_({ method: 'POST', url: `/v1/boxes/${box}/commands`, payload: { argv: ['sleep', '30'] } })
    ).json<Command>();
    expect(alive(cmd.pid!)).toBe(true);
    await h.admin_({ method: 'DELETE', url: `/v1/boxes/${box}` });
    const gone = await h.admin_({ method: 'GET', url: `/v1/boxes/${box}/commands/${cmd.id}` });
    expect(gone.statusCode).toBe(404);
    const db = openDatabase(h.dataDir);
    try {
      expect(createCommandStore(db, Date.now).get(cmd.id)).toBeUndefined();
    } finally {
      db.close();
    }
  });
});
