import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rewriteInPlace } from '../../src/restore.js';

// A clone's identity files (machine-id, hostname, boot id) are rewritten on every restore.
describe('rewriteInPlace', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-rewrite-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('replaces a longer content with a shorter one in the same inode', () => {
    const file = path.join(dir, 'hostname');
    fs.writeFileSync(file, 'a-rather-long-template-hostname\n');
    const inode = fs.statSync(file).ino;
    rewriteInPlace(file, 'box-1\n');
    expect(fs.readFileSync(file, 'utf8')).toBe('box-1\n');
    expect(fs.statSync(file).ino).toBe(inode);
  });

  it('extends a shorter content, and rewrites one of equal length', () => {
    const file = path.join(dir, 'machine-id');
    fs.writeFileSync(file, 'x\n');
    rewriteInPlace(file, `${'a'.repeat(32)}\n`);
    expect(fs.readFileSync(file, 'utf8')).toBe(`${'a'.repeat(32)}\n`);
    rewriteInPlace(file, `${'b'.repeat(32)}\n`);
    expect(fs.readFileSync(file, 'utf8')).toBe(`${'b'.repeat(32)}\n`);
  });

  it('creates a missing file', () => {
    const file = path.join(dir, 'boot_id');
    rewriteInPlace(file, 'id\n');
    expect(fs.readFileSync(file, 'utf8')).toBe('id\n');
  });
});
