import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentboxError } from '@agentbox/protocol';
import { FakeBackend } from '../../src/fake/driver.js';
import type { Vm } from '../../src/backend.js';

// The real guest agent bundle, run as a host process: the protocol end to end, without a VM.
const agentBundlePath = createRequire(import.meta.url).resolve('@agentbox/guest/agent.cjs');
// The native addon the image ships (Node-API: the build's addon loads in this node as in the guest's).
const nativeAddonPath = createRequire(import.meta.url).resolve('@agentbox/guest/agentbox.node');
const image = {} as never;
const resources = { memoryMib: 256, vcpus: 1, diskGib: 1 };

async function collect(vm: Vm, argv: string[], extra: Parameters<Vm['guest']['exec']>[0] = { argv }) {
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  const exit = await vm.guest.exec(
    { ...extra, argv },
    { onStdout: (c) => void stdout.push(c), onStderr: (c) => void stderr.push(c) },
  );
  return { exit, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() };
}

// Every exec behaviour holds whichever way the agent starts processes.
describe.each([
  { starter: 'node', agentArgs: [] as string[], parent: 'node', native: false },
  { starter: 'the native addon', agentArgs: ['--native', nativeAddonPath], parent: 'node', native: true },
])(
  'guest channel against the real guest agent (fake driver), $starter starting processes',
  ({ agentArgs, native }) => {
    let vm: Vm;
    let tmp: string;

    beforeAll(async () => {
      vm = await new FakeBackend({ agentBundlePath, agentArgs }).create({ id: 'fake-1', image, resources });
      await vm.start();
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-unit-'));
    });
    afterAll(async () => {
      await vm.destroy();
      fs.rmSync(tmp, { recursive: true, force: true });
    });

    it(
      native
        ? 'starts processes through the native addon: output on pipes'
        : 'starts processes with node: output on sockets',
      async () => {
        // node's child_process gives a child socketpairs; the addon's posix_spawn gives it pipes.
        const { stdout } = await collect(vm, [
          'sh',
          '-c',
          'readlink /proc/self/fd/1; readlink /proc/self/fd/2',
        ]);
        expect(stdout).toMatch(
          native ? /^pipe:\[\d+\]\npipe:\[\d+\]\n$/ : /^socket:\[\d+\]\nsocket:\[\d+\]\n$/,
        );
      },
    );

    it('says hello with the protocol and image API versions', () => {
      expect(vm.guest.info).toMatchObject({ type: 'hello', protocolVersion: 1, imageApiVersion: 1 });
    });

    it('streams stdout and stderr separately and reports the exit code', async () => {
      const r = await collect(vm, ['sh', '-c', 'echo out; echo err >&2; exit 7']);
      expect(r).toMatchObject({
        stdout: 'out\n',
        stderr: 'err\n',
        exit: { exitCode: 7, signal: null, timedOut: false },
      });
    });

    it('reports a signal instead of an exit code', async () => {
      const r = await collect(vm, ['sh', '-c', 'kill -TERM $$']);
      expect(r.exit).toMatchObject({ exitCode: null, signal: 'SIGTERM' });
    });

    it('passes env and cwd', async () => {
      const r = await collect(vm, ['sh', '-c', 'echo "$FOO:$(pwd)"'], {
        argv: [],
        env: { FOO: 'bar baz' },
        cwd: tmp,
      });
      expect(r.stdout).toBe(`bar baz:${tmp}\n`);
    });

    it('answers 127 with a message for a missing program, like a shell', async () => {
      const r = await collect(vm, ['definitely-not-a-program']);
      expect(r.exit.exitCode).toBe(127);
      expect(r.stderr).toMatch(/definitely-not-a-program: command not found/);
    });

    it('keeps streaming what a descendant writes after the process exited, then ends', async () => {
      const r = await collect(vm, ['sh', '-c', '(sleep 0.3; echo late; echo late-err >&2) & echo early']);
      expect(r).toMatchObject({ stdout: 'early\nlate\n', stderr: 'late-err\n', exit: { exitCode: 0 } });
    });

    it('gives a process no pipe or socket but its stdout and stderr, and leaks none in the agent', async () => {
      const agentPid = vm.guest.info!.agentPid;
      const agentFds = () => fs.readdirSync(`/proc/${agentPid}/fd`);
      // Output once first: the agent opens its splice staging pipe on the first frame it sends.
      await collect(vm, ['echo', 'warm']);
      const before = agentFds().length;
      // Each process lists its own fds (ls itself: a shell running a pipeline holds that
      // pipeline's pipes), all ten at once so each could inherit the others' pipes.
      const runs = await Promise.all(
        Array.from({ length: 10 }, () => collect(vm, ['ls', '-l', '/proc/self/fd'])),
      );
      const fdsOf = (listing: string) =>
        new Map([...listing.matchAll(/ (\d+) -> ((?:pipe|socket):\[\d+\])$/gm)].map((m) => [m[1]!, m[2]!]));
      const listed = runs.map((r) => fdsOf(r.stdout));
      // What no process may hold beyond its own 1 and 2: another exec's output pipes, and what
      // the agent opened for itself (close-on-exec there; what it inherited, like the test
      // runner's own fds, a child inherits too).
      const agentOwn = agentFds()
        .filter((fd) => {
          const flags = fs.readFileSync(`/proc/${agentPid}/fdinfo/${fd}`, 'utf8');
          return (Number.parseInt(/flags:\s+(\d+)/.exec(flags)?.[1] ?? '0', 8) & 0o2000000) !== 0;
        })
        .map((fd) => fs.readlinkSync(`/proc/${agentPid}/fd/${fd}`));
      listed.forEach((fds, i) => {
        expect([...fds.keys()]).toEqual(expect.arrayContaining(['1', '2']));
        const others = listed.filter((_, j) => j !== i).flatMap((o) => [o.get('1'), o.get('2')]);
        const forbidden = new Set([...others, ...agentOwn]);
        for (const [fd, target] of fds)
          if (fd !== '1' && fd !== '2') expect(forbidden, `fd ${fd}`).not.toContain(target);
      });
      expect(agentFds().length).toBe(before);
    });

    it('fails cleanly on a missing working directory', async () => {
      await expect(vm.guest.exec({ argv: ['true'], cwd: '/no/such/dir' })).rejects.toMatchObject({
        code: 'file_not_found',
      });
    });

    it('streams 12 MB of stdout and 1 MB of stderr without loss or mixing, with a slow reader', async () => {
      const file = path.join(tmp, 'out.bin');
      fs.writeFileSync(file, randomBytes(12 * 1024 * 1024));
      const errFile = path.join(tmp, 'err.bin');
      fs.writeFileSync(errFile, randomBytes(1024 * 1024));
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const exit = await vm.guest.exec(
        { argv: ['sh', '-c', `cat ${errFile} >&2 & cat ${file}; wait`] },
        {
          // A sink that takes its time: flow control must hold the rest back, not drop it.
          onStdout: async (c) => {
            out.push(c);
            if (out.length % 16 === 0) await new Promise((r) => setTimeout(r, 5));
          },
          onStderr: (c) => void err.push(c),
        },
      );
      expect(exit.exitCode).toBe(0);
      expect(Buffer.concat(out).equals(fs.readFileSync(file))).toBe(true);
      expect(Buffer.concat(err).equals(fs.readFileSync(errFile))).toBe(true);
    });

    it('feeds binary stdin losslessly', async () => {
      const input = Buffer.concat([
        Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
        randomBytes(3 * 1024 * 1024),
      ]);
      const out: Buffer[] = [];
      const exit = await vm.guest.exec(
        { argv: ['cat'] },
        { stdin: input, onStdout: (c) => void out.push(c) },
      );
      expect(exit.exitCode).toBe(0);
      expect(Buffer.concat(out).equals(input)).toBe(true);
    });

    it("keeps a journaled exec's stdin open: input goes in as it is sent, eof ends it", async () => {
      const journal = `stdin-${native ? 'native' : 'node'}-${process.pid}`;
      const out: Buffer[] = [];
      const running = vm.guest.exec(
        { argv: ['sh', '-c', 'cat; echo done'], journal, stdinOpen: true },
        { onStdout: (c) => void out.push(c) },
      );
      const part = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      for (let tries = 0; ; tries++) {
        // Until the process runs its stdin is not there.
        const sent = await vm.guest.inputExec(journal, part, false).catch((err: AgentboxError) => err);
        if (!(sent instanceof AgentboxError)) break;
        expect(tries).toBeLessThan(100);
        await new Promise((r) => setTimeout(r, 20));
      }
      await vm.guest.inputExec(journal, part, true);
      expect((await running).exitCode).toBe(0);
      expect(Buffer.concat(out).equals(Buffer.concat([part, part, Buffer.from('done\n')]))).toBe(true);
      await vm.guest.forgetExec(journal);
    });

    it("drops a journaled exec's output before its last keepBytes once read (fallocate)", async () => {
      const journal = `keep-${native ? 'native' : 'node'}-${process.pid}`;
      const MiB = 1024 * 1024;
      let read = 0;
      const exit = await vm.guest.exec(
        { argv: ['sh', '-c', `head -c ${4 * MiB} /dev/zero`], journal, keepBytes: MiB },
        { onStdout: (c) => void (read += c.length) },
      );
      expect([exit.exitCode, read]).toEqual([0, 4 * MiB]);
      // Its last pass after the exit: at least 2 MiB dropped (1 MiB steps, the last MiB kept).
      for (let i = 0; (await vm.guest.statExec(journal)).stdoutStart < 2 * MiB; i++) {
        expect(i, 'the output was never trimmed').toBeLessThan(100);
        await new Promise((r) => setTimeout(r, 100));
      }
      // And its blocks freed (the fake driver's journals are on this host, under its tmpdir).
      for (let i = 0; ; i++) {
        const { stdout } = await collect(vm, [
          'sh',
          '-c',
          `du -k ${os.tmpdir()}/agentbox-fake-*/journals/${journal}/stdout`,
        ]);
        if (Number(stdout.split(/\s/)[0]) <= 2 * 1024) break;
        expect(i, `its blocks were never freed: ${stdout}`).toBeLessThan(50);
        await new Promise((r) => setTimeout(r, 100));
      }
      await vm.guest.forgetExec(journal);
    });

    it('kills the whole process group on timeout', async () => {
      const marker = `agentbox-timeout-${process.pid}-${Date.now()}`;
      const r = await collect(
        vm,
        ['bash', '-c', `(exec -a ${marker} sleep 30) & exec -a ${marker} sleep 30`],
        {
          argv: [],
          timeoutMs: 300,
        },
      );
      expect(r.exit).toMatchObject({ timedOut: true, signal: 'SIGKILL' });
      const procs = await vm.guest.listProcesses();
      expect(procs.filter((p) => p.command.includes(marker))).toEqual([]);
    });

    it('cancels a running exec through an AbortSignal', async () => {
      const abort = new AbortController();
      setTimeout(() => abort.abort(), 200);
      const exit = await vm.guest.exec({ argv: ['sleep', '30'] }, { signal: abort.signal });
      expect(exit.signal).toBe('SIGKILL');
    });

    it('cancels an exec whose cancel arrives before its process started', async () => {
      // The cancel follows the request at once: the agent has it before the spawn is done. Lost,
      // the sleep would run out the test's time.
      const exit = await vm.guest.exec({ argv: ['sleep', '30'] }, { signal: AbortSignal.abort() });
      expect(exit.signal).toBe('SIGKILL');
    });

    it('runs 20 execs at once on one channel', async () => {
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => collect(vm, ['sh', '-c', `sleep 0.$((${i} % 3)); echo ${i}`])),
      );
      expect(results.map((r) => r.stdout)).toEqual(Array.from({ length: 20 }, (_, i) => `${i}\n`));
    });

    it('writes and reads a file with equal sha256, atomically', async () => {
      const data = randomBytes(5 * 1024 * 1024 + 17);
      const file = path.join(tmp, 'sub', 'data.bin');
      await expect(vm.guest.writeFile(file, data)).rejects.toMatchObject({ code: 'file_not_found' });
      expect(await vm.guest.writeFile(file, data, { makeParents: true, mode: 0o600 })).toEqual({
        bytes: data.length,
      });
      const back = await vm.guest.readFileBuffer(file);
      expect(createHash('sha256').update(back).digest('hex')).toBe(
        createHash('sha256').update(data).digest('hex'),
      );
      expect((await vm.guest.stat(file)).mode).toBe(0o600);
      expect((await vm.guest.list(path.dirname(file))).entries.map((e) => e.name)).toEqual(['data.bin']);
      // Into memory only up to a bound: a guest's file can be as big as it likes.
      await expect(vm.guest.readFileBuffer(file, { maxBytes: 1024 * 1024 })).rejects.toThrow(
        'larger than 1048576 bytes',
      );
    });

    it('keeps a replaced file’s mode, writes through a symlink, takes a long name', async () => {
      const script = path.join(tmp, 'run.sh');
      fs.writeFileSync(script, 'echo 1\n', { mode: 0o755 });
      await vm.guest.writeFile(script, Buffer.from('echo 2\n'));
      expect(fs.statSync(script).mode & 0o777).toBe(0o755);
      const target = path.join(tmp, 'target.txt');
      const link = path.join(tmp, 'link.txt');
      fs.writeFileSync(target, 'old');
      fs.symlinkSync(target, link);
      await vm.guest.writeFile(link, Buffer.from('new'));
      expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
      expect(fs.readFileSync(target, 'utf8')).toBe('new');
      // ext4 takes 255 bytes; the upload's temporary name must fit beside it.
      const long = path.join(tmp, 'n'.repeat(250));
      await vm.guest.writeFile(long, Buffer.from('x'));
      expect(fs.readFileSync(long, 'utf8')).toBe('x');
      expect(fs.readdirSync(tmp).filter((n) => n.startsWith('.'))).toEqual([]);
    });

    it('cancels an upload whose source fails: the old file stays, no temporary file is left', async () => {
      const file = path.join(tmp, 'kept.txt');
      fs.writeFileSync(file, 'old');
      const source = new Readable({ read: () => undefined });
      source.push(Buffer.alloc(100_000, 1));
      setTimeout(() => source.destroy(new Error('client went away')), 100);
      await expect(vm.guest.writeFile(file, source)).rejects.toMatchObject({
        code: 'invalid_request',
        message: expect.stringMatching(/client went away/),
      });
      await expect.poll(() => fs.readdirSync(tmp).filter((n) => n.startsWith('.'))).toEqual([]);
      expect(fs.readFileSync(file, 'utf8')).toBe('old');
      await expect.poll(() => vm.guest.activeCalls).toBe(0);
    });

    it('reads /proc files to their end; refuses a FIFO without waiting for a writer', async () => {
      const status = (await vm.guest.readFileBuffer('/proc/self/status')).toString();
      expect(status).toMatch(/^Name:/);
      const fifo = path.join(tmp, 'fifo');
      execFileSync('mkfifo', [fifo]);
      expect((await vm.guest.stat(fifo)).type).toBe('other');
      await expect(vm.guest.readFileBuffer(fifo)).rejects.toMatchObject({ code: 'invalid_request' });
      await expect(vm.guest.ping()).resolves.toBeDefined();
    });

    it('lists, makes and removes directories with clear errors', async () => {
      const dir = path.join(tmp, 'a', 'b');
      await vm.guest.mkdir(dir);
      expect((await vm.guest.stat(dir)).type).toBe('directory');
      await expect(vm.guest.remove(path.join(tmp, 'a'))).rejects.toMatchObject({
        code: 'invalid_request',
        message: expect.stringMatching(/not empty/),
      });
      await vm.guest.remove(path.join(tmp, 'a'), true);
      await expect(vm.guest.stat(dir)).rejects.toMatchObject({ code: 'file_not_found' });
      await expect(vm.guest.readFileBuffer(path.join(tmp, 'missing'))).rejects.toMatchObject({
        code: 'file_not_found',
      });
      await expect(vm.guest.list('relative/path')).rejects.toMatchObject({ code: 'invalid_request' });
    });

    it('lists and kills processes', async () => {
      const marker = `agentbox-kill-${process.pid}-${Date.now()}`;
      const running = vm.guest.exec({ argv: ['bash', '-c', `exec -a ${marker} sleep 30`] });
      await new Promise((r) => setTimeout(r, 300));
      const procs = await vm.guest.listProcesses();
      const sleeper = procs.find((p) => p.command.startsWith(marker));
      expect(sleeper).toBeDefined();
      await vm.guest.killProcess(sleeper!.pid, 'SIGKILL');
      expect((await running).signal).toBe('SIGKILL');
      await expect(vm.guest.killProcess(sleeper!.pid)).rejects.toMatchObject({ code: 'process_not_found' });
    });

    it('answers a request that fails validation with invalid_request and keeps serving', async () => {
      await expect(vm.guest.stat('/'.repeat(5000))).rejects.toMatchObject({
        code: 'invalid_request',
        message: expect.stringMatching(/path/),
      });
      expect((await vm.guest.ping()).now).toBeGreaterThan(0);
    });

    it('reports health', async () => {
      const h = await vm.guest.health();
      expect(h.memTotalBytes).toBeGreaterThan(0);
      expect(h.processes).toBeGreaterThan(0);
    });
  },
);

