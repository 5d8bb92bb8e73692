import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PTY_HELPER } from '../../../guest/src/pty.js';
import { agentEnvFor } from '@agentbox/vm';
import { E2E_IMAGE_ENV } from '../../../../test/e2e-image.js';
import { sharedRuntime } from '../../../../test/helpers.js';
import { CLI, cli } from '../helpers.js';

// One project dir (so one box, booted once and reused by every test) with a GitHub remote.
let project: string;

function gitProject(): string {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-proj-')));
  execFileSync('git', ['init', '-q', dir]);
  execFileSync('git', ['-C', dir, 'remote', 'add', 'origin', 'https://github.com/acme/widget.git']);
  return dir;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** GET http://127.0.0.1:port/ → status, or the connection error code. */
async function get(port: number): Promise<number | string> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(5000) });
    await res.text();
    return res.status;
  } catch (err) {
    return (err as Error & { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
  }
}

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The CLI started in the project dir, collecting its output. */
const children = new Set<ChildProcess>();

function startCli(args: string[]): { child: ChildProcess; out: () => string; done: Promise<number | null> } {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: project,
    env: { ...process.env, ...E2E_IMAGE_ENV },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  children.add(child);
  const done = new Promise<number | null>((resolve) => child.on('close', resolve));
  void done.then(() => children.delete(child));
  return { child, out: () => out, done };
}

function inProject(args: string[], env: NodeJS.ProcessEnv = {}) {
  return cli(args, { env, cwd: project });
}

describe('per-project boxes (real VMs)', () => {
  beforeAll(() => {
    project = gitProject();
  });
  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    const rm = await inProject(['project', 'rm']);
    expect(rm.code).toBe(0);
    fs.rmSync(project, { recursive: true, force: true });
  });

  it('runs a shell command at the host path, sees the repo, writes through to the host, reuses the box, holds only credential placeholders', async () => {
    const r = await inProject(['shell', '--', '-c', 'pwd; git remote -v; echo hi > from-box.txt'], {
      AGENTBOX_PROFILE: '1',
    });
    expect(r.stderr).toMatch(
      /^agentbox profile: project=\d+ms image=\d+ms box=\d+ms mount=\d+ms egress=\d+ms/m,
    );
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe(project);
    expect(r.stdout).toContain('origin\thttps://github.com/acme/widget.git (fetch)');
    expect(fs.readFileSync(path.join(project, 'from-box.txt'), 'utf8')).toBe('hi\n');

    // The same box again: its boot id is unchanged, and a file made on the host is seen at once.
    fs.writeFileSync(path.join(project, 'from-host.txt'), 'host\n');
    const a = await inProject(
      [
        'shell',
        '--',
        '-c',
        'cat /proc/sys/kernel/random/boot_id; cat from-host.txt; printenv ANTHROPIC_API_KEY GH_TOKEN; env | grep -c -e sk-ant-e2e -e ghp_e2e; true',
      ],
      // Host credentials reach the box only as placeholders.
      { ANTHROPIC_API_KEY: 'sk-ant-e2e-secret', GH_TOKEN: 'ghp_e2e_secret' },
    );
    const b = await inProject([
      'shell',
      '--',
      '-c',
      'cat /proc/sys/kernel/random/boot_id; printenv BUN_JSC_useDFGJIT BUN_JSC_useFTLJIT; exit 5',
    ]);
    expect(a.stdout.split('\n')[1]).toBe('host');
    expect(a.stdout.split('\n').slice(2, 5)).toEqual([
      expect.stringMatching(/^agentbox-ph-[0-9a-f]+$/),
      expect.stringMatching(/^agentbox-ph-[0-9a-f]+$/),
      '0',
    ]);
    expect(b.code).toBe(5);
    expect(b.stdout.split('\n')[0]).toBe(a.stdout.split('\n')[0]);
    // The agents' environment for this accelerator (under TCG, Bun's JITs off), as in daemon tasks.
    const { accel } = (await sharedRuntime()).accel;
    expect(b.stdout.split('\n').slice(1, -1)).toEqual(Object.values(agentEnvFor(accel)));
  });

  it('runs an executable .agentbox.runtime.sh first and aborts with its output when it fails', async () => {
    const script = path.join(project, '.agentbox.runtime.sh');
    fs.writeFileSync(script, '#!/bin/sh\necho prepared > /tmp/prepared\n', { mode: 0o755 });
    const ok = await inProject(['shell', '--', '-c', 'cat /tmp/prepared']);
    expect(ok).toMatchObject({ code: 0, stdout: 'prepared\n' });
    fs.writeFileSync(script, '#!/bin/sh\necho setup went wrong; exit 3\n', { mode: 0o755 });
    const bad = await inProject(['shell', '--', '-c', 'echo should-not-run']);
    expect(bad.code).toBe(3);
    expect(bad.stdout).not.toContain('should-not-run');
    expect(bad.stderr).toContain('setup went wrong');
    fs.rmSync(script);
  });

  it('publishes a box port with --publish, and not without it', async () => {
    const [hostPort, guestPort] = [await freePort(), await freePort()];
    // The server runs until the test drops a file in the (shared) project dir.
    const serve = (flag: string) =>
      `(cd /tmp && exec python3 -m http.server ${guestPort}) >/dev/null 2>&1 & ` +
      `while [ ! -f ${flag} ]; do sleep 0.2; done; kill %1`;
    const published = startCli([
      'shell',
      '--publish',
      `${hostPort}:${guestPort}`,
      '--',
      '-c',
      serve('stop1'),
    ]);
    expect(
      await until(
        () => get(hostPort),
        (s) => s === 200,
        60_000,
      ),
    ).toBe(200);
    fs.writeFileSync(path.join(project, 'stop1'), '');
    expect(await published.done).toBe(0);
    expect(await get(hostPort)).toBe('ECONNREFUSED');

    const unpublished = startCli([
      'shell',
      '--',
      '-c',
      `(cd /tmp && exec python3 -m http.server ${guestPort}) >/dev/null 2>&1 & sleep 3; echo serving; ` +
        `while [ ! -f stop2 ]; do sleep 0.2; done; kill %1`,
    ]);
    await until(
      async () => unpublished.out(),
      (o) => o.includes('serving'),
      60_000,
    );
    expect(await get(hostPort)).toBe('ECONNREFUSED');
    expect(await get(guestPort)).toBe('ECONNREFUSED');
    fs.writeFileSync(path.join(project, 'stop2'), '');
    expect(await unpublished.done).toBe(0);
  });

  it('--auto-publish mirrors a new box listener to the same host port within a second', async () => {
    const port = await freePort();
    const run = startCli([
      'shell',
      '--auto-publish',
      '--',
      '-c',
      `sleep 2; (cd /tmp && exec python3 -m http.server ${port}) >/dev/null 2>&1 & ` +
        `until grep -q ':${port.toString(16).toUpperCase().padStart(4, '0')} 00000000:0000 0A' /proc/net/tcp; do sleep 0.05; done; ` +
        `echo listening; while [ ! -f stop3 ]; do sleep 0.2; done; kill %1`,
    ]);
    await until(
      async () => run.out(),
      (o) => o.includes('listening'),
      60_000,
    );
    const seen = Date.now();
    expect(
      await until(
        () => get(port),
        (s) => s === 200,
        5_000,
      ),
    ).toBe(200);
    const ms = Date.now() - seen;
    expect(ms).toBeLessThan(1000);
    expect(run.out()).toContain(`published box port ${port} at 127.0.0.1:${port}`);
    fs.writeFileSync(path.join(project, 'stop3'), '');
    expect(await run.done).toBe(0);
  });

  it('ends the command in the box when agentbox is interrupted, leaving the box running', async () => {
    const run = startCli(['shell', '--', '-c', 'echo started; exec sleep 100']);
    await until(
      async () => run.out(),
      (o) => o.includes('started'),
      60_000,
    );
    run.child.kill('SIGINT');
    expect(await run.done).toBe(130);
    const after = await inProject(['shell', '--', '-c', 'pgrep -x sleep || echo none']);
    expect(after).toMatchObject({ code: 0, stdout: 'none\n' });
  });

  it('gives the shell a terminal: tty, window size and resize, Ctrl-C, exit status', async () => {
    // A pseudo-terminal on the host side too: the same python helper the guest uses.
    const child = spawn('python3', ['-c', PTY_HELPER, '30', '100', process.execPath, CLI, 'shell'], {
      cwd: project,
      env: { ...process.env, ...E2E_IMAGE_ENV, TERM: 'xterm' },
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
    });
    children.add(child);
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const done = new Promise<number | null>((resolve) => child.on('close', resolve));
    const expectOutput = async (re: RegExp, ms = 60_000) => {
      expect(
        await until(
          async () => out,
          (o) => re.test(o),
          ms,
        ),
      ).toMatch(re);
    };
    await expectOutput(/# $/m);
    child.stdin.write('tty; stty size\r');
    await expectOutput(/\/dev\/pts\/\d+\s+30 100/);
    (child.stdio[3] as NodeJS.WritableStream).write('41 123\n');
    await new Promise((r) => setTimeout(r, 500));
    child.stdin.write('stty size\r');
    await expectOutput(/41 123/);
    child.stdin.write('sleep 100\r');
    await new Promise((r) => setTimeout(r, 1000));
    const interrupted = Date.now();
    child.stdin.write('\x03');
    child.stdin.write('echo after=$?\r');
    await expectOutput(/after=130/, 10_000);
    expect(Date.now() - interrupted).toBeLessThan(5_000);
    child.stdin.write('exit 3\r');
    expect(await done).toBe(3);
  });
});

