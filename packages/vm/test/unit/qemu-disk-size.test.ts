import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Image, ImageManifest } from '../../src/image/manifest.js';
import { QemuBackend } from '../../src/qemu/driver.js';

describe('QEMU driver: a new disk must hold the image', () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-disk-'));
  afterAll(() => fs.rmSync(home, { recursive: true, force: true }));
  // A sparse stand-in for the image's root filesystem: only its size matters here.
  const rootfsPath = path.join(home, 'rootfs.img');
  fs.writeFileSync(rootfsPath, '');
  fs.truncateSync(rootfsPath, 1300 * 1024 ** 2);
  const image: Image = {
    dir: home,
    manifest: {} as ImageManifest,
    kernelPath: '/nonexistent/vmlinux',
    initrdPath: '/nonexistent/initrd.cpio',
    rootfsPath,
  };
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
