import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExecEvent } from '@agentbox/protocol';
import { errorCode, fakeHost, slowCreateBackend, type FakeHost } from '../helpers/fake-host.js';

const events = (body: string) =>
  body
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as ExecEvent);
const text = (list: ExecEvent[], type: 'stdout' | 'stderr') =>
  Buffer.concat(list.flatMap((e) => (e.type === type ? [Buffer.from(e.data, 'base64')] : []))).toString();

describe('/v1 boxes over the fake driver: exec, files, processes, lifecycle', () => {
  let h: FakeHost;
  let id: string;
  beforeAll(async () => {
    h = await fakeHost();
    const r = await h.admin_({
      method: 'POST',
      url: '/v1/boxes',
      payload: { labels: { team: 'a' }, env: { GREETING: 'hello' }, memoryMib: 512, ttlSeconds: 3600 },
    });
    expect(r.statusCode).toBe(201);
    expect(r.json()).toMatchObject({ state: 'running', labels: { team: 'a' }, memoryMib: 512, vcpus: 1 });
    id = r.json<{ id: string }>().id;
  });
  afterAll(() => h.close());

  it('streams exec events as NDJSON: started, stdout/stderr in base64, exit', async () => {
    const r = await h.admin_({
      method: 'POST',
      url: `/v1/boxes/${id}/exec`,
      payload: { command: 'echo "$GREETING $EXTRA"; echo oops >&2; exit 3', env: { EXTRA: 'world' } },
    });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toMatch(/application\/x-ndjson/);
    const list = events(r.body);
    expect(list[0]).toMatchObject({ type: 'started' });
    expect(list.at(-1)).toMatchObject({ type: 'exit', exitCode: 3, signal: null, timedOut: false });
    expect(text(list, 'stdout')).toBe('hello world\n');
    expect(text(list, 'stderr')).toBe('oops\n');
  });

  it('collects output with stream=false, runs argv without a shell, feeds stdin, honours timeouts', async () => {
    const r = await h.admin_({
      method: 'POST',
      url: `/v1/boxes/${id}/exec?stream=false`,
      payload: { argv: ['cat'], stdin: Buffer.from('fed in').toString('base64') },
    });
    expect(r.json()).toMatchObject({
      exitCode: 0,
      truncated: false,
      stdout: Buffer.from('fed in').toString('base64'),
    });
    const slow = await h.admin_({
      method: 'POST',
      url: `/v1/boxes/${id}/exec?stream=false`,
      payload: { command: 'sleep 30', timeoutMs: 200 },
    });
    expect(slow.json()).toMatchObject({ timedOut: true });
  });

  it('runs in the workspace by default', async () => {
    const r = await h.admin_({
      method: 'POST',
      url: `/v1/boxes/${id}/exec?stream=false`,
      payload: { command: 'pwd' },
    });
    expect(Buffer.from(r.json<{ stdout: string }>().stdout, 'base64').toString().trim()).toMatch(
      /\/workspace$/,
    );
  });

  it('uploads, lists, downloads and deletes files', async () => {
    const bytes = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251));
    const put = await h.admin_({
      method: 'PUT',
      url: `/v1/boxes/${id}/files?path=dir/data.bin`,
      payload: bytes,
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(put.statusCode).toBe(200);
    expect(put.json()).toMatchObject({
      bytes: bytes.length,
      path: expect.stringMatching(/\/workspace\/dir\/data\.bin$/),
    });
    const got = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/files?path=dir/data.bin` });
    expect(got.headers['content-type']).toBe('application/octet-stream');
    expect(got.rawPayload.equals(bytes)).toBe(true);
    const listing = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/files?path=dir` });
    expect(listing.json()).toMatchObject({
      entries: [{ name: 'data.bin', type: 'file', size: bytes.length }],
      omitted: 0,
    });
    const empty = await h.admin_({
      method: 'PUT',
      url: `/v1/boxes/${id}/files?path=empty.txt`,
      payload: '',
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(empty.json()).toMatchObject({ bytes: 0 });
    expect((await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/files?path=empty.txt` })).body).toBe('');
    // Symlinks: to a directory → its listing; to a file → the file; dangling → 404.
    await h.admin_({
      method: 'POST',
      url: `/v1/boxes/${id}/exec?stream=false`,
      payload: { command: 'ln -s dir dirlink && ln -s dir/data.bin filelink && ln -s nowhere dangling' },
    });
    const viaDirLink = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/files?path=dirlink` });
    expect(viaDirLink.json()).toMatchObject({ entries: [{ name: 'data.bin', type: 'file' }] });
    const viaFileLink = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/files?path=filelink` });
    expect(viaFileLink.rawPayload.equals(bytes)).toBe(true);
    const dangling = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/files?path=dangling` });
    expect(errorCode(dangling)).toBe('file_not_found');
    const del = await h.admin_({ method: 'DELETE', url: `/v1/boxes/${id}/files?path=dir` });
    expect(del.json()).toMatchObject({ deleted: true });
    const gone = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/files?path=dir/data.bin` });
    expect(errorCode(gone)).toBe('file_not_found');
  });

  it('lists and kills processes', async () => {
    const marker = `agentbox-v1-${process.pid}`;
    const running = h.admin_({
      method: 'POST',
      url: `/v1/boxes/${id}/exec?stream=false`,
      payload: { argv: ['bash', '-c', `exec -a ${marker} sleep 30`] },
    });
    let target: { pid: number } | undefined;
    for (let i = 0; i < 50 && !target; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const list = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/processes` });
      target = list
        .json<{ processes: { pid: number; command: string }[] }>()
        .processes.find((p) => p.command.startsWith(marker));
    }
    expect(target).toBeDefined();
    const killed = await h.admin_({
      method: 'DELETE',
      url: `/v1/boxes/${id}/processes/${target!.pid}?signal=SIGTERM`,
    });
    expect(killed.json()).toEqual({ pid: target!.pid, signal: 'SIGTERM' });
    expect((await running).json()).toMatchObject({ signal: 'SIGTERM' });
  });

  it('deletes a box: state deleted, then gone from the list, its calls 409', async () => {
    const r = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} });
    const other = r.json<{ id: string }>().id;
    const del = await h.admin_({ method: 'DELETE', url: `/v1/boxes/${other}` });
    expect(del.json()).toMatchObject({ id: other, state: 'deleted', pid: null });
    const list = await h.admin_({ method: 'GET', url: '/v1/boxes' });
    expect(list.json<{ boxes: { id: string }[] }>().boxes.map((b) => b.id)).not.toContain(other);
    const exec = await h.admin_({
      method: 'POST',
      url: `/v1/boxes/${other}/exec`,
      payload: { command: 'true' },
    });
    expect(exec.statusCode).toBe(409);
    expect(errorCode(exec)).toBe('invalid_state');
    expect(errorCode(await h.admin_({ method: 'DELETE', url: `/v1/boxes/${other}` }))).toBe('box_not_found');
    expect(h.host.store.transitions(other).map((t) => t.to)).toEqual([
      'creating',
      'running',
      'stopped',
      'deleted',
    ]);
  });

  it('serves Prometheus metrics', async () => {
    const r = await h.admin_({ method: 'GET', url: '/metrics' });
    expect(r.statusCode).toBe(200);
    expect(r.body).toMatch(/agentbox_boxes\{state="running"\} 1/);
    expect(r.body).toMatch(/agentbox_box_boot_seconds_count [1-9]/);
    expect(r.body).toMatch(/agentbox_exec_total\{outcome="ok"\} [1-9]/);
    expect(r.body).toMatch(/agentbox_exec_total\{outcome="timeout"\} 1/);
    expect(r.body).toMatch(
      /agentbox_http_request_duration_seconds_count\{method="POST",route="\/v1\/boxes\/:id\/exec",status="200"\}/,
    );
  });
});

