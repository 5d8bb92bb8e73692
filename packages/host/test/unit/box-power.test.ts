import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Box, ExecResult } from '@agentbox/protocol';
import { FakeBackend } from '@agentbox/vm/fake';
import { processStartTime, type Vm, type VmDiskUse, type VmMemoryUse, type VmSpec } from '@agentbox/vm';
import { createBoxService, createBoxStore, openDatabase, type BoxBackend } from '../../src/index.js';
import { DISK_RELEASE_MARGIN_BYTES } from '../../src/services/disk-guard.js';
import { agentBundlePath, errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

const admin = { keyId: 'admin', scope: 'admin' as const };
const hosts: FakeHost[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const h of hosts.splice(0)) await h.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
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

async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  for (const end = Date.now() + ms; !check(); await new Promise((r) => setTimeout(r, 20)))
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}

/** A promise and its resolve, to hold an operation halfway. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** The paths a daemon on `dataDir` uses, so that a second daemon finds the first one's boxes. */
function sameDirs(dataDir: string) {
  return {
    dataDir,
    boxDir: (id: string) => path.join(dataDir, 'boxes', id),
    guestLayout: (id: string) => ({
      workspace: path.join(dataDir, 'guest', id, 'workspace'),
      envFile: path.join(dataDir, 'guest', id, 'env.json'),
    }),
  };
}

/** A seed user's box with a disk (the fake driver makes none; the daemon only checks it is there). */
async function userBox(h: FakeHost, userId: string): Promise<{ id: string; pid: number; disk: string }> {
  const r = await h.admin_({
    method: 'POST',
    url: '/create_microvm',
    payload: { user_id: userId, runtime: 'bash' },
  });
  expect(r.statusCode, r.body).toBe(200);
  const box = h.host.store.findLiveByUserOfAnyKey(userId)[0]!;
  const disk = path.join(box.dir, 'disk.qcow2');
  fs.mkdirSync(box.dir, { recursive: true });
  fs.writeFileSync(disk, 'user data');
  return { id: box.id, pid: r.json<{ pid: number }>().pid, disk };
}

/**
 * A fake backend that can "hibernate": the agent process ends (the fake guest's files live on the
 * host, so they stay) and a wake starts a new one. It exercises the daemon's wake path, including
 * the fall-back to a disk boot when the snapshot does not restore.
 */
class FakeWithSnapshots implements BoxBackend {
  readonly snapshots = new Set<string>();
  readonly starts: (string | undefined)[] = [];
  /** Every VM made, to check none is left running. */
  readonly vms: Vm[] = [];
  failWakes = false;
  /** Disk boots fail while set (read at each call). */
  failDiskBoots = false;
  /** Resumes of paused VMs fail while set (read at each call). */
  failResumes = false;
  /** While set, a wake (a restore of a snapshot or of a disk) waits for it before it creates its VM. */
  wakeGate: Promise<void> | undefined;
  /** While set, a hibernation waits for it before it ends the VM. */
  hibernateGate: Promise<void> | undefined;
  /** What each box's disk takes on the host, as the test sets it (for the disk guard). */
  readonly disks = new Map<string, VmDiskUse>();
  /** What each box's VM holds of the host's memory, as the test sets it (for the memory guard). */
  readonly memory = new Map<string, VmMemoryUse>();
  private readonly fake = new FakeBackend({
    agentBundlePath,
    diskUse: (id) => this.disks.get(id),
    memoryUse: (id) => this.memory.get(id),
  });

  hibernation(id: string): unknown {
    return this.snapshots.has(id) ? {} : undefined;
  }

