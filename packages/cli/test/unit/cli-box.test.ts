import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Box } from '@agentbox/protocol';
import { sdkDaemon, type SdkDaemon } from '../../../sdk/test/helpers/sdk-daemon.js';
import { CLI, cli } from '../helpers.js';
import { formatBoxes } from '../../src/commands/box.js';

/** `agentbox box ls|create|exec|cp|rm` (through @agentbox/sdk) against a daemon on the fake driver. */
describe('agentbox box', () => {
  let d: SdkDaemon;
  let flags: string[];
  let boxId: string;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-cli-box-'));
  beforeAll(async () => {
    d = await sdkDaemon();
    flags = ['--url', d.url, '--key', d.admin];
  });
  afterAll(async () => {
    await d.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('creates a box (its id on stdout) and lists it', async () => {
    const made = await cli(['box', 'create', '--label', 'team=cli', '--memory', '256', ...flags]);
    expect(made.code, made.stderr).toBe(0);
    boxId = made.stdout.trim();
    expect(boxId).toMatch(/^box-[a-z0-9]{10}$/);
    const table = await cli(['box', 'ls', ...flags]);
    expect(table.stdout.split('\n')[0]).toMatch(/^ID\s+STATE\s+RUNTIME\s+MEMORY\s+CPUS\s+AGE\s+USER$/);
    expect(table.stdout).toMatch(
      new RegExp(`^${boxId}\\s+running\\s+bash\\s+256 MiB\\s+1\\s+\\d+s\\s+-$`, 'm'),
    );
    const json = JSON.parse((await cli(['box', 'ls', '--json', ...flags])).stdout) as { boxes: Box[] };
    expect(json.boxes.find((b) => b.id === boxId)).toMatchObject({ labels: { team: 'cli' }, memoryMib: 256 });
  }, 60_000);

  it('runs a command: stdout and stderr apart, its exit status, env, workdir and stdin', async () => {
    const r = await cli(['box', 'exec', boxId, ...flags, '--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    expect(r).toEqual({ code: 7, stdout: 'out\n', stderr: 'err\n' });
    const env = await cli([
      'box',
      'exec',
      boxId,
      '-e',
      'GREETING=hi there',
      ...flags,
      '--',
      'sh',
      '-c',
      'echo "$GREETING"',
    ]);
    expect(env.stdout).toBe('hi there\n');
    const piped = await cli(['box', 'exec', boxId, '-i', ...flags, '--', 'tr', 'a-z', 'A-Z'], {
      stdin: 'shout\n',
    });
    expect(piped).toMatchObject({ code: 0, stdout: 'SHOUT\n' });
    const timedOut = await cli(['box', 'exec', boxId, '--timeout', '0.5', ...flags, '--', 'sleep', '30']);
    expect(timedOut.code).toBe(124);
    const relative = await cli(['box', 'exec', boxId, '-w', 'tmp', ...flags, '--', 'pwd']);
    expect(relative).toMatchObject({ code: 2, stdout: '' });
    expect(relative.stderr).toMatch(/--workdir must be an absolute path/);
  }, 60_000);

  it('background commands: exec --background prints an id; command ls, output (--follow), rm', async () => {
    const go = path.join(tmp, 'go');
    const started = await cli([
      'box',
      'exec',
      boxId,
      '--background',
      ...flags,
      '--',
      'sh',
      '-c',
      `echo first; echo warn >&2; i=0; while [ ! -e ${go} ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.02; done; echo second; exit 3`,
    ]);
    expect(started.code, started.stderr).toBe(0);
    const id = started.stdout.trim();
    expect(id).toMatch(/^cmd-[0-9a-f]{12}$/);
    let sofar = await cli(['box', 'command', 'output', boxId, id, ...flags]);
    for (let i = 0; sofar.stdout === '' && i < 50; i++)
      sofar = await cli(['box', 'command', 'output', boxId, id, ...flags]);
    expect(sofar).toEqual({ code: 0, stdout: 'first\n', stderr: 'warn\n' });
    const table = await cli(['box', 'command', 'ls', boxId, ...flags]);
    expect(table.stdout).toMatch(
      new RegExp(`^${id}\\s+running\\s+\\d+\\s+-\\s+\\d+s\\s+sh -c echo first`, 'm'),
    );
    const following = cli(['box', 'command', 'output', boxId, id, '--follow', ...flags]);
    await new Promise((r) => setTimeout(r, 300));
    fs.writeFileSync(go, '');
    expect(await following).toEqual({ code: 3, stdout: 'first\nsecond\n', stderr: 'warn\n' });
    const json = JSON.parse((await cli(['box', 'command', 'ls', boxId, '--json', ...flags])).stdout) as {
      commands: { id: string; state: string; exitCode: number }[];
    };
    expect(json.commands.find((c) => c.id === id)).toMatchObject({ state: 'exited', exitCode: 3 });
    expect(await cli(['box', 'command', 'rm', boxId, id, ...flags])).toMatchObject({
      code: 0,
      stdout: `${id} deleted\n`,
    });
    // One whose stdin stays open: fed by `command stdin` (several MiB, more than it holds unread).
    const cat = await cli(['box', 'exec', boxId, '--background', '--stdin-open', ...flags, '--', 'wc', '-c']);
    expect(cat.code, cat.stderr).toBe(0);
    const catId = cat.stdout.trim();
    const fed = await cli(['box', 'command', 'stdin', boxId, catId, ...flags], {
      stdin: 'x'.repeat(3 * 1024 * 1024),
    });
    expect(fed).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(await cli(['box', 'command', 'output', boxId, catId, '--follow', ...flags])).toEqual({
      code: 0,
      stdout: `${3 * 1024 * 1024}\n`,
      stderr: '',
    });
    const shut = await cli(['box', 'command', 'stdin', boxId, catId, ...flags], { stdin: 'late' });
    expect(shut.code).not.toBe(0);
    expect(shut.stderr).toMatch(/stdin.* is not open/);
    const openAlone = await cli(['box', 'exec', boxId, '--stdin-open', ...flags, '--', 'true']);
    expect(openAlone.stderr).toMatch(/--stdin-open goes with --background/);
    const lonely = await cli(['box', 'exec', boxId, '--keep-output', '4', ...flags, '--', 'true']);
    expect(lonely).toMatchObject({ code: 2, stdout: '' });
    expect(lonely.stderr).toMatch(/--keep-output goes with --background/);
    const gone = await cli(['box', 'command', 'output', boxId, id, ...flags]);
    expect(gone.code).not.toBe(0);
    expect(gone.stderr).toMatch(new RegExp(`no command ${id} in box ${boxId}`));
  }, 60_000);

  it('copies a file in and out byte for byte, and to stdout', async () => {
    const bytes = randomBytes(300 * 1024);
    const local = path.join(tmp, 'in.bin');
    fs.writeFileSync(local, bytes);
    const up = await cli(['box', 'cp', local, `${boxId}:copied.bin`, ...flags]);
    expect(up.code, up.stderr).toBe(0);
    const back = path.join(tmp, 'out.bin');
    const down = await cli(['box', 'cp', `${boxId}:copied.bin`, back, ...flags]);
    expect(down.code, down.stderr).toBe(0);
    expect(fs.readFileSync(back).equals(bytes)).toBe(true);
    await cli(['box', 'cp', '-', `${boxId}:note.txt`, ...flags], { stdin: 'from stdin\n' });
    expect((await cli(['box', 'cp', `${boxId}:note.txt`, '-', ...flags])).stdout).toBe('from stdin\n');
  }, 60_000);

  it('says what is wrong in one line: a missing local file, a missing box, two local paths', async () => {
    const missing = await cli(['box', 'cp', path.join(tmp, 'nope'), `${boxId}:x`, ...flags]);
    expect(missing).toMatchObject({ code: 2, stdout: '' });
    expect(missing.stderr).toMatch(/^agentbox: cannot read .*nope: ENOENT\n$/);
    const noBox = await cli(['box', 'exec', 'box-0000000000', ...flags, '--', 'true']);
    expect(noBox.code).toBe(125);
    expect(noBox.stderr).toMatch(/^agentbox: .*box-0000000000.*\n$/);
    const local = await cli(['box', 'cp', 'a', 'b', ...flags]);
    expect(local.code).toBe(2);
    expect(local.stderr).toMatch(/BOX:PATH/);
  }, 60_000);

  it('Ctrl-C ends the command in the box too, and exits 130', async () => {
    const child = spawn(
      process.execPath,
      [CLI, 'box', 'exec', boxId, ...flags, '--', 'sh', '-c', 'echo up; exec sleep 77'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.kill('SIGINT');
    const [code] = (await once(child, 'close')) as [number];
    expect(code).toBe(130);
    await expect
      .poll(
        async () =>
          (await cli(['box', 'exec', boxId, ...flags, '--', 'sh', '-c', 'pgrep -f "[s]leep 77" || true']))
            .stdout,
      )
      .toBe('');
  }, 60_000);

  it('deletes boxes', async () => {
    const r = await cli(['box', 'rm', boxId, ...flags]);
    expect(r).toMatchObject({ code: 0, stdout: `${boxId} deleted\n` });
    const after = JSON.parse((await cli(['box', 'ls', '--json', ...flags])).stdout) as { boxes: Box[] };
    expect(after.boxes.some((b) => b.id === boxId && b.state !== 'deleted')).toBe(false);
  }, 60_000);
});

describe('formatBoxes', () => {
  it('says when the daemon holds a box paused, and why', () => {
    const box: Box = {
      id: 'box-0123456789',
      state: 'paused',
      userId: null,
      runtime: 'bash',
      memoryMib: 1024,
      vcpus: 1,
      diskGib: 4,
      ttlSeconds: null,
      labels: {},
      pid: 1,
      createdAt: new Date().toISOString(),
      updatedAt: new Date().toISOString(),
      expiresAt: null,
      bootMs: 200,
      failureReason: null,
      egress: null,
      startMode: 'clone',
      heldFor: 'disk',
    };
    expect(formatBoxes([box])).toMatch(/^box-0123456789\s+paused \(disk\)\s+bash/m);
    expect(formatBoxes([{ ...box, heldFor: null }])).toMatch(/^box-0123456789\s+paused\s+bash/m);
  });
});
