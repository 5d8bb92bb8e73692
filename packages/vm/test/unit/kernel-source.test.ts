import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveKernelSource } from '../../src/image/kernel.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

describe('resolveKernelSource', () => {
  it("asks apt once, then again only when apt's lists or configuration change", async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-kernel-source-'));
    dirs.push(root);
    const home = path.join(root, 'home');
    const lists = path.join(root, 'lists');
    fs.mkdirSync(lists);
    const aptPaths = [lists, path.join(root, 'preferences')]; // the second does not exist
    let asked = 0;
    let candidate = '6.1.100-1';
    const query = () => Promise.resolve((asked++, candidate));

    expect(await resolveKernelSource(home, { query, aptPaths })).toEqual({
      package: 'linux-source-6.1',
      version: '6.1.100-1',
    });
    expect(await resolveKernelSource(home, { query, aptPaths })).toMatchObject({ version: '6.1.100-1' });
    expect(asked).toBe(1);

    // `apt-get update` brought a newer candidate: the lists' dir changed.
    candidate = '6.1.200-1';
    fs.utimesSync(lists, new Date(), new Date(Date.now() + 5_000));
    expect(await resolveKernelSource(home, { query, aptPaths })).toMatchObject({ version: '6.1.200-1' });
    // A preferences file appeared.
    fs.writeFileSync(aptPaths[1]!, '');
    await resolveKernelSource(home, { query, aptPaths });
    expect(asked).toBe(3);

    // A damaged cache is asked around, not trusted.
    fs.writeFileSync(path.join(home, 'cache', 'kernel-source.json'), '{"stamp":');
    expect(await resolveKernelSource(home, { query, aptPaths })).toMatchObject({ version: '6.1.200-1' });
    expect(asked).toBe(4);
  });

  it('caches nothing when apt has no answer', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-kernel-source-'));
    dirs.push(root);
    const failing = () => Promise.reject(new Error('apt knows no linux-source-6.1'));
    await expect(resolveKernelSource(root, { query: failing, aptPaths: [root] })).rejects.toThrow(
      /apt knows/,
    );
    expect(fs.existsSync(path.join(root, 'cache', 'kernel-source.json'))).toBe(false);
  });
});