  async create(spec: VmSpec): Promise<Vm> {
    const kind = spec.restoreFrom?.kind;
    this.starts.push(kind);
    if (kind) await this.wakeGate;
    const vm = await this.fake.create(spec);
    this.vms.push(vm);
    const snapshots = this.snapshots;
    const failWakes = this.failWakes;
    const failResumes = () => this.failResumes;
    const failDiskBoot = () => this.failDiskBoots;
    const hibernateGate = () => this.hibernateGate;
    return new Proxy(vm, {
      get(target, prop) {
        if (prop === 'resume' && failResumes()) return () => Promise.reject(new Error('resume failed'));
        if (prop === 'hibernate')
          return async () => {
            await hibernateGate();
            await target.kill();
            snapshots.add(spec.id);
            return { stateBytes: 1, ms: 1 };
          };
        if (prop === 'start' && kind === 'disk' && failDiskBoot())
          return () => Promise.reject(new Error('the disk did not boot in time'));
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

  it('a wake that fails both ways keeps a persistent box hibernated with its disk, until it has failed for long', async () => {
    const backend = new FakeWithSnapshots();
    let now = Date.now();
    const h = await start({ backend, idle: { pauseAfterMs: 0 }, clock: () => now });
    const user = await userBox(h, 'fay');
    const other = await createBox(h);
    for (const id of [user.id, other.id]) await h.host.boxes.hibernate({ actor: admin, id });
    backend.failWakes = true;
    backend.failDiskBoots = true;
    const wake = (id: string) => h.host.boxes.resume({ actor: admin, id });
    // An overloaded host's boot timeout is not a broken disk: the request fails, the files stay,
    // however fast a client retries.
    for (const n of [1, 2, 3, 4]) await expect(wake(user.id)).rejects.toThrow(`failure ${n} in a row`);
    expect(h.host.store.get(user.id)).toMatchObject({ state: 'hibernated', pid: null });
    expect(fs.existsSync(user.disk)).toBe(true);
    expect(backend.vms.filter((vm) => vm.state === 'running')).toHaveLength(0);
    // A box that is not a user's persistent box fails at once, as before.
    await expect(wake(other.id)).rejects.toThrow('could not be woken');
    expect(h.host.store.get(other.id)).toMatchObject({ state: 'failed' });

    backend.failDiskBoots = false;
    expect(out(await exec(h, user.id, 'echo back'))).toBe('back\n');
    expect(h.host.store.get(user.id)).toMatchObject({ state: 'running', startMode: 'disk' });

    // A wake that worked starts the count again. Failing for 10 minutes, three times or more, the
    // disk is taken for broken: the box fails.
    await h.host.boxes.hibernate({ actor: admin, id: user.id });
    backend.failDiskBoots = true;
    await expect(wake(user.id)).rejects.toThrow('failure 1 in a row');
    now += 5 * 60_000;
    await expect(wake(user.id)).rejects.toThrow('failure 2 in a row');
    now += 5 * 60_000;
    expect(fs.existsSync(user.disk)).toBe(true);
    await expect(wake(user.id)).rejects.toThrow('could not be woken: the disk did not boot in time');
    expect(h.host.store.get(user.id)).toMatchObject({ state: 'failed' });
    expect(fs.existsSync(user.disk)).toBe(false);
  });

  it("does not hibernate idle boxes while the host's disk is under its reserve; it does once there is room", async () => {
    let free = 1024 ** 3;
    const h = await start({
      backend: new FakeWithSnapshots(),
      idle: { pauseAfterMs: 0, hibernateAfterMs: 100, checkEveryMs: 50 },
      freeDiskBytes: () => free,
    });
    free = 50 * 1024 ** 3;
    const box = await createBox(h);
    free = 1024 ** 3;
    await h.host.boxes.pause({ actor: admin, id: box.id });
    // A snapshot is the guest's RAM written to that disk: it waits, the box staying paused.
    await new Promise((r) => setTimeout(r, 400));
    expect(stateOf(h, box.id)).toBe('paused');
    free = 50 * 1024 ** 3;
    await until('the idle box to hibernate', () => stateOf(h, box.id) === 'hibernated');
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

describe('the disk guard (fake driver)', () => {
  const GIB = 1024 ** 3;

  /** A daemon whose boxes' disk use and host free space the test sets; the guard's passes are run by hand. */
  async function guarded() {
    const disks = new Map<string, VmDiskUse>();
    const host = { free: 50 * GIB };
    const h = await start({
      backend: new FakeBackend({ agentBundlePath, diskUse: (id) => disks.get(id) }),
      freeDiskBytes: () => host.free,
    });
    return { h, disks, host };
  }

  const execCall = (h: FakeHost, id: string) =>
    h.admin_({ method: 'POST', url: `/v1/boxes/${id}/exec?stream=false`, payload: { command: 'echo ok' } });

  it('pauses the box filling the reserve, refuses requests to it, and lets it run again once space is freed', async () => {
    const { h, disks, host } = await guarded();
    const writer = await createBox(h);
    const quiet = await createBox(h);
    disks.set(writer.id, { allocatedBytes: 10_000_000, stalled: false });
    disks.set(quiet.id, { allocatedBytes: 10_000_000, stalled: false });
    h.host.boxes.checkDisk();
    // The writer's disk grows past the reserve (2 GiB by default); the other box's does not.
    disks.set(writer.id, { allocatedBytes: 60 * GIB, stalled: false });
    host.free = GIB;
    h.host.boxes.checkDisk();
    await until('the writer to be paused', () => stateOf(h, writer.id) === 'paused');
    expect(stateOf(h, quiet.id)).toBe('running');
    expect(h.host.store.transitions(writer.id).at(-1)?.reason).toBe('the host is short of disk space');
    const viewOf = async (id: string) =>
      (await h.admin_({ method: 'GET', url: `/v1/boxes/${id}` })).json<Box>();
    expect(await viewOf(writer.id)).toMatchObject({ state: 'paused', heldFor: 'disk' });
    expect(await viewOf(quiet.id)).toMatchObject({ state: 'running', heldFor: null });

    const refused = await execCall(h, writer.id);
    expect(refused.statusCode).toBe(429);
    expect(errorCode(refused)).toBe('capacity_exhausted');
    expect(refused.json<{ error: { message: string } }>().error.message).toMatch(
      /short of disk space.*by itself/,
    );
    const resume = await h.admin_({ method: 'POST', url: `/v1/boxes/${writer.id}/resume` });
    expect([resume.statusCode, errorCode(resume)]).toEqual([429, 'capacity_exhausted']);
    expect(out(await exec(h, quiet.id, 'echo ok'))).toBe('ok\n');

    // Back at the reserve is not enough: the box would fill it again at once.
    host.free = 2 * GIB + DISK_RELEASE_MARGIN_BYTES - 1;
    h.host.boxes.checkDisk();
    await new Promise((r) => setTimeout(r, 100));
    expect(stateOf(h, writer.id)).toBe('paused');
    host.free = 3 * GIB;
    h.host.boxes.checkDisk();
    await until('the writer to run again', () => stateOf(h, writer.id) === 'running');
    expect(await viewOf(writer.id)).toMatchObject({ state: 'running', heldFor: null });
    // What a task in the box is not charged for (task-held-timeout.test.ts).
    const held = h.host.boxes.heldMs(writer.id);
    expect(held).toBeGreaterThanOrEqual(100);
    await new Promise((r) => setTimeout(r, 50));
    expect(h.host.boxes.heldMs(writer.id)).toBe(held);
    expect(h.host.boxes.heldMs(quiet.id)).toBe(0);
    expect(out(await exec(h, writer.id, 'echo ok'))).toBe('ok\n');
  });

  it('a hold ends with its VM: a held persistent box whose VM died boots from its disk on its next use', async () => {
    const backend = new FakeWithSnapshots();
    const host = { free: 50 * GIB };
    const h = await start({ backend, freeDiskBytes: () => host.free });
    const user = await userBox(h, 'dana');
    host.free = 0;
    backend.disks.set(user.id, { allocatedBytes: 10_000_000, stalled: true });
    h.host.boxes.checkDisk();
    await until('the box to be held', () => stateOf(h, user.id) === 'paused');
    process.kill(user.pid, 'SIGKILL');
    await until('the VM to be lost', () => stateOf(h, user.id) === 'hibernated');
    backend.disks.clear();
    expect(out(await exec(h, user.id, 'echo back'))).toBe('back\n');
    expect(h.host.store.get(user.id)).toMatchObject({ state: 'running', startMode: 'disk' });
  });

  it('holds a box QEMU stopped on a full disk, and continues it once there is room', async () => {
    const { h, disks, host } = await guarded();
    const box = await createBox(h);
    host.free = 0;
    disks.set(box.id, { allocatedBytes: 10_000_000, stalled: true });
    h.host.boxes.checkDisk();
    await until('the box to be held', () => stateOf(h, box.id) === 'paused');
    expect(errorCode(await execCall(h, box.id))).toBe('capacity_exhausted');
    host.free = 5 * GIB;
    disks.set(box.id, { allocatedBytes: 10_000_000, stalled: false });
    h.host.boxes.checkDisk();
    await until('the box to run again', () => stateOf(h, box.id) === 'running');
    expect(out(await exec(h, box.id, 'echo ok'))).toBe('ok\n');
  });
});

describe('the memory guard (fake driver)', () => {
  const MIB = 1024 ** 2;

  /** A daemon whose host memory and boxes' memory the test sets; the guard's passes are run by hand. */
  async function guarded() {
    const backend = new FakeWithSnapshots();
    const host = { available: 20_000 * MIB };
    const h = await start({
      backend,
      idle: { pauseAfterMs: 0, hibernateAfterMs: 0 },
      availableMemoryBytes: () => host.available,
    });
    return { h, backend, host };
  }

  it('below the reserve: refuses creates, hibernates the idle boxes holding the most until the shortfall is covered', async () => {
    const { h, backend, host } = await guarded();
    const [big, small, busy, running] = [
      await createBox(h),
      await createBox(h),
      await createBox(h),
      await createBox(h),
    ];
    backend.memory.set(big.id, { privateBytes: 600 * MIB });
    backend.memory.set(small.id, { privateBytes: 100 * MIB });
    backend.memory.set(busy.id, { privateBytes: 900 * MIB });
    backend.memory.set(running.id, { privateBytes: 900 * MIB });
    for (const box of [big, small, busy])
      await h.admin_({ method: 'POST', url: `/v1/boxes/${box.id}/pause` });
    // A box with a lease (a call or task using it) is never hibernated for memory, paused or not.
    const lease = await h.host.boxes.acquire({ actor: admin, id: busy.id });
    await h.host.boxes.pause({ actor: admin, id: busy.id });

    h.host.boxes.checkMemory();
    expect(stateOf(h, big.id)).toBe('paused'); // above the reserve: nothing to do

    // 1 GiB reserve (the default): 700 MiB available is 324 MiB short with the margin, which the
    // biggest idle box covers alone.
    host.available = 700 * MIB;
    const refused = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} });
    expect([refused.statusCode, errorCode(refused)]).toEqual([429, 'capacity_exhausted']);
    expect(refused.json<{ error: { details: object } }>().error.details).toMatchObject({
      resource: 'memory',
      availableBytes: 700 * MIB,
      minAvailableBytes: 1024 * MIB,
    });
    const hibernating = gate();
    backend.hibernateGate = hibernating.promise;
    h.host.boxes.checkMemory();
    await until('the biggest idle box to hibernate', () => stateOf(h, big.id) === 'hibernated');
    expect(h.host.store.transitions(big.id).at(-1)?.reason).toBe('the host is short of memory');
    // Its hibernation is counted as freed until it ends: a pass meanwhile picks no other box.
    h.host.boxes.checkMemory();
    await new Promise((r) => setTimeout(r, 100));
    expect([stateOf(h, small.id), stateOf(h, busy.id), stateOf(h, running.id)]).toEqual([
      'paused',
      'paused',
      'running',
    ]);
    hibernating.open();
    await until('its VM to end', () => h.host.store.get(big.id)?.pid === null);

    // Still short once it has ended: the next idle box goes; the leased and the running ones never.
    h.host.boxes.checkMemory();
    await until('the next idle box to hibernate', () => stateOf(h, small.id) === 'hibernated');
    host.available = 100 * MIB;
    h.host.boxes.checkMemory();
    await new Promise((r) => setTimeout(r, 100));
    expect([stateOf(h, busy.id), stateOf(h, running.id)]).toEqual(['paused', 'running']);
    lease.release();

    // Nothing was lost: the next request wakes a hibernated box, and creates work again with room.
    host.available = 4_000 * MIB;
    expect(out(await exec(h, big.id, 'echo awake'))).toBe('awake\n');
    expect(h.host.store.get(big.id)).toMatchObject({ state: 'running', startMode: 'wake' });
    await createBox(h);
  });

  it('a user key is told the host is short, not its figures; no reserve (0) checks nothing', async () => {
    const { h, host } = await guarded();
    host.available = 10 * MIB;
    const user = h.host.keys.create({ name: 'u', scope: 'user' }).secret;
    const r = await h.call({ method: 'POST', url: '/v1/boxes', headers: { 'x-api-key': user }, payload: {} });
    expect([r.statusCode, errorCode(r)]).toEqual([429, 'capacity_exhausted']);
    expect(r.json<{ error: { message: string; details?: object } }>().error).toEqual(
      expect.not.objectContaining({ details: expect.anything() as unknown }),
    );
    expect(r.body).toMatch(/short of memory/);

    const none = await start({ minFreeMemoryBytes: 0, availableMemoryBytes: () => 0 });
    await createBox(none);
  });
});

describe('the lifecycle across restarts, deletes and VM deaths (fake driver)', () => {
  it('resumes a box hibernated by an earlier daemon, waking it once for parallel requests', async () => {
    const backend = new FakeWithSnapshots();
    const first = await fakeHost({ backend, idle: { pauseAfterMs: 0 } });
    dirs.push(first.dataDir);
    const { id, disk } = await userBox(first, 'ann');
    await exec(first, id, 'echo kept > kept.txt');
    expect((await first.admin_({ method: 'POST', url: `/v1/boxes/${id}/hibernate` })).statusCode).toBe(200);
    await first.host.close(100);

    const h = await start({ backend, idle: { pauseAfterMs: 0 }, ...sameDirs(first.dataDir) });
    const key = { 'x-api-key': first.admin };
    const resume = () => h.call({ method: 'POST', url: `/v1/boxes/${id}/resume`, headers: key });
    const [a, b] = await Promise.all([resume(), resume()]);
    expect([a.statusCode, b.statusCode], a.body).toEqual([200, 200]);
    expect(h.host.store.get(id)).toMatchObject({ state: 'running', startMode: 'wake' });
    expect(backend.starts).toEqual([undefined, 'hibernation']);
    expect(fs.existsSync(disk)).toBe(true);
    const cat = await h.call({
      method: 'POST',
      url: `/v1/boxes/${id}/exec?stream=false`,
      headers: key,
      payload: { command: 'cat kept.txt' },
    });
    expect(out(cat.json<ExecResult>())).toBe('kept\n');
  });

  it('after a host reboot (daemon and VM gone), a resume boots the persistent box from its disk', async () => {
    const backend = new FakeWithSnapshots();
    const first = await fakeHost({ backend, idle: { pauseAfterMs: 0 } });
    dirs.push(first.dataDir);
    const { id, pid, disk } = await userBox(first, 'ben');
    await first.host.close(100);
    process.kill(pid, 'SIGKILL');

    const h = await start({ backend, idle: { pauseAfterMs: 0 }, ...sameDirs(first.dataDir) });
    expect(h.host.store.get(id)?.state).toBe('hibernated');
    const r = await h.call({
      method: 'POST',
      url: `/v1/boxes/${id}/resume`,
      headers: { 'x-api-key': first.admin },
    });
    expect(r.statusCode, r.body).toBe(200);
    expect(h.host.store.get(id)).toMatchObject({ state: 'running', startMode: 'disk' });
    expect(fs.existsSync(disk)).toBe(true);
  });

  it('a delete during a wake waits for it and ends the VM it started', async () => {
    const backend = new FakeWithSnapshots();
    const h = await start({ backend, idle: { pauseAfterMs: 0 } });
    const box = await createBox(h);
    await h.host.boxes.hibernate({ actor: admin, id: box.id });
    const held = gate();
    backend.wakeGate = held.promise;
    const using = (async () =>
      h.admin_({
        method: 'POST',
        url: `/v1/boxes/${box.id}/exec?stream=false`,
        payload: { command: 'true' },
      }))();
    await until('the wake to start', () => backend.starts.length === 2);
    const deleting = (async () => h.admin_({ method: 'DELETE', url: `/v1/boxes/${box.id}` }))();
    await new Promise((r) => setTimeout(r, 100));
    held.open();
    const deleted = await deleting;
    expect(deleted.json<Box>().state).toBe('deleted');
    expect(errorCode(await using)).toBe('invalid_state');
    expect(backend.vms).toHaveLength(2);
    await until('every VM to end', () =>
      backend.vms.every((vm) => vm.state === 'stopped' || vm.state === 'destroyed'),
    );
  });

  it('a delete does not wait forever on a wake that hangs; the wake ends its VM when it gets one', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-power-'));
    dirs.push(dataDir);
    const db = openDatabase(dataDir);
    const backend = new FakeWithSnapshots();
    const boxes = createBoxService({
      store: createBoxStore(db),
      backend,
      image: {} as never,
      limits: { maxBoxes: 4, defaults: { memoryMib: 512, vcpus: 1, diskGib: 2 } },
      metrics: { observeBoot: () => undefined },
      log: { info: () => undefined, warn: () => undefined },
      probe: { startTime: processStartTime, killMentioning: async () => undefined },
      deleteWaitMs: 200,
      ...sameDirs(dataDir),
    });
    try {
      const box = await boxes.create({ actor: admin, runtime: 'bash' });
      await boxes.hibernate({ actor: admin, id: box.id });
      const held = gate();
      backend.wakeGate = held.promise;
      const lease = boxes.acquire({ actor: admin, id: box.id });
      lease.catch(() => undefined);
      await until('the wake to start', () => backend.starts.length === 2);
      const asked = Date.now();
      expect((await boxes.remove({ actor: admin, id: box.id })).state).toBe('deleted');
      expect(Date.now() - asked).toBeGreaterThanOrEqual(190);
      held.open();
      await expect(lease).rejects.toMatchObject({ code: 'invalid_state' });
      expect(backend.vms).toHaveLength(2);
      await until('every VM to end', () =>
        backend.vms.every((vm) => vm.state === 'stopped' || vm.state === 'destroyed'),
      );
    } finally {
      db.close();
    }
  });

  it('a persistent box whose VM dies keeps its disk and boots from it on its next use; others fail', async () => {
    const backend = new FakeWithSnapshots();
    const h = await start({ backend, idle: { pauseAfterMs: 0 } });
    const user = await userBox(h, 'cara');
    await exec(h, user.id, 'echo kept > kept.txt');
    const other = await createBox(h);
    const otherDir = h.host.store.get(other.id)!.dir;
    fs.mkdirSync(otherDir, { recursive: true });
    fs.writeFileSync(path.join(otherDir, 'disk.qcow2'), 'scratch');

    process.kill(user.pid, 'SIGKILL');
    process.kill(other.pid!, 'SIGKILL');
    await until(
      'the VMs to be lost',
      () => stateOf(h, user.id) !== 'running' && stateOf(h, other.id) !== 'running',
    );
    expect(h.host.store.get(user.id)).toMatchObject({ state: 'hibernated', pid: null });
    expect(h.host.store.transitions(user.id).at(-1)?.reason).toBe(
      'the VM exited; the persistent box boots from its disk on its next use',
    );
    expect(fs.existsSync(user.disk)).toBe(true);
    expect(h.host.store.get(other.id)).toMatchObject({ state: 'failed', failureReason: 'the VM exited' });
    // The failed state is recorded before the files go (see fail()).
    await until('its files to go', () => !fs.existsSync(otherDir));

    expect(out(await exec(h, user.id, 'cat kept.txt'))).toBe('kept\n');
    expect(h.host.store.get(user.id)).toMatchObject({ state: 'running', startMode: 'disk' });
  });

  it('a persistent box whose resume fails keeps its disk (VM killed); an ephemeral one fails', async () => {
    const backend = new FakeWithSnapshots();
    const h = await start({ backend, idle: { pauseAfterMs: 0 } });
    const user = await userBox(h, 'dan');
    const other = await createBox(h);
    for (const id of [user.id, other.id]) await h.host.boxes.pause({ actor: admin, id });
    backend.failResumes = true;
    for (const id of [user.id, other.id])
      await expect(h.host.boxes.resume({ actor: admin, id })).rejects.toThrow('resume failed');
    backend.failResumes = false;
    expect(h.host.store.get(user.id)).toMatchObject({ state: 'hibernated', pid: null });
    expect(fs.existsSync(user.disk)).toBe(true);
    await until('the VM to end', () => backend.vms[0]!.state === 'stopped');
    expect(h.host.store.get(other.id)).toMatchObject({ state: 'failed' });
    expect(out(await exec(h, user.id, 'echo back'))).toBe('back\n');
    expect(h.host.store.get(user.id)).toMatchObject({ state: 'running', startMode: 'disk' });
  });
});
