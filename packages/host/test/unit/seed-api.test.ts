import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { errorCode, fakeHost, slowCreateBackend, type FakeHost } from '../helpers/fake-host.js';

describe('seed API shapes over the fake driver', () => {
  let h: FakeHost;
  beforeAll(async () => {
    h = await fakeHost();
  });
  afterAll(() => h.close());

  it('creates one persistent box per user, then says it exists', async () => {
    const created = await h.admin_({
      method: 'POST',
      url: '/create_microvm',
      payload: { user_id: 'alice', runtime: 'python', env_vars: { GREETING: 'hi' } },
    });
    expect(created.statusCode).toBe(200);
    expect(created.json()).toEqual({ status: 'created', vm_ip: null, pid: expect.any(Number) });
    const again = await h.admin_({
      method: 'POST',
      url: '/create_microvm',
      payload: { user_id: 'alice', runtime: 'python', env_vars: {} },
    });
    expect(again.json()).toEqual({ status: 'exists', vm_ip: null, pid: created.json<{ pid: number }>().pid });
  });

  it('lists and downloads workspace files', async () => {
    const box = h.host.store.findLiveByUserOfAnyKey('alice')[0]!;
    const ws = path.join(h.dataDir, 'guest', box.id, 'workspace');
    fs.mkdirSync(path.join(ws, 'src', 'node_modules', 'x'), { recursive: true });
    fs.writeFileSync(path.join(ws, 'hello.py'), 'print("hello")\n');
    fs.writeFileSync(path.join(ws, 'src', 'main.py'), 'x = 1\n');
    fs.writeFileSync(path.join(ws, 'src', 'node_modules', 'x', 'index.js'), '');
    const list = await h.admin_({ method: 'GET', url: '/list_workspace_files?user_id=alice' });
    expect(list.json()).toEqual({ files: ['hello.py', 'src/main.py'] });
    const file = await h.admin_({ method: 'GET', url: '/download_file?user_id=alice&filename=hello.py' });
    expect(file.statusCode).toBe(200);
    expect(file.headers['content-type']).toBe('application/octet-stream');
    expect(file.body).toBe('print("hello")\n');
  });

  it('reads through symlinks as /v1 does, and counts names that are not valid UTF-8', async () => {
    const box = h.host.store.findLiveByUserOfAnyKey('alice')[0]!;
    const ws = path.join(h.dataDir, 'guest', box.id, 'workspace');
    fs.mkdirSync(path.join(ws, 'links', 'data'), { recursive: true });
    fs.writeFileSync(path.join(ws, 'links', 'data', 'real.txt'), 'real\n');
    // Outside the workspace: /v1 follows such a link (the VM is the boundary), so the seed does too.
    fs.writeFileSync(path.join(h.dataDir, 'outside.txt'), 'outside\n');
    fs.symlinkSync('data/real.txt', path.join(ws, 'links', 'to-file'));
    fs.symlinkSync(path.join(h.dataDir, 'outside.txt'), path.join(ws, 'links', 'to-outside'));
    fs.symlinkSync('data', path.join(ws, 'links', 'to-dir'));
    fs.symlinkSync('.', path.join(ws, 'links', 'to-self'));
    fs.symlinkSync('nowhere', path.join(ws, 'links', 'dangling'));
    // "caf\xe9": Latin-1, not UTF-8; JSON cannot carry it.
    fs.writeFileSync(Buffer.concat([Buffer.from(`${ws}/links/caf`), Buffer.from([0xe9])]), '');

    const list = await h.admin_({ method: 'GET', url: '/list_workspace_files?user_id=alice' });
    expect(list.statusCode).toBe(200);
    // Links to directories are not descended into: `to-self` would repeat the tree.
    expect(list.json()).toEqual({
      files: ['hello.py', 'links/data/real.txt', 'links/to-file', 'links/to-outside', 'src/main.py'],
      omitted: 1,
    });
    const v1 = await h.admin_({ method: 'GET', url: `/v1/boxes/${box.id}/files?path=links` });
    expect(v1.json()).toMatchObject({ omitted: 1 });

    const download = (filename: string) =>
      h.admin_({
        method: 'GET',
        url: `/download_file?user_id=alice&filename=${encodeURIComponent(filename)}`,
      });
    expect((await download('links/to-file')).body).toBe('real\n');
    expect((await download('links/to-outside')).body).toBe('outside\n');
    expect((await download('links/to-dir/real.txt')).body).toBe('real\n');
    for (const filename of ['links/to-dir', 'links/dangling', 'links']) {
      const r = await download(filename);
      expect(r.statusCode).toBe(404);
      expect(errorCode(r)).toBe('file_not_found');
    }
    fs.rmSync(path.join(ws, 'links'), { recursive: true });
  });

  it('refuses traversal and absolute paths with path_outside_workspace', async () => {
    for (const filename of ['../etc/passwd', '/etc/passwd', 'a/../../b', '..']) {
      const r = await h.admin_({
        method: 'GET',
        url: `/download_file?user_id=alice&filename=${encodeURIComponent(filename)}`,
      });
      expect(r.statusCode).toBe(400);
      expect(errorCode(r)).toBe('path_outside_workspace');
    }
  });

  it('lists processes in the seed shape', async () => {
    const r = await h.admin_({ method: 'GET', url: '/list_processes?user_id=alice' });
    expect(r.statusCode).toBe(200);
    const { processes } = r.json<{ processes: { pid: number; cmd: string; args: string[] }[] }>();
    expect(processes.length).toBeGreaterThan(0);
  });

  it('reports status, then kills the box', async () => {
    const status = await h.admin_({ method: 'GET', url: '/status' });
    expect(status.statusCode).toBe(200);
    expect(status.json()).toMatchObject({
      active_microvms: 1,
      microvms: { alice: { alive: true, ip: null } },
    });
    const killed = await h.admin_({ method: 'POST', url: '/kill_microvm', payload: { user_id: 'alice' } });
    expect(killed.json()).toEqual({ status: 'killed', user_id: 'alice' });
    const gone = await h.admin_({ method: 'POST', url: '/kill_microvm', payload: { user_id: 'alice' } });
    expect(gone.statusCode).toBe(404);
    expect(errorCode(gone)).toBe('box_not_found');
  });

  it('answers /health without a key; claude_in_the_box checks its body', async () => {
    const health = await h.call({ method: 'GET', url: '/health' });
    expect(health.statusCode).toBe(200);
    expect(health.json()).toMatchObject({ status: 'ok' });
    const task = await h.admin_({ method: 'POST', url: '/claude_in_the_box', payload: { user_id: 'alice' } });
    expect(task.statusCode).toBe(400);
    expect(errorCode(task)).toBe('invalid_request');
    expect(task.body).toContain('task');
    const empty = await h.admin_({
      method: 'POST',
      url: '/claude_in_the_box',
      payload: { user_id: 'alice', task: ' ', files: { '../x': 'y' } },
    });
    expect(empty.statusCode).toBe(400);
    expect(empty.body).toMatch(/files|task/);
  });
});

describe('seed API under parallel calls', () => {
  it('two parallel /create_microvm for one user: one creates, the other gets the same box as existing', async () => {
    // Both calls look the user up before either records a box.
    const h = await fakeHost({ backend: slowCreateBackend(50) });
    try {
      const create = () =>
        h.admin_({ method: 'POST', url: '/create_microvm', payload: { user_id: 'dora', runtime: 'bash' } });
      const answers = await Promise.all([create(), create()]);
      for (const r of answers) expect(r.statusCode, r.body).toBe(200);
      expect(answers.map((r) => r.json<{ status: string }>().status).sort()).toEqual(['created', 'exists']);
      expect(h.host.store.list({}).filter((b) => b.userId === 'dora')).toHaveLength(1);
    } finally {
      await h.close();
    }
  });
});
