import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_MAX_BOXES,
  DEFAULT_MAX_CONCURRENT_TASKS,
  DEFAULT_MIN_FREE_DISK_BYTES,
  DEFAULT_MIN_FREE_MEMORY_BYTES,
  DEFAULT_TASK_OUTPUT_LIMITS,
} from '@agentbox/host';
import { parseEnvPairs, shellExitStatus } from '../../src/commands/run.js';
import { buildProgram } from '../../src/main.js';
import { cli } from '../helpers.js';

const oneLine = (s: string) => s.trim().split('\n').length === 1;

describe('agentbox CLI usage errors', () => {
  it.each([
    [['run'], /missing required argument 'command'/],
    [['run', '--memory', 'lots', '--', 'true'], /--memory must be a whole number/],
    [['run', '--cpus', '0', '--', 'true'], /--cpus must be between 1 and 64/],
    [['run', '--disk', '4096', '--', 'true'], /--disk must be between 1 and 2048/],
    // the project commands take run's resource flags, with run's limits
    [['claude', '--memory', '127'], /--memory must be between 128 and 65536/],
    [['shell', '--disk', '0', '--', '-c', 'true'], /--disk must be between 1 and 2048/],
    [
      ['codex', '--repo', 'https://gitlab.com/acme/widget'],
      /--repo expects OWNER\/NAME or https:\/\/github\.com\/OWNER\/NAME, got "https:\/\/gitlab\.com\/acme\/widget"/,
    ],
    [['run', '--timeout', '-1', '--', 'true'], /--timeout must be a number/],
    [['run', '-e', 'NOEQUALS', '--', 'true'], /--env expects KEY=VALUE/],
    [['run', '-e', '1BAD=x', '--', 'true'], /--env expects KEY=VALUE/],
    [['run', '-w', 'relative', '--', 'true'], /--workdir must be an absolute path/],
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['run', '--bogus', '--', 'true'], /unknown option '--bogus'/],
    [
      ['claude', '--model', 'opus'],
      /unknown option '--model' \(claude's own options go after --: agentbox claude -- --model/,
    ],
    // checked before any image is built or box booted, and named as the flag
    [['shell', '--allow-egress', 'foo', '--', '-c', 'true'], /--allow-egress foo: an IP address or CIDR/],
  ])('%j → exit 2 and one clear line', async (args, message) => {
    const r = await cli(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/^agentbox: /);
    expect(oneLine(r.stderr)).toBe(true);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('missing qemu → says to run agentbox setup, no stack trace', async () => {
    const r = await cli(['run', '--', 'true'], { env: { PATH: '/nonexistent' } });
    expect(r.code).toBe(125);
    expect(r.stderr.trim()).toBe('agentbox: qemu-system-x86_64 is not installed; run `agentbox setup`');
  });

  it('a damaged image → says how to rebuild it, no stack trace', async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-home-'));
    try {
      fs.mkdirSync(path.join(home, 'images', 'abcdef0123456789abcdef01'), { recursive: true });
      fs.writeFileSync(path.join(home, 'images', 'abcdef0123456789abcdef01', 'manifest.json'), '{"id": 1');
      const show = await cli(['image', 'show'], { env: { AGENTBOX_HOME: home } });
      expect(show.code).toBe(125);
      expect(show.stderr).toMatch(/unreadable; run `agentbox image build --force`/);
      const doctor = await cli(['doctor', '--json'], {
        env: { AGENTBOX_HOME: home, AGENTBOX_AGENTS: 'claude' },
      });
      expect(doctor.code).toBe(1);
      const report = JSON.parse(doctor.stdout) as { image: { status: string }; problems: { fix: string }[] };
      expect(report.image.status).toBe('invalid');
      expect(report.problems.map((p) => p.fix)).toContain('agentbox image build --force');
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
    }
  });

  it('no image → doctor says to build one', async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-home-'));
    try {
      const doctor = await cli(['doctor', '--json'], {
        env: { AGENTBOX_HOME: home, AGENTBOX_AGENTS: 'claude' },
      });
      const report = JSON.parse(doctor.stdout) as {
        image: { status: string };
        accel: { accel: string; reason: string };
        problems: { problem: string; fix: string }[];
      };
      expect(report.image.status).toBe('missing');
      expect(report.problems).toContainEqual({
        problem: 'no image has been built with the agent CLIs claude',
        fix: 'agentbox image build --agents claude',
      });
      // A bad agent list is one problem of the report, not an error instead of it.
      const bogus = await cli(['doctor', '--json'], {
        env: { AGENTBOX_HOME: home, AGENTBOX_AGENTS: 'bogus' },
      });
      expect(bogus.code).toBe(1);
      const withBogus = JSON.parse(bogus.stdout) as { problems: { problem: string; fix: string }[] };
      expect(withBogus.problems).toContainEqual({
        problem: expect.stringMatching(/bogus/) as string,
        fix: 'set AGENTBOX_AGENTS to a comma-separated list of claude, codex, opencode, or unset it',
      });
      expect(['kvm', 'tcg']).toContain(report.accel.accel);
      expect(report.accel.reason.length).toBeGreaterThan(5);
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
    }
  });

  it('rejects an invalid AGENTBOX_ACCEL with the allowed values', async () => {
    const r = await cli(['doctor', '--json'], { env: { AGENTBOX_ACCEL: 'hvf' } });
    const report = JSON.parse(r.stdout) as { accel: { error: string } };
    expect(report.accel.error).toMatch(/AGENTBOX_ACCEL must be auto, kvm or tcg/);
  });
});

