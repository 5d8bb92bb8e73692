import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listDir, statFile } from '../../src/files.js';

// A file name is bytes; JSON paths are UTF-8 text, so some names cannot be listed.
describe('listDir', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-list-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const list = (p: string) => listDir({ op: 'file.list', path: p });

  it('counts a name that is not valid UTF-8 as omitted, and lists the others', async () => {
    // "caf\xe9" is Latin-1 for café: invalid UTF-8, which a lossy decode would turn into "caf\uFFFD".
    fs.writeFileSync(Buffer.concat([Buffer.from(`${dir}/caf`), Buffer.from([0xe9])]), 'latin-1');
    // The name the lossy decode would produce: it must be listed as itself, and only once.
    fs.writeFileSync(path.join(dir, 'caf\uFFFD'), 'replacement character');
    fs.writeFileSync(path.join(dir, 'café'), 'utf-8');
    fs.writeFileSync(path.join(dir, '\uFEFFbom'), 'leading BOM, kept');
    const listing = await list(dir);
    expect(listing.omitted).toBe(1);
    expect(listing.entries.map((e) => e.name)).toEqual(['café', 'caf\uFFFD', '\uFEFFbom']);
    for (const entry of listing.entries) expect(fs.existsSync(entry.path)).toBe(true);
    expect(listing.entries.map((e) => e.size)).toEqual([5, 21, 17]);
  });

  it('counts a directory with an invalid name too, and reports 0 when nothing was left out', async () => {
    fs.mkdirSync(Buffer.concat([Buffer.from(`${dir}/`), Buffer.from([0xff, 0xfe])]));
    fs.writeFileSync(path.join(dir, 'ok.txt'), '');
    expect(await list(dir)).toMatchObject({ entries: [{ name: 'ok.txt' }], omitted: 1 });
    const sub = path.join(dir, 'sub');
    fs.mkdirSync(sub);
    expect(await list(sub)).toEqual({ entries: [], omitted: 0 });
  });

  it('says what a symlink resolves to, and nothing for a dangling one', async () => {
    fs.writeFileSync(path.join(dir, 'file'), 'x');
    fs.mkdirSync(path.join(dir, 'dir'));
    fs.symlinkSync('file', path.join(dir, 'to-file'));
    fs.symlinkSync('dir', path.join(dir, 'to-dir'));
    fs.symlinkSync('nowhere', path.join(dir, 'dangling'));
    fs.symlinkSync('loop', path.join(dir, 'loop'));
    const byName = Object.fromEntries((await list(dir)).entries.map((e) => [e.name, e]));
    expect(byName.file).toMatchObject({ type: 'file' });
    expect(byName.file).not.toHaveProperty('targetType');
    expect(byName['to-file']).toMatchObject({ type: 'symlink', targetType: 'file' });
    expect(byName['to-dir']).toMatchObject({ type: 'symlink', targetType: 'directory' });
    expect(byName.dangling).toMatchObject({ type: 'symlink' });
    expect(byName.dangling).not.toHaveProperty('targetType');
    expect(byName.loop).not.toHaveProperty('targetType');
    await expect(statFile({ op: 'file.stat', path: path.join(dir, 'to-file') })).resolves.toMatchObject({
      type: 'symlink',
      targetType: 'file',
    });
  });

  it('maps a missing directory to file_not_found', async () => {
    await expect(list(path.join(dir, 'missing'))).rejects.toMatchObject({ code: 'file_not_found' });
  });
});
