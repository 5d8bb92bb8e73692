import { afterEach, describe, expect, it } from 'vitest';
import type { Box, ExecResult } from '@agentbox/protocol';
import { FakeBackend } from '@agentbox/vm/fake';
import type { Vm, VmSpec } from '@agentbox/vm';
import type { BoxBackend } from '../../src/index.js';
import { agentBundlePath, errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

const admin = { keyId: 'admin', scope: 'admin' as const };
const hosts: FakeHost[] = [];
afterEach(async () => {
  for (const h of hosts.splice(0)) await h.close();
});

async function start(options: Parameters<typeof fakeHost>[0] = {}): Promise<FakeHost> {
  const h = await fakeHost(options);
  hosts.push(h);
  return h;
}

async function createBox(h: FakeHost, body: object = {}): Promise<Box> {
  const r = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: body });
  expect(r.statusCode, r.body).toBe(201);
  return r.json<Box>();
}

async function exec(h: FakeHost, id: string, command: string): Promise<ExecResult> {
  const r = await h.admin_({
    method: 'POST',
    url: `/v1/boxes/${id}/exec?stream=false`,
    payload: { command },
  });
  expect(r.statusCode, r.body).toBe(200);
  return r.json<ExecResult>();
}

const stateOf = (h: FakeHost, id: string) => h.host.store.get(id)!.state;
const out = (r: ExecResult) => Buffer.from(r.stdout, 'base64').toString();

/**
 * A fake backend that can "hibernate": the agent process ends (the fake guest's files live on the
 * host, so they stay) and a wake starts a new one. It exercises the daemon's wake path, including
 * the fall-back to a disk boot when the snapshot does not restore.
 */
class FakeWithSnapshots implements BoxBackend {
  readonly snapshots = new Set<string>();
  readonly starts: (string | undefined)[] = [];
  failWakes = false;
  private readonly fake = new FakeBackend({ agentBundlePath });

  hibernation(id: string): unknown {
    return this.snapshots.has(id) ? {} : undefined;
  }

