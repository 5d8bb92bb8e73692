import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Vm, VmResources, VmTemplate } from '../../src/backend.js';
import { leftovers, qemuProcessesFor, run, sharedRuntime } from '../../../../test/helpers.js';

const resources: VmResources = { memoryMib: 512, vcpus: 1, diskGib: 2 };
const live = new Set<Vm>();
let template: VmTemplate;

async function created(): Promise<Vm> {
  const rt = await sharedRuntime();
  const vm = await rt.backend.create({
    id: `e2e-${randomBytes(5).toString('hex')}`,
    image: rt.image,
    resources,
    restoreFrom: { kind: 'template', template },
  });
  live.add(vm);
  return vm;
}

async function clone(): Promise<Vm> {
  const vm = await created();
  await vm.start();
  return vm;
}

async function out(vm: Vm, script: string): Promise<string> {
  const r = await run(vm, script);
  expect(r.exit.exitCode, r.stderr).toBe(0);
  return r.stdout.toString().trim();
}

/** Guest wall clock minus host wall clock, in ms (one exec of latency included). */
async function clockSkewMs(vm: Vm): Promise<number> {
  const before = Date.now();
  const guestMs = Number(await out(vm, 'date +%s%3N'));
  return guestMs - (before + Date.now()) / 2;
}

/**
 * Snapshots with real VMs: a template is booted once (or found), clones restore from it; then
 * pause/resume and hibernate/wake. Every clone must be a distinct machine: its own RNG output,
 * clock, hostname, machine-id and boot id.
 */