describe('agentbox serve defaults', () => {
  it("are the host's own", () => {
    const serve = buildProgram(() => undefined).commands.find((c) => c.name() === 'serve')!;
    const byFlag = (flag: string) => serve.options.find((o) => o.long === flag)?.defaultValue as unknown;
    expect(byFlag('--max-boxes')).toBe(DEFAULT_MAX_BOXES);
    expect(byFlag('--max-concurrent-tasks')).toBe(DEFAULT_MAX_CONCURRENT_TASKS);
    expect(byFlag('--max-task-output-mib')).toBe(DEFAULT_TASK_OUTPUT_LIMITS.maxBytes / (1024 * 1024));
    expect(byFlag('--max-task-events')).toBe(DEFAULT_TASK_OUTPUT_LIMITS.maxEvents);
    expect(byFlag('--min-free-disk-gib')).toBe(DEFAULT_MIN_FREE_DISK_BYTES / 1024 ** 3);
    expect(byFlag('--min-free-memory-mib')).toBe(DEFAULT_MIN_FREE_MEMORY_BYTES / 1024 ** 2);
  });
});

describe('agentbox project rm', () => {
  it('removes the box of a project directory that is gone, by that path or by its id', async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-home-'));
    try {
      const record = (id: string, root: string) => {
        const dir = path.join(home, 'boxes', id);
        fs.mkdirSync(dir, { recursive: true });
        const state = { root, pid: 2 ** 22 + 1, startTime: 1, configHash: 'x', createdAt: '' };
        fs.writeFileSync(path.join(dir, 'project.json'), JSON.stringify(state));
        return dir;
      };
      const gone = path.join(home, 'deleted-project');
      const first = record('proj-0123456789ab', gone);
      const second = record('proj-ba9876543210', path.join(home, 'moved-project'));
      const env = { AGENTBOX_HOME: home };
      const byPath = await cli(['project', 'rm', gone], { env });
      expect(byPath).toMatchObject({ code: 0, stderr: `agentbox: removed proj-0123456789ab (${gone})\n` });
      expect(fs.existsSync(first)).toBe(false);
      const byId = await cli(['project', 'rm', 'proj-ba9876543210'], { env });
      expect(byId.code).toBe(0);
      expect(fs.existsSync(second)).toBe(false);
      const unknown = await cli(['project', 'rm', path.join(home, 'never-was')], { env });
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toMatch(/^agentbox: .*never-was is neither a directory nor a project box id/);
      expect(oneLine(unknown.stderr)).toBe(true);
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});

describe('run helpers', () => {
  it('maps exits like a shell', () => {
    expect(shellExitStatus({ exitCode: 7, signal: null })).toBe(7);
    expect(shellExitStatus({ exitCode: null, signal: 'SIGKILL' })).toBe(137);
    expect(shellExitStatus({ exitCode: null, signal: 'SIGTERM' })).toBe(143);
  });

  it('parses env pairs, keeping = in values', () => {
    expect(parseEnvPairs(['A=1', 'B=x=y', 'C='])).toEqual({ A: '1', B: 'x=y', C: '' });
  });
});