describe('a project another user owns, the command run as root (real VM)', () => {
  /** nobody: a user that owns nothing else here. */
  const OWNER = 65534;
  let owned: string;
  beforeAll(() => {
    owned = gitProject();
    // Reachable by every user of the host, as a shared checkout would be.
    fs.chmodSync(owned, 0o755);
    execFileSync('chown', ['-R', `${OWNER}:${OWNER}`, owned]);
  });
  afterAll(async () => {
    expect((await cli(['project', 'rm'], { cwd: owned })).code).toBe(0);
    fs.rmSync(owned, { recursive: true, force: true });
  });

  const bootId = 'cat /proc/sys/kernel/random/boot_id';

  it.runIf(process.geteuid?.() === 0)(
    "the VM runs as the owner: what the box makes there is the owner's, never root's, and the next command re-attaches",
    async () => {
      // An attempt to plant a setuid-root shell: the chown is refused, the setuid bit is the owner's.
      const r = await cli(
        [
          'shell',
          '--',
          '-c',
          `cp /bin/sh planted && chown 0:0 planted; chmod 4755 planted; echo made > made.txt; ${bootId}`,
        ],
        { cwd: owned },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).not.toContain('running as root');
      const planted = fs.statSync(path.join(owned, 'planted'));
      expect([planted.uid, planted.mode & 0o4000]).toEqual([OWNER, 0o4000]);
      expect(fs.statSync(path.join(owned, 'made.txt')).uid).toBe(OWNER);
      const listed = JSON.parse((await cli(['project', 'ls', '--json'])).stdout) as {
        boxes: { id: string; root: string }[];
      };
      const id = listed.boxes.find((box) => box.root === owned)!.id;
      const pid = execFileSync('pgrep', ['-f', `qemu-system.*${id}`])
        .toString()
        .trim()
        .split('\n')[0]!;
      expect(fs.readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${OWNER}\\s`, 'm'));

      // Its sockets are where the owner reaches them: the next command finds the same VM.
      const again = await cli(['shell', '--', '-c', `cat made.txt; ${bootId}`], { cwd: owned });
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toBe(`made\n${r.stdout.trim().split('\n').at(-1)}\n`);
    },
  );
});