describe('template clones, pause/resume, hibernate (real VMs)', () => {
  beforeAll(async () => {
    const rt = await sharedRuntime();
    template = await rt.backend.ensureTemplate(rt.image, resources);
  });

  afterAll(async () => {
    const ids = [...live].map((vm) => vm.id);
    await Promise.all([...live].map((vm) => vm.destroy()));
    for (const id of ids) expect(leftovers(id)).toEqual({ processes: [], files: false });
  });

  it('restores two clones that share no randomness, clock or identity with each other', async () => {
    const [a, b] = [await clone(), await clone()];
    for (const vm of [a, b]) {
      expect(vm.restoreInfo).toMatchObject({ source: 'template', guest: { clockSet: true, reseeded: true } });
      // The template was snapshotted a while ago: a clone's clock was behind until the restore set it.
      expect(Math.abs(await clockSkewMs(vm))).toBeLessThan(2_000);
    }
    const read = (vm: Vm) => out(vm, 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"');
    const [ra, rb] = [await read(a), await read(b)];
    expect(ra).toMatch(/^[0-9a-f]{64}$/);
    expect(ra).not.toBe(rb);
    const identity = (vm: Vm) =>
      out(
        vm,
        'hostname; cat /etc/machine-id /proc/sys/kernel/random/boot_id /etc/hostname; python3 -c "import socket; print(socket.getfqdn())"',
      ).then((s) => s.split('\n'));
    const [ia, ib] = [await identity(a), await identity(b)];
    expect(ia[0]).toBe(a.id);
    expect(ib[0]).toBe(b.id);
    expect(ia[1]).toMatch(/^[0-9a-f]{32}$/);
    expect(ia[1]).not.toBe(ib[1]);
    expect(ia[2]).not.toBe(ib[2]);
    expect(ia[2]).toBe(a.guest.info?.bootId);
    // The template's name is gone from /etc/hosts too: a clone's address reads back as its own name.
    expect([ia[3], ib[3], ia[4], ib[4], ia.length]).toEqual([a.id, b.id, a.id, b.id, 5]);
    // Each clone writes its own copy of the disk.
    await out(a, 'echo only-a > /root/mine');
    expect((await run(b, 'cat /root/mine')).exit.exitCode).not.toBe(0);
  });

  it("preloads a clone (the daemon's standby): QEMU up, guest not run; started later, a fresh machine", async () => {
    const vm = await created();
    await vm.preload!();
    expect(vm.state).toBe('created');
    expect(qemuProcessesFor(vm.id)).toHaveLength(1);
    // Stopped since the load: no hello yet, however long it waits.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(vm.guest.info).toBeUndefined();
    await vm.start();
    expect(vm.restoreInfo).toMatchObject({ source: 'template', preloaded: true, guest: { clockSet: true } });
    expect(vm.restoreInfo!.loadMs).toBeLessThan(vm.restoreInfo!.helloMs);
    expect(Math.abs(await clockSkewMs(vm))).toBeLessThan(2_000);
    expect(await out(vm, 'hostname')).toBe(vm.id);

    // One never started goes without a trace; so does one destroyed while it is being preloaded.
    const unused = await created();
    await unused.preload!();
    await unused.destroy();
    expect(leftovers(unused.id)).toEqual({ processes: [], files: false });
    const cut = await created();
    const preloading = cut.preload!().then(
      () => undefined,
      (err: unknown) => err,
    );
    await cut.destroy();
    expect(await preloading).toMatchObject({ code: 'vm_exited' });
    expect(leftovers(cut.id)).toEqual({ processes: [], files: false });
  });

  it('pauses and resumes: a process started before keeps running, an exec stream in flight completes', async () => {
    const vm = await clone();
    const pid = await out(vm, 'setsid sleep 10000 >/dev/null 2>&1 < /dev/null & echo $!');
    const chunks: string[] = [];
    const streaming = vm.guest.exec(
      { argv: ['sh', '-c', 'for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.3; done'] },
      { onStdout: (c) => void chunks.push(c.toString()) },
    );
    await new Promise((r) => setTimeout(r, 700));
    await vm.pause();
    expect(vm.state).toBe('paused');
    const seenWhilePaused = chunks.join('');
    await new Promise((r) => setTimeout(r, 2_000));
    // Nothing ran while paused.
    expect(chunks.join('')).toBe(seenWhilePaused);
    await vm.resume();
    expect(vm.state).toBe('running');
    const exit = await streaming;
    expect(exit.exitCode).toBe(0);
    expect(chunks.join('')).toBe('1\n2\n3\n4\n5\n6\n7\n8\n');
    expect(await out(vm, `kill -0 ${pid} && echo alive`)).toBe('alive');
    expect(Math.abs(await clockSkewMs(vm))).toBeLessThan(2_000);
  });

  it('hibernates to disk and wakes with its files and processes; the QEMU process is gone meanwhile', async () => {
    const rt = await sharedRuntime();
    const vm = await clone();
    const data = randomBytes(1 << 20).toString('hex');
    await vm.guest.writeFile('/root/before-hibernate.txt', Buffer.from(data));
    const pid = await out(vm, 'setsid sleep 10000 >/dev/null 2>&1 < /dev/null & echo $!');
    const hibernated = await vm.hibernate();
    expect(vm.state).toBe('hibernated');
    expect(hibernated.stateBytes).toBeGreaterThan(1 << 20);
    expect(qemuProcessesFor(vm.id)).toEqual([]);
    expect(rt.backend.hibernation(vm.id)).toMatchObject({ stateBytes: hibernated.stateBytes });
    live.delete(vm);
    await new Promise((r) => setTimeout(r, 1_500));

    const woken = await rt.backend.create({
      id: vm.id,
      image: rt.image,
      resources,
      restoreFrom: { kind: 'hibernation' },
    });
    live.add(woken);
    await woken.start();
    expect(woken.restoreInfo).toMatchObject({ source: 'hibernation', guest: { clockSet: true } });
    // The snapshot is gone once loaded: the running guest's disk moves on from it.
    expect(rt.backend.hibernation(vm.id)).toBeUndefined();
    expect((await woken.guest.readFileBuffer('/root/before-hibernate.txt')).toString()).toBe(data);
    expect(await out(woken, `kill -0 ${pid} && echo alive; hostname`)).toBe(`alive\n${vm.id}`);
    expect(Math.abs(await clockSkewMs(woken))).toBeLessThan(2_000);
  });

  it('cold-boots a hibernated box from its disk when the snapshot is unusable', async () => {
    const rt = await sharedRuntime();
    const vm = await clone();
    await vm.guest.writeFile('/root/kept.txt', Buffer.from('on disk'));
    // A box's own /etc/hosts lines outlive a boot of its disk; the boot rewrites only the name's.
    await out(vm, "echo '127.0.0.1 myapp.test' >> /etc/hosts");
    await vm.hibernate();
    live.delete(vm);
    const woken = await rt.backend.create({
      id: vm.id,
      image: rt.image,
      resources,
      restoreFrom: { kind: 'disk' },
    });
    live.add(woken);
    await woken.start();
    expect((await woken.guest.readFileBuffer('/root/kept.txt')).toString()).toBe('on disk');
    expect(rt.backend.hibernation(vm.id)).toBeUndefined();
    const hosts = await out(woken, 'getent hosts myapp.test; grep -c "^127.0.1.1" /etc/hosts; hostname -f');
    expect(hosts.split('\n')).toEqual([expect.stringMatching(/^127\.0\.0\.1\s+myapp\.test$/), '1', vm.id]);
  });
});
