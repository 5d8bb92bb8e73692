import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IMAGE_API_VERSION } from '@agentbox/protocol';
import { kernelConfigKey } from '../../src/image/kernel.js';
import { applyPrune, imagesToKeep, planPrune, qcow2BackingFile } from '../../src/image/prune.js';

describe('imagesToKeep', () => {
  const image = (id: string, agentSet: string, mtimeMs: number) => ({
    id,
    dir: `/i/${id}`,
    agentSet,
    mtimeMs,
  });

  it('keeps the newest image of each agent set and every image in use, saying why', () => {
    const images = [
      image('a1', 'claude', 1),
      image('a2', 'claude', 3),
      image('a3', 'claude', 2),
      image('b1', 'claude,codex', 1),
    ];
    const keep = imagesToKeep(images, new Map([['a1', 'disk']]));
    expect(Object.fromEntries(keep)).toEqual({ a2: 'newest', b1: 'newest', a1: 'disk' });
  });

  it('gives "newest" as the reason when the newest is also in use', () => {
    expect(imagesToKeep([image('a', 'claude', 1)], new Map([['a', 'process']])).get('a')).toBe('newest');
  });
});

// A fake agentbox home with real files: image dirs, hard-linked rootfs caches, qcow2 box disks.
describe('planPrune and applyPrune', () => {
  let home: string;
  beforeEach(() => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-prune-'));
  });
  afterEach(() => fs.rmSync(home, { recursive: true, force: true }));

  const write = (file: string, content: string | Buffer) => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, content);
  };

  /** An image whose rootfs is a hard link of cache/rootfs/<rootfsKey>.img, as `image build` makes it. */
  function makeImage(
    id: string,
    options: { agents: string[]; rootfsKey: string; age: number; api?: number },
  ) {
    const dir = path.join(home, 'images', id);
    const cached = path.join(home, 'cache/rootfs', `${options.rootfsKey}.img`);
    if (!fs.existsSync(cached)) write(cached, Buffer.alloc(64 * 1024, 1));
    fs.mkdirSync(dir, { recursive: true });
    fs.linkSync(cached, path.join(dir, 'rootfs.img'));
    write(path.join(dir, 'vmlinux'), Buffer.alloc(8192, 2));
    write(path.join(dir, 'initrd.cpio'), Buffer.alloc(8192, 3));
    const manifest = {
      id,
      imageApiVersion: options.api ?? IMAGE_API_VERSION,
      builtAt: new Date(Date.now() - options.age * 1000).toISOString(),
      buildSeconds: 1,
      debianSuite: 'bookworm',
      kernel: { package: 'linux-source-6.1', version: '1', release: '6.1-agentbox' },
      rootfs: { key: options.rootfsKey, packages: [] },
      agent: { version: '0.1.0', sha256: 'x' },
      agents: Object.fromEntries(options.agents.map((a) => [a, '1.0.0'])),
      components: {},
      files: { kernel: 'vmlinux', initrd: 'initrd.cpio', rootfs: 'rootfs.img' },
      sizes: { kernelBytes: 8192, initrdBytes: 8192, rootfsBytes: 65536 },
    };
    write(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
    const t = new Date(Date.now() - options.age * 1000);
    fs.utimesSync(dir, t, t);
    return dir;
  }

  function makeTemplate(id: string, imageId: string) {
    write(path.join(home, 'templates', id, 'manifest.json'), JSON.stringify({ id, imageId }));
    write(path.join(home, 'templates', id, 'ram'), Buffer.alloc(4096));
  }

  function boxDisk(box: string, backing: string) {
    const disk = path.join(home, 'boxes', box, 'disk.qcow2');
    fs.mkdirSync(path.dirname(disk), { recursive: true });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', backing, disk, '1G']);
    return disk;
  }

  const id = (n: number) => String(n).repeat(24);

  it('keeps the newest image per agent set and those a box disk is backed by; removes the rest with their templates and caches', async () => {
    const current = makeImage(id(1), { agents: ['claude'], rootfsKey: 'k1', age: 10 });
    const older = makeImage(id(2), { agents: ['claude'], rootfsKey: 'k2', age: 100 });
    const boxed = makeImage(id(3), { agents: ['claude'], rootfsKey: 'k3', age: 200 });
    const otherApi = makeImage(id(4), {
      agents: ['claude'],
      rootfsKey: 'k4',
      age: 5,
      api: IMAGE_API_VERSION + 1,
    });
    const allAgents = makeImage(id(5), { agents: ['claude', 'codex'], rootfsKey: 'k5', age: 300 });
    makeTemplate('tpl-aa', id(1));
    makeTemplate('tpl-bb', id(2));
    boxDisk('box-1', path.join(boxed, 'rootfs.img'));
    // A template's disk does not keep its image: the template goes with it.
    boxDisk('../templates/tpl-bb', path.join(older, 'rootfs.img'));
    write(path.join(home, 'cache/kernel', `linux-source-6.1_1_${kernelConfigKey()}`, 'vmlinux'), 'k');
    write(path.join(home, 'cache/kernel', 'linux-source-6.1_1_0ldc0nf1g', 'vmlinux'), 'old');
    const deadBuild = path.join(home, 'images', `${id(6)}.tmp-999999999`);
    const liveBuild = path.join(home, 'images', `${id(7)}.tmp-${process.pid}`);
    fs.mkdirSync(deadBuild, { recursive: true });
    fs.mkdirSync(liveBuild, { recursive: true });

    const plan = planPrune(home);
    expect(plan.kept).toEqual(
      expect.arrayContaining([
        { id: id(1), reason: 'newest', agents: 'claude' },
        { id: id(3), reason: 'disk', agents: 'claude' },
        { id: id(5), reason: 'newest', agents: 'claude,codex' },
      ]),
    );
    expect(plan.kept).toHaveLength(3);
    const removed = plan.remove.map((item) => `${item.kind} ${path.relative(home, item.path)}`).sort();
    expect(removed).toEqual(
      [
        `image images/${id(2)}`,
        `image images/${id(4)}`,
        'template templates/tpl-bb',
        'rootfs-cache cache/rootfs/k2.img',
        'rootfs-cache cache/rootfs/k4.img',
        'kernel-cache cache/kernel/linux-source-6.1_1_0ldc0nf1g',
        `leftover images/${id(6)}.tmp-999999999`,
      ].sort(),
    );
    // The rootfs counts once, with its last link: in the cache entry or image that goes with it.
    const older2 = plan.remove.filter((item) => item.path.endsWith(id(2)) || item.path.endsWith('k2.img'));
    expect(older2.reduce((sum, item) => sum + item.bytes, 0)).toBeGreaterThanOrEqual(64 * 1024 + 2 * 8192);
    expect(plan.bytes).toBe(plan.remove.reduce((sum, item) => sum + item.bytes, 0));

    // Planning removes nothing; applying removes exactly the plan.
    expect(fs.existsSync(older)).toBe(true);
    await applyPrune(plan);
    for (const item of plan.remove) expect(fs.existsSync(item.path), item.path).toBe(false);
    for (const dir of [current, boxed, allAgents, liveBuild, path.join(home, 'templates/tpl-aa')])
      expect(fs.existsSync(dir), dir).toBe(true);
    expect(fs.readFileSync(path.join(boxed, 'rootfs.img')).length).toBe(64 * 1024);
    expect(fs.existsSync(otherApi)).toBe(false);
    expect(planPrune(home).remove).toEqual([]);
  });

  it('reads the backing file of a real qcow2, and nothing from other files', () => {
    const img = makeImage(id(1), { agents: ['claude'], rootfsKey: 'k1', age: 1 });
    const disk = boxDisk('b', path.join(img, 'rootfs.img'));
    expect(qcow2BackingFile(disk)).toBe(path.join(img, 'rootfs.img'));
    expect(qcow2BackingFile(path.join(img, 'manifest.json'))).toBeUndefined();
    expect(qcow2BackingFile(path.join(home, 'missing.qcow2'))).toBeUndefined();
  });

  it('does nothing in an empty or missing home', () => {
    expect(planPrune(home)).toEqual({ kept: [], remove: [], bytes: 0 });
    expect(planPrune(path.join(home, 'nope'))).toEqual({ kept: [], remove: [], bytes: 0 });
  });
});
