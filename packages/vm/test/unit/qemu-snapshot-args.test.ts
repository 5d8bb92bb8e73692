import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuArgs, type QemuLaunchSpec } from '../../src/qemu/args.js';
import { loadUri, saveUri, shellQuote } from '../../src/qemu/snapshot.js';
import { killProcessesMentioning } from '../../src/qemu/proc.js';
import { TemplateStore, templateId, TEMPLATE_FILES, TEMPLATE_REVISION } from '../../src/template-store.js';

const base: QemuLaunchSpec = {
  accel: 'tcg',
  memoryMib: 1024,
  vcpus: 1,
  kernelPath: '/img/vmlinux',
  initrdPath: '/img/initrd.cpio',
  diskPath: '/b/disk.qcow2',
  diskCache: 'unsafe',
  guestSocketPath: '/b/guest.sock',
  qmpSocketPath: '/b/qmp.sock',
  consolePath: '/b/console.log',
  tscKhz: 2_000_000,
};

describe('qemu argv for snapshots (pure)', () => {
  it('pins a clone: private mapping of the template RAM, a small translation cache, -incoming defer', () => {
    const argv = qemuArgs({
      ...base,
      memory: { kind: 'file', path: '/t/ram', share: false },
      tbSizeMib: 64,
      incoming: true,
    });
    expect(argv.join(' ')).toBe(
      '-M microvm,pit=on,pic=on,rtc=on,acpi=off,memory-backend=mem -accel tcg,thread=multi,tb-size=64 -cpu max,-erms ' +
        '-m 1024 -object memory-backend-file,id=mem,size=1024M,mem-path=/t/ram,share=off ' +
        '-smp 1 -nographic -nodefaults -no-user-config -no-reboot -chardev file,id=console,path=/b/console.log,append=on -serial chardev:console ' +
        '-kernel /img/vmlinux -initrd /img/initrd.cpio ' +
        '-append console=ttyS0 quiet panic=-1 reboot=t mitigations=off random.trust_cpu=on rdinit=/init ' +
        'norandmaps rodata=off tsc_early_khz=2000000 ' +
        '-drive id=root,file=/b/disk.qcow2,format=qcow2,if=none,cache=unsafe,discard=unmap ' +
        '-device virtio-blk-device,drive=root -device virtio-rng-device -device virtio-serial-device,max_ports=2 ' +
        '-chardev socket,id=agentbox0,path=/b/guest.sock,reconnect=1 ' +
        '-device virtserialport,chardev=agentbox0,id=agentbox0port,name=agentbox.0 ' +
        '-chardev socket,id=qmp,path=/b/qmp.sock,reconnect=1 -mon chardev=qmp,mode=control -incoming defer',
    );
  });

  it('gives every box the same RAM block: anonymous, or a shared file for a template', () => {
    expect(qemuArgs(base)).toContain('memory-backend-ram,id=mem,size=1024M');
    // A VM that runs as another user drops to it once its files are open; none does otherwise.
    expect(qemuArgs({ ...base, runAs: { uid: 1000, gid: 100 } }).slice(-2)).toEqual(['-runas', '1000:100']);
    expect(qemuArgs(base)).not.toContain('-runas');
    expect(qemuArgs({ ...base, memory: { kind: 'file', path: '/t/ram', share: true } })).toContain(
      'memory-backend-file,id=mem,size=1024M,mem-path=/t/ram,share=on',
    );
    expect(qemuArgs(base)).not.toContain('-incoming');
    expect(qemuArgs({ ...base, accel: 'kvm', tbSizeMib: 64 })).toContain('kvm');
    // ERMS off only under TCG, where it makes every guest `rep movsb` a byte-at-a-time loop.
    expect(qemuArgs({ ...base, accel: 'kvm' }).join(' ')).toContain('-cpu host ');
  });

  it('names a cold boot on its kernel command line, and refuses a name that could add a parameter', () => {
    const append = (spec: QemuLaunchSpec) => {
      const argv = qemuArgs(spec);
      return argv[argv.indexOf('-append') + 1]!.split(' ');
    };
    expect(append({ ...base, hostname: 'box-1a2b' })).toContain('agentbox.hostname=box-1a2b');
    expect(append(base).some((arg) => arg.startsWith('agentbox.hostname'))).toBe(false);
    for (const bad of ['a b', 'x init=/bin/sh', 'A=b', '', '-lead', 'a'.repeat(64)])
      expect(() => qemuArgs({ ...base, hostname: bad })).toThrow(/not a valid hostname/);
  });

  it('quotes state paths for the shell QEMU runs exec: URIs with', () => {
    expect(shellQuote("/a b/it's")).toBe(`'/a b/it'\\''s'`);
    expect(saveUri('/x/state')).toBe("exec:cat > '/x/state'");
    expect(loadUri('/x/state')).toBe("exec:cat '/x/state'");
  });
});

