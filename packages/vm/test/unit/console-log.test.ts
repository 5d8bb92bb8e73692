import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { consoleArgs, trimConsoleLog } from '../../src/qemu/console-log.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-console-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A guest writing to its serial console without end must not fill the host's disk. */
describe('the console log', () => {
  it('is cut back to its tail past the limit, in place, while the writer keeps appending', () => {
    const file = path.join(dir, 'console.log');
    // QEMU's side: one fd, opened for appending (append=on), held across the cut.
    const qemu = fs.openSync(file, 'a');
    try {
      const line = (i: number) => `line ${String(i).padStart(8, '0')}\n`;
      let all = '';
      for (let i = 0; i < 5000; i++) all += line(i);
      fs.writeSync(qemu, all);
      const inode = fs.statSync(file).ino;
      expect(trimConsoleLog(file, 64 * 1024, 1024)).toBe(true);
      expect(fs.statSync(file).size).toBe(1024);
      expect(fs.readFileSync(file, 'utf8')).toBe(all.slice(-1024));
      fs.writeSync(qemu, 'after the cut\n');
      expect(fs.readFileSync(file, 'utf8')).toBe(`${all.slice(-1024)}after the cut\n`);
      expect(fs.statSync(file).ino).toBe(inode);
      // Under the limit: left alone.
      expect(trimConsoleLog(file, 64 * 1024, 1024)).toBe(false);
    } finally {
      fs.closeSync(qemu);
    }
  });

  it('is fine when missing, and never follows a link put in its place', () => {
    expect(trimConsoleLog(path.join(dir, 'missing.log'))).toBe(false);
    const target = path.join(dir, 'target');
    fs.writeFileSync(target, 'x'.repeat(10_000));
    fs.symlinkSync(target, path.join(dir, 'link.log'));
    expect(trimConsoleLog(path.join(dir, 'link.log'), 100, 10)).toBe(false);
    expect(fs.statSync(target).size).toBe(10_000);
  });

  it('is opened by QEMU for appending, its path quoted for the chardev syntax', () => {
    expect(consoleArgs('/data/a,b/console.log')).toEqual([
      '-chardev',
      'file,id=console,path=/data/a,,b/console.log,append=on',
      '-serial',
      'chardev:console',
    ]);
  });
});
