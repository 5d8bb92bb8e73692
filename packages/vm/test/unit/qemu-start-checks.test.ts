import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Image, ImageManifest } from '../../src/image/manifest.js';
import { QemuBackend, requireMemoryFits } from '../../src/qemu/driver.js';

const MiB = 1024 ** 2;
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-start-checks-'));
afterAll(() => fs.rmSync(home, { recursive: true, force: true }));
// A sparse stand-in for the image's root filesystem: only its size matters here.
const rootfsPath = path.join(home, 'rootfs.img');
fs.writeFileSync(rootfsPath, '');
fs.truncateSync(rootfsPath, 1300 * MiB);
const image: Image = {
  dir: home,
  manifest: {} as ImageManifest,
  kernelPath: '/nonexistent/vmlinux',
  initrdPath: '/nonexistent/initrd.cpio',
  rootfsPath,
};

describe('QEMU driver: a new disk must hold the image', () => {
  const backend = new QemuBackend({ home, accel: 'tcg', tscKhz: undefined });

  it('refuses a disk smaller than the root filesystem with invalid_request, and makes nothing', async () => {
    await expect(
      backend.create({ id: 'small-disk', image, resources: { memoryMib: 512, vcpus: 1, diskGib: 1 } }),
    ).rejects.toMatchObject({
      code: 'invalid_request',
      message: expect.stringContaining('ask for at least 2 GiB') as string,
      details: { diskGib: 1, minDiskGib: 2 },
    });
    expect(fs.existsSync(backend.boxDir('small-disk'))).toBe(false);
  });
});

describe('QEMU driver: a box the host cannot start says why', () => {
  it('refuses more memory than the host has with invalid_request, and makes nothing', async () => {
    expect(() => requireMemoryFits({ memoryMib: 4097, vcpus: 1, diskGib: 4 }, 4096 * MiB)).toThrow(
      expect.objectContaining({
        code: 'invalid_request',
        message: "a box of 4097 MiB of memory is larger than this host's 4096 MiB: ask for less",
        details: { memoryMib: 4097, hostMemoryMib: 4096 },
      }),
    );
    expect(() => requireMemoryFits({ memoryMib: 4096, vcpus: 1, diskGib: 4 }, 4096 * MiB)).not.toThrow();

    const backend = new QemuBackend({ home, accel: 'tcg', tscKhz: undefined });
    const hostMib = Math.floor(os.totalmem() / MiB);
    const resources = { memoryMib: hostMib + 1, vcpus: 1, diskGib: 2 };
    await expect(backend.checkResources(image, resources)).rejects.toMatchObject({ code: 'invalid_request' });
    await expect(backend.create({ id: 'too-big', image, resources })).rejects.toMatchObject({
      code: 'invalid_request',
      details: { memoryMib: hostMib + 1, hostMemoryMib: hostMib },
    });
    expect(fs.existsSync(backend.boxDir('too-big'))).toBe(false);
  });

  it('a VMM that exits at start: the error carries its own words, not only its exit code', async () => {
    // A stand-in VMM that fails the way QEMU does when the host refuses the guest's RAM.
    const qemuBinary = path.join(home, 'failing-qemu');
    fs.writeFileSync(
      qemuBinary,
      '#!/bin/sh\necho "qemu-system-x86_64: cannot set up guest memory \'mem\': Cannot allocate memory" >&2\nexit 1\n',
      { mode: 0o755 },
    );
    const backend = new QemuBackend({ home, accel: 'tcg', tscKhz: undefined, qemuBinary });
    const vm = await backend.create({
      id: 'fails-at-start',
      image,
      resources: { memoryMib: 256, vcpus: 1, diskGib: 2 },
    });
    try {
      await expect(vm.start()).rejects.toMatchObject({
        code: 'boot_failed',
        message: expect.stringMatching(
          /exited during boot \(code 1\)[^]*cannot set up guest memory/,
        ) as string,
      });
    } finally {
      await vm.destroy();
    }
  });
});