describe('template store', () => {
  const key = {
    imageId: 'abc',
    resources: { memoryMib: 512, vcpus: 1, diskGib: 2 },
    qemuVersion: '7.2.22',
    accel: 'tcg',
    tbSizeMib: 64,
  };

  it('keys templates by image, size, QEMU and the recipe', () => {
    const id = templateId(key);
    expect(id).toMatch(/^tpl-[0-9a-f]{20}$/);
    expect(templateId({ ...key })).toBe(id);
    expect(templateId({ ...key, imageId: 'abd' })).not.toBe(id);
    expect(templateId({ ...key, resources: { ...key.resources, memoryMib: 1024 } })).not.toBe(id);
    expect(templateId({ ...key, qemuVersion: '8.0' })).not.toBe(id);
    expect(templateId({ ...key, tbSizeMib: undefined })).not.toBe(id);
  });

  it('publishes a complete build only, and refuses one whose files disagree with the manifest', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-tpl-'));
    try {
      const store = new TemplateStore(dir);
      const id = templateId(key);
      expect(store.read(id)).toBeUndefined();
      const release = await store.lock(id, 1000);
      await expect(store.lock(id, 300)).rejects.toThrow(/being built/);
      const build = await store.buildDir(id);
      fs.writeFileSync(path.join(build, TEMPLATE_FILES.ram), Buffer.alloc(0));
      fs.truncateSync(path.join(build, TEMPLATE_FILES.ram), 512 * 1024 * 1024);
      fs.writeFileSync(path.join(build, TEMPLATE_FILES.state), 'state');
      fs.writeFileSync(path.join(build, TEMPLATE_FILES.disk), 'disk');
      const manifest = {
        id,
        revision: TEMPLATE_REVISION,
        imageId: 'abc',
        resources: key.resources,
        qemuVersion: '7.2.22',
        accel: 'tcg',
        tbSizeMib: 64,
        createdAt: 1,
        bootMs: 1,
        snapshotMs: 1,
        stateBytes: 5,
        diskBytes: 4,
      };
      const published = await store.publish(build, manifest);
      release();
      expect(published).toMatchObject({ id, imageId: 'abc', resources: key.resources });
      expect(store.list().map((m) => m.id)).toEqual([id]);
      // Pruning keeps the templates of the current image, and recent ones of others.
      expect(await store.prune({ keepImageId: 'abc', olderThanMs: 0 })).toEqual([]);
      expect(await store.prune({ keepImageId: 'other', olderThanMs: 60_000 })).toEqual([]);
      fs.writeFileSync(path.join(store.dirOf(id), TEMPLATE_FILES.state), 'truncated-or-grown');
      expect(store.read(id)).toBeUndefined();
      // An unreadable one (or another image's) untouched for long enough goes.
      expect(
        await store.prune({ keepImageId: 'abc', olderThanMs: 60_000, now: Date.now() + 120_000 }),
      ).toEqual([id]);
      expect(fs.existsSync(store.dirOf(id))).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("ends and removes the builds of processes that are gone, and no one else's", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-tpl-'));
    // A pid no process has any more: a shell that has exited.
    const gone = Number(spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim());
    const build = path.join(dir, `tpl-aaaa.build-${gone}`);
    const own = path.join(dir, `tpl-bbbb.build-${process.pid}`);
    const aside = path.join(dir, `tpl-cccc.old-${gone}-1796400000000`);
    const published = path.join(dir, 'tpl-dddd');
    for (const d of [build, own, aside, published]) fs.mkdirSync(d);
    // The dead daemon's template VM still runs, its build dir on its command line (as QEMU's is).
    const vm = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', build], { stdio: 'ignore' });
    const ended = new Promise((r) => vm.once('exit', () => r(true)));
    try {
      await new Promise((r) => vm.once('spawn', r));
      const store = new TemplateStore(dir);
      const seen: string[] = [];
      const removed = await store.clearDeadBuilds(async (d) => {
        seen.push(d);
        await killProcessesMentioning(d);
      });
      expect(removed.sort()).toEqual([build, aside].sort());
      expect(seen.sort()).toEqual([build, aside].sort());
      expect(fs.readdirSync(dir).sort()).toEqual(['tpl-bbbb.build-' + process.pid, 'tpl-dddd'].sort());
      expect(await Promise.race([ended, new Promise((r) => setTimeout(() => r(false), 5000))])).toBe(true);
    } finally {
      vm.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