describe('capacity, TTL and dead VMs', () => {
  it('answers 429 capacity_exhausted when the host is full, and takes boxes again after a delete', async () => {
    const h = await fakeHost({ maxBoxes: 2 });
    try {
      const a = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} });
      await h.admin_({ method: 'POST', url: '/create_microvm', payload: { user_id: 'u', runtime: 'node' } });
      const full = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} });
      expect(full.statusCode).toBe(429);
      expect(errorCode(full)).toBe('capacity_exhausted');
      const seed = await h.admin_({
        method: 'POST',
        url: '/create_microvm',
        payload: { user_id: 'v', runtime: 'node' },
      });
      expect(errorCode(seed)).toBe('capacity_exhausted');
      expect(full.json()).toMatchObject({ error: { message: expect.stringMatching(/2 of at most 2/) } });
      // A user key learns the host is full, not how many boxes the other keys hold.
      const user = h.host.keys.create({ name: 'u', scope: 'user' }).secret;
      const refused = await h.call({
        method: 'POST',
        url: '/v1/boxes',
        headers: { 'x-api-key': user },
        payload: {},
      });
      expect(refused.statusCode).toBe(429);
      expect(refused.json()).toMatchObject({
        error: { code: 'capacity_exhausted', message: 'this host runs as many boxes as it may; retry later' },
      });
      expect(refused.json()).not.toHaveProperty('error.details');
      await h.admin_({ method: 'DELETE', url: `/v1/boxes/${a.json<{ id: string }>().id}` });
      expect((await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} })).statusCode).toBe(201);
    } finally {
      await h.close();
    }
  });

  it("makes no box while the host's disk is under its reserve, and says so to the operator only", async () => {
    let free = 1.5 * 1024 ** 3;
    const h = await fakeHost({ freeDiskBytes: () => free });
    try {
      const short = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} });
      expect(short.statusCode).toBe(429);
      expect(short.json()).toMatchObject({
        error: {
          code: 'capacity_exhausted',
          message:
            'this host has 1.5 GiB of disk free, under the 2.0 GiB it keeps free (serve --min-free-disk-gib); ' +
            'delete boxes or free disk space',
          details: { scope: 'host', resource: 'disk', freeBytes: free, minFreeBytes: 2 * 1024 ** 3 },
        },
      });
      const user = h.host.keys.create({ name: 'u', scope: 'user' }).secret;
      const seed = await h.call({
        method: 'POST',
        url: '/create_microvm',
        headers: { 'x-api-key': user },
        payload: { user_id: 'u1', runtime: 'node' },
      });
      expect(seed.statusCode).toBe(429);
      expect(seed.json()).toMatchObject({
        error: {
          code: 'capacity_exhausted',
          message: 'this host is short of disk space for another box; retry later',
        },
      });
      expect(seed.json()).not.toHaveProperty('error.details');
      expect(h.host.store.live()).toEqual([]);
      // Freed: boxes are made again.
      free = 50 * 1024 ** 3;
      expect((await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} })).statusCode).toBe(201);
    } finally {
      await h.close();
    }
    const off = await fakeHost({ freeDiskBytes: () => 0, minFreeDiskBytes: 0 });
    try {
      expect((await off.admin_({ method: 'POST', url: '/v1/boxes', payload: {} })).statusCode).toBe(201);
    } finally {
      await off.close();
    }
  });

  it('reaps boxes past their TTL on POST /maintenance and on its own timer', async () => {
    let now = Date.parse('2030-01-01T00:00:00Z');
    const h = await fakeHost({ clock: () => now, reapIntervalMs: 50 });
    try {
      const short = (await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { ttlSeconds: 60 } })).json<{
        id: string;
        expiresAt: string;
      }>();
      expect(short.expiresAt).toBe('2030-01-01T00:01:00.000Z');
      const long = (
        await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { ttlSeconds: 3600 } })
      ).json<{
        id: string;
      }>();
      now += 59_000;
      expect((await h.admin_({ method: 'POST', url: '/maintenance' })).json()).toEqual({
        checked: 2,
        reaped: [],
      });
      now += 2_000;
      const reaped = await h.admin_({ method: 'POST', url: '/maintenance' });
      expect(reaped.json()).toEqual({ checked: 2, reaped: [{ boxId: short.id, reason: 'ttl_expired' }] });
      expect(h.host.store.get(short.id)?.state).toBe('deleted');
      now += 3600_000;
      for (let i = 0; i < 100 && h.host.store.get(long.id)?.state !== 'deleted'; i++)
        await new Promise((r) => setTimeout(r, 20));
      expect(h.host.store.get(long.id)?.state).toBe('deleted');
    } finally {
      await h.close();
    }
  });

  it('marks a box whose VM died failed, and the seed user can get a new one', async () => {
    const h = await fakeHost();
    try {
      const made = await h.admin_({
        method: 'POST',
        url: '/create_microvm',
        payload: { user_id: 'eve', runtime: 'bash' },
      });
      const pid = made.json<{ pid: number }>().pid;
      const id = h.host.store.findLiveByUserOfAnyKey('eve')[0]!.id;
      process.kill(pid, 'SIGKILL');
      for (let i = 0; i < 100 && h.host.store.get(id)?.state !== 'failed'; i++)
        await new Promise((r) => setTimeout(r, 20));
      expect(h.host.store.get(id)).toMatchObject({
        state: 'failed',
        failureReason: 'the VM exited',
        pid: null,
      });
      const files = await h.admin_({ method: 'GET', url: '/list_workspace_files?user_id=eve' });
      expect(errorCode(files)).toBe('box_not_found');
      const again = await h.admin_({
        method: 'POST',
        url: '/create_microvm',
        payload: { user_id: 'eve', runtime: 'bash' },
      });
      expect(again.json()).toMatchObject({ status: 'created' });
    } finally {
      await h.close();
    }
  });
});

describe('a create whose client went away', () => {
  it('deletes the box it booted: nobody learned its id', async () => {
    // The client goes away while the box is made (once it is recorded: on a loaded host a fixed
    // timeout could end the request before the daemon had even read it).
    const h = await fakeHost({ backend: slowCreateBackend(300) });
    try {
      const address = await h.host.app.listen({ host: '127.0.0.1', port: 0 });
      const client = new AbortController();
      const request = fetch(`${address}/v1/boxes`, {
        method: 'POST',
        headers: { 'x-api-key': h.admin, 'content-type': 'application/json' },
        body: '{}',
        signal: client.signal,
      });
      await expect
        .poll(() => h.host.store.live().map((b) => b.state), { timeout: 10_000 })
        .toEqual(['creating']);
      client.abort();
      await expect(request).rejects.toThrow();
      await expect
        .poll(() => h.host.store.list({ includeDeleted: true }).map((b) => b.state), { timeout: 10_000 })
        .toEqual(['deleted']);
      expect(h.host.store.live()).toEqual([]);
    } finally {
      await h.close();
    }
  });
});