  async create(spec: VmSpec): Promise<Vm> {
    const vm = await this.fake.create(spec);
    const kind = spec.restoreFrom?.kind;
    this.starts.push(kind);
    const snapshots = this.snapshots;
    const failWakes = this.failWakes;
    return new Proxy(vm, {
      get(target, prop) {
        if (prop === 'hibernate')
          return async () => {
            await target.kill();
            snapshots.add(spec.id);
            return { stateBytes: 1, ms: 1 };
          };
        if (prop === 'start' && kind === 'hibernation') {
          snapshots.delete(spec.id);
          if (failWakes) return () => Promise.reject(new Error('snapshot does not load'));
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  }
}

describe('pause, resume, hibernate and the idle policy (fake driver)', () => {
  it('pauses and resumes on request; a request to a paused box resumes it transparently', async () => {
    const h = await start({ idle: { pauseAfterMs: 0 } });
    const box = await createBox(h);
    const paused = await h.admin_({ method: 'POST', url: `/v1/boxes/${box.id}/pause` });
    expect(paused.json<Box>()).toMatchObject({ id: box.id, state: 'paused' });
    // Idempotent.
    expect((await h.admin_({ method: 'POST', url: `/v1/boxes/${box.id}/pause` })).json<Box>().state).toBe(
      'paused',
    );
    expect(out(await exec(h, box.id, 'echo back'))).toBe('back\n');
    expect(stateOf(h, box.id)).toBe('running');
    await h.admin_({ method: 'POST', url: `/v1/boxes/${box.id}/pause` });
    const resumed = await h.admin_({ method: 'POST', url: `/v1/boxes/${box.id}/resume` });
    expect(resumed.json<Box>().state).toBe('running');
    const transitions = h.host.store.transitions(box.id).map((t) => `${t.to}:${t.reason ?? ''}`);
    expect(transitions).toEqual([
      'creating:',
      'running:',
      'paused:paused by request',
      'running:used',
      'paused:paused by request',
      'running:resumed by request',
    ]);
  });

  it('an exec stream in flight survives a pause and finishes after the resume', async () => {
    const h = await start({ idle: { pauseAfterMs: 0 } });
    const box = await createBox(h);
    const running = exec(h, box.id, 'for i in 1 2 3 4; do echo $i; sleep 0.2; done');
    await new Promise((r) => setTimeout(r, 250));
    await h.host.boxes.pause({ actor: admin, id: box.id });
    await new Promise((r) => setTimeout(r, 600));
    await h.host.boxes.resume({ actor: admin, id: box.id });
    const result = await running;
    expect(result.exitCode).toBe(0);
    expect(out(result)).toBe('1\n2\n3\n4\n');
  });

  it('pauses a box nobody uses, never one with a command running, and resumes it on the next use', async () => {
    const h = await start({ idle: { pauseAfterMs: 300, hibernateAfterMs: 0, checkEveryMs: 50 } });
    const box = await createBox(h);
    // A command longer than the idle time holds the box.
    expect(out(await exec(h, box.id, 'sleep 0.8; echo done'))).toBe('done\n');
    expect(stateOf(h, box.id)).toBe('running');
    await new Promise((r) => setTimeout(r, 700));
    expect(stateOf(h, box.id)).toBe('paused');
    expect(h.host.store.transitions(box.id).at(-1)).toMatchObject({ to: 'paused', reason: 'idle' });
    // File calls wake it too.
    const put = await h.admin_({
      method: 'PUT',
      url: `/v1/boxes/${box.id}/files?path=a.txt`,
      payload: Buffer.from('x'),
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(put.statusCode).toBe(200);
    expect(stateOf(h, box.id)).toBe('running');
    // A lease holds it however long.
    const lease = await h.host.boxes.acquire({ actor: admin, id: box.id });
    await new Promise((r) => setTimeout(r, 600));
    expect(stateOf(h, box.id)).toBe('running');
    lease.release();
    await new Promise((r) => setTimeout(r, 600));
    expect(stateOf(h, box.id)).toBe('paused');
  });

  it('refuses to hibernate on a backend without snapshots, and the box keeps running', async () => {
    const h = await start({ idle: { pauseAfterMs: 0 } });
    const box = await createBox(h);
    const r = await h.admin_({ method: 'POST', url: `/v1/boxes/${box.id}/hibernate` });
    expect(r.statusCode).toBe(500);
    expect(errorCode(r)).toBe('snapshot_failed');
    expect(stateOf(h, box.id)).toBe('running');
    const missing = await h.admin_({ method: 'POST', url: '/v1/boxes/box-0000000000/resume' });
    expect(errorCode(missing)).toBe('box_not_found');
  });

  it('hibernates, wakes on the next use, and boots the disk when the snapshot does not restore', async () => {
    const backend = new FakeWithSnapshots();
    const h = await start({ backend, idle: { pauseAfterMs: 0 } });
    const box = await createBox(h, { env: { GREETING: 'hi' } });
    await exec(h, box.id, 'echo kept > kept.txt');
    const hibernated = await h.admin_({ method: 'POST', url: `/v1/boxes/${box.id}/hibernate` });
    expect(hibernated.json<Box>()).toMatchObject({ state: 'hibernated', pid: null });
    expect(h.host.boxes.isAlive(box.id)).toBe(false);
    // The reaper leaves a hibernated box alone.
    expect((await h.host.boxes.reap()).reaped).toEqual([]);

    expect(out(await exec(h, box.id, 'cat kept.txt; echo $GREETING'))).toBe('kept\nhi\n');
    expect(h.host.store.get(box.id)).toMatchObject({ state: 'running', startMode: 'wake' });

    await h.host.boxes.hibernate({ actor: admin, id: box.id });
    backend.failWakes = true;
    expect(out(await exec(h, box.id, 'cat kept.txt; echo $GREETING'))).toBe('kept\nhi\n');
    expect(h.host.store.get(box.id)).toMatchObject({ state: 'running', startMode: 'disk' });
    expect(backend.starts).toEqual([undefined, 'hibernation', 'hibernation', 'disk']);
  });

  it('refuses to hibernate a box with a command running', async () => {
    const backend = new FakeWithSnapshots();
    const h = await start({ backend, idle: { pauseAfterMs: 0 } });
    const box = await createBox(h);
    const running = exec(h, box.id, 'sleep 0.5');
    await new Promise((r) => setTimeout(r, 150));
    await expect(h.host.boxes.hibernate({ actor: admin, id: box.id })).rejects.toMatchObject({
      code: 'invalid_state',
    });
    await running;
  });
});
