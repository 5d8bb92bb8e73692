import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import {
  isSameProcess,
  killProcessesMentioning,
  processStartTime,
  processesMentioning,
} from '../../src/qemu/proc.js';

const children: number[] = [];
afterEach(() => {
  for (const pid of children.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

describe('process identity', () => {
  it('knows a live process by pid and start time', () => {
    const start = processStartTime(process.pid);
    expect(start).toBeGreaterThan(0);
    expect(isSameProcess(process.pid, start!)).toBe(true);
    expect(isSameProcess(process.pid, start! + 1)).toBe(false);
  });

  it('treats an unreaped zombie as dead (a VM orphaned to a PID 1 that never reaps)', async () => {
    // sh forks a short child, then becomes `sleep`, which never waits for it: a zombie remains.
    const parent = spawn('sh', ['-c', 'true & exec sleep 30'], { stdio: 'ignore' });
    children.push(parent.pid!);
    let zombie: number | undefined;
    for (let i = 0; i < 100 && zombie === undefined; i++) {
      await new Promise((r) => setTimeout(r, 20));
      const kids = fs.readFileSync(`/proc/${parent.pid}/task/${parent.pid}/children`, 'utf8').trim();
      const pid = Number(kids.split(' ')[0]);
      if (pid > 0 && / Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))) zombie = pid;
    }
    expect(zombie).toBeDefined();
    expect(processStartTime(zombie!)).toBeUndefined();
    expect(processStartTime(parent.pid!)).toBeGreaterThan(0);
  });

  it('kills the processes mentioning a path and resolves once they are gone, sparing the rest', async () => {
    const marker = `/tmp/agentbox-kill-test-${process.pid}-${Date.now()}`;
    // A process whose argv holds the marker (as a QEMU's holds its box dir).
    const idle = (arg: string) =>
      spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', arg], { stdio: 'ignore' });
    const marked = [idle(`${marker}/box`), idle(`${marker}/box`)];
    const other = idle('/tmp/agentbox-other');
    for (const child of [...marked, other]) children.push(child.pid!);
    await new Promise((r) => setTimeout(r, 300));
    const starts = marked.map((c) => processStartTime(c.pid!)!);
    expect(processesMentioning(marker).sort()).toEqual(marked.map((c) => c.pid!).sort());

    expect(await killProcessesMentioning(marker)).toEqual([]);
    expect(marked.map((c, i) => isSameProcess(c.pid!, starts[i]!))).toEqual([false, false]);
    expect(processesMentioning(marker)).toEqual([]);
    expect(processStartTime(other.pid!)).toBeGreaterThan(0);
    expect(await killProcessesMentioning(marker)).toEqual([]);
  });
});