describe('guest channel failures', () => {
  it('refuses a guest that speaks another protocol version, naming both', async () => {
    const vm = await new FakeBackend({ agentBundlePath, agentArgs: ['--protocol-version', '99'] }).create({
      id: 'fake-2',
      image,
      resources,
    });
    try {
      const err = await vm.start().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(AgentboxError);
      expect(err).toMatchObject({
        code: 'version_mismatch',
        message: expect.stringMatching(/protocol v99.*protocol v1/),
      });
    } finally {
      await vm.destroy();
    }
  });

  it('fails in-flight calls with vm_exited when the VM dies, and later calls at once', async () => {
    const vm = await new FakeBackend({ agentBundlePath }).create({ id: 'fake-3', image, resources });
    await vm.start();
    try {
      const pending = vm.guest.exec({ argv: ['sleep', '30'] });
      await new Promise((r) => setTimeout(r, 100));
      await vm.kill();
      await expect(pending).rejects.toMatchObject({ code: 'vm_exited' });
      await expect(vm.guest.ping()).rejects.toMatchObject({ code: 'vm_exited' });
      expect(vm.state).toBe('stopped');
      await expect(vm.start()).rejects.toMatchObject({ code: 'invalid_state' });
    } finally {
      await vm.destroy();
    }
  });
});
