import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GuestService } from '../../src/service.js';
import { Host, transportTo, until } from '../helpers/host-end.js';

// A journaled exec is what lets a task outlive its daemon: the process writes to files in the
// guest, and the next host session (a restarted daemon) takes the run up where it had got to.
describe('journaled execs', () => {
  let dir: string;
  let journals: string;
  let host: Host;
  let service: GuestService;

  const newService = () =>
    new GuestService(
      transportTo((chunk) => host.mux.receive(chunk)),
      { exec: { cwd: dir }, journalRoot: journals },
    );
  /** A restarted daemon: a new host session on the same agent. */
  const reconnect = () => {
    host = new Host((chunk) => service.mux.receive(chunk));
    void host.mux.sendJson(0, { op: 'hello' });
  };

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-journal-'));
    journals = path.join(dir, 'journals');
    service = newService();
    host = new Host((chunk) => service.mux.receive(chunk));
  });
  afterEach(async () => {
    // A test that failed midway leaves its scripts waiting for their go: they end now.
    fs.writeFileSync(path.join(dir, 'go'), '');
    await new Promise((r) => setTimeout(r, 100));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Shell that waits for the test's go (60 s at most: a failed test leaves no process behind). */
  const untilGo = () => `i=0; while [ ! -e ${dir}/go ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.02; done`;
  /** A script that prints, waits for the test's go, prints again, and exits 5. */
  const twoPhases = () => ['sh', '-c', `echo one; echo e1 >&2; ${untilGo()}; echo two; echo e2 >&2; exit 5`];
  const journalFiles = (id: string) => path.join(journals, id);
  const gone = (pid: number) => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  };
  /**
   * What an agent that died left: a journal whose process (a `sleep 30`) is not this agent's
   * child (init's). Returns its pid.
   */
  const leftByDeadAgent = (id: string, stdout: string, run: object = {}) => {
    const orphan = Number(
      execFileSync('sh', ['-c', 'sleep 30 </dev/null >/dev/null 2>&1 & echo $!'], {
        encoding: 'utf8',
      }).trim(),
    );
    const left = journalFiles(id);
    fs.mkdirSync(left, { recursive: true });
    fs.writeFileSync(path.join(left, 'stdout'), stdout);
    fs.writeFileSync(path.join(left, 'stderr'), '');
    fs.writeFileSync(
      path.join(left, 'run.json'),
      JSON.stringify({ pid: orphan, startedAtMs: Date.now(), ...run }),
    );
    return orphan;
  };

  it('answers as an exec does: stdin (read from a file first), stdout and stderr apart, the exit; kept until forgotten', async () => {
    host.open(
      1,
      { op: 'exec', argv: ['sh', '-c', 'cat; echo err >&2; exit 3'], journal: 'j1', stdin: true },
      'hello\n',
    );
    await until(() => host.last(1) !== undefined);
    expect(host.last(1)).toMatchObject({ type: 'exit', exitCode: 3, signal: null, timedOut: false });
    expect(host.types(1)).toEqual(['started', 'exit']);
    expect(host.data.get(1)).toBe('hello\n');
    expect(host.stderr.get(1)).toBe('err\n');
    // Kept until the host says it has the exit.
    expect(fs.readdirSync(journalFiles('j1')).sort()).toEqual([
      'exit.json',
      'run.json',
      'stderr',
      'stdin',
      'stdout',
    ]);
    host.open(2, { op: 'exec.forget', journal: 'j1' });
    await until(() => host.last(2) !== undefined);
    expect(host.last(2)).toMatchObject({ type: 'result' });
    expect(fs.existsSync(journalFiles('j1'))).toBe(false);
  });

  it('keeps running when its host goes; the next session attaches at its offsets and gets the rest and the exit', async () => {
    host.open(1, { op: 'exec', argv: twoPhases(), journal: 'j2' });
    await until(() => host.data.get(1) === 'one\n' && host.stderr.get(1) === 'e1\n');
    reconnect();
    // It goes on with no host to read it, and ends.
    fs.writeFileSync(path.join(dir, 'go'), '');
    await until(() => fs.existsSync(path.join(journalFiles('j2'), 'exit.json')));
    host.open(1, { op: 'exec.attach', journal: 'j2', stdoutOffset: 4, stderrOffset: 3 });
    await until(() => host.last(1) !== undefined);
    expect(host.last(1)).toMatchObject({ type: 'exit', exitCode: 5 });
    expect(host.data.get(1)).toBe('two\n');
    expect(host.stderr.get(1)).toBe('e2\n');
    // Forgotten once the host kept the exit: a later attach finds nothing.
    host.open(2, { op: 'exec.forget', journal: 'j2' });
    await until(() => host.last(2) !== undefined);
    host.open(3, { op: 'exec.attach', journal: 'j2', stdoutOffset: 0, stderrOffset: 0 });
    await until(() => host.last(3) !== undefined);
    expect(host.last(3)).toMatchObject({ type: 'error', code: 'process_not_found' });
  });

  it('is kept for the next session when it ends with nothing more to say after its host went', async () => {
    host.open(1, {
      op: 'exec',
      argv: ['sh', '-c', `echo one; ${untilGo()}; exit 4`],
      journal: 'j9',
    });
    await until(() => host.data.get(1) === 'one\n');
    reconnect();
    fs.writeFileSync(path.join(dir, 'go'), '');
    await until(() => fs.existsSync(path.join(journalFiles('j9'), 'exit.json')));
    // Time for the old session's follower to see the exit (it must not take the journal with it).
    await new Promise((r) => setTimeout(r, 200));
    host.open(1, { op: 'exec.attach', journal: 'j9', stdoutOffset: 4, stderrOffset: 0 });
    await until(() => host.last(1) !== undefined);
    expect(host.last(1)).toMatchObject({ type: 'exit', exitCode: 4 });
    expect(host.data.get(1)).toBeUndefined();
  });

  it('follows a run still going: all of it from offset 0, then what it prints later', async () => {
    host.open(1, { op: 'exec', argv: twoPhases(), journal: 'j3' });
    await until(() => host.data.get(1) === 'one\n');
    reconnect();
    host.open(1, { op: 'exec.attach', journal: 'j3', stdoutOffset: 0, stderrOffset: 0 });
    await until(() => host.data.get(1) === 'one\n');
    expect(host.types(1)).toEqual(['started']);
    fs.writeFileSync(path.join(dir, 'go'), '');
    await until(() => host.last(1) !== undefined);
    expect(host.data.get(1)).toBe('one\ntwo\n');
    expect(host.stderr.get(1)).toBe('e1\ne2\n');
    expect(host.last(1)).toMatchObject({ type: 'exit', exitCode: 5 });
  });

  it('kills the process group on a cancel of the attach', async () => {
    host.open(1, { op: 'exec', argv: ['sh', '-c', 'sleep 30 & wait'], journal: 'j4' });
    await until(() => host.types(1).includes('started'));
    reconnect();
    host.open(1, { op: 'exec.attach', journal: 'j4', stdoutOffset: 0, stderrOffset: 0 });
    await until(() => host.types(1).includes('started'));
    void host.mux.sendJson(1, { type: 'cancel' });
    await until(() => host.last(1) !== undefined);
    expect(host.last(1)).toMatchObject({ type: 'exit', exitCode: null, signal: 'SIGKILL' });
  });

  it('is taken up by a restarted agent too, which says the exit status was lost once the process ends', async () => {
    const orphan = leftByDeadAgent('j5', 'one\ntwo\n');
    host.open(1, { op: 'exec.attach', journal: 'j5', stdoutOffset: 4, stderrOffset: 0 });
    await until(() => host.data.get(1) === 'two\n');
    expect(host.json.get(1)).toEqual([{ type: 'started', pid: orphan }]);
    process.kill(orphan, 'SIGKILL');
    await until(() => host.last(1) !== undefined);
    expect(host.last(1)).toMatchObject({ type: 'error', code: 'guest_error' });
    expect(host.last(1)!.message).toMatch(/exit status of process \d+ was lost/);
  });

  it('is killed at its deadline by a restarted agent, which writes that it timed out', async () => {
    // With a timeout it was to enforce.
    const deadlineMonoMs = Number(process.hrtime.bigint() / 1_000_000n) + 800;
    const orphan = leftByDeadAgent('j13', 'one\n', { deadlineMonoMs });
    // The agent starts (as main does), and no host asks about the journal yet.
    service = newService();
    service.resumeJournals();
    host = new Host((chunk) => service.mux.receive(chunk));
    await until(() => gone(orphan), 5000);
    expect(Number(process.hrtime.bigint() / 1_000_000n)).toBeGreaterThanOrEqual(deadlineMonoMs);
    host.open(1, { op: 'exec.attach', journal: 'j13', stdoutOffset: 0, stderrOffset: 0 });
    await until(() => host.last(1) !== undefined);
    expect(host.data.get(1)).toBe('one\n');
    expect(host.last(1)).toMatchObject({ type: 'exit', exitCode: null, signal: 'SIGKILL', timedOut: true });
  });

  it('sends stderr again from its last 64 KiB at most (a host keeps its tail only)', async () => {
    host.open(1, {
      op: 'exec',
      argv: ['sh', '-c', 'head -c 100000 /dev/zero | tr "\\0" e >&2; echo end >&2'],
      journal: 'j12',
    });
    await until(() => host.last(1) !== undefined);
    expect(host.stderr.get(1)!.length).toBe(100_004);
    reconnect();
    host.open(1, { op: 'exec.attach', journal: 'j12', stdoutOffset: 0, stderrOffset: 0 });
    await until(() => host.last(1) !== undefined);
    expect(host.stderr.get(1)).toBe(`${'e'.repeat(64 * 1024 - 4)}end\n`);
  });

  it('is dropped, not started, when its host goes before all of its stdin came', async () => {
    host.open(1, { op: 'exec', argv: ['cat'], journal: 'j11', stdin: true });
    void host.mux.sendData(1, 'data', Buffer.from('half a prompt'));
    await until(() => fs.existsSync(path.join(journalFiles('j11'), 'stdin')));
    reconnect();
    await until(() => !fs.existsSync(journalFiles('j11')));
  });

  it('says a process of an earlier boot is gone (its pid is another process’s now)', async () => {
    const left = journalFiles('j10');
    fs.mkdirSync(left, { recursive: true });
    fs.writeFileSync(path.join(left, 'stdout'), 'one\n');
    fs.writeFileSync(path.join(left, 'stderr'), '');
    fs.writeFileSync(
      path.join(left, 'run.json'),
      JSON.stringify({ pid: process.pid, startedAtMs: Date.now(), bootId: 'an-earlier-boot' }),
    );
    host.open(1, { op: 'exec.attach', journal: 'j10', stdoutOffset: 0, stderrOffset: 0 });
    await until(() => host.last(1) !== undefined);
    expect(host.last(1)).toMatchObject({ type: 'error', code: 'process_not_found' });
    expect(host.last(1)!.message).toMatch(/the box restarted while process \d+ ran/);
  });

  it('refuses a journal id in use, an attach to no journal, a journal with a pty, an id that is no file name', async () => {
    host.open(1, { op: 'exec', argv: ['sleep', '5'], journal: 'j6' });
    await until(() => host.types(1).includes('started'));
    host.open(2, { op: 'exec', argv: ['true'], journal: 'j6' });
    host.open(3, { op: 'exec.attach', journal: 'nope', stdoutOffset: 0, stderrOffset: 0 });
    host.open(4, { op: 'exec', argv: ['true'], journal: 'j7', pty: { rows: 24, cols: 80 } });
    host.open(5, { op: 'exec', argv: ['true'], journal: '../etc' });
    await until(() => [2, 3, 4, 5].every((c) => host.last(c) !== undefined));
    expect(host.last(2)).toMatchObject({
      type: 'error',
      code: 'invalid_request',
      message: 'exec journal j6 exists already',
    });
    expect(host.last(3)).toMatchObject({ type: 'error', code: 'process_not_found' });
    expect(host.last(4)).toMatchObject({ type: 'error', code: 'invalid_request' });
    expect(host.last(5)).toMatchObject({ type: 'error', code: 'invalid_request' });
    expect(fs.readdirSync(journals)).toEqual(['j6']);
    void host.mux.sendJson(1, { type: 'cancel' });
    await until(() => host.last(1) !== undefined);
  });

  it('a watch (a background command read by a client) ends on a cancel and leaves the process running', async () => {
    host.open(1, { op: 'exec', argv: twoPhases(), journal: 'w1', watch: true });
    await until(() => host.data.get(1) === 'one\n');
    void host.mux.sendJson(1, { type: 'cancel' });
    // Ended at once and unanswered: the host let go of it.
    await new Promise((r) => setTimeout(r, 100));
    expect(host.last(1)).toBeUndefined();
    host.open(2, { op: 'exec.attach', journal: 'w1', stdoutOffset: 0, stderrOffset: 0, watch: true });
    await until(() => host.data.get(2) === 'one\n');
    void host.mux.sendJson(2, { type: 'cancel' });
    host.open(3, { op: 'exec.stat', journal: 'w1' });
    await until(() => host.last(3) !== undefined);
    expect(host.last(3)).toMatchObject({
      type: 'result',
      value: { state: 'running', exit: null, stdoutBytes: 4, stderrBytes: 3 },
    });
    // An exit watcher: offsets past the end, so none of the output, then the exit.
    const end = Number.MAX_SAFE_INTEGER;
    host.open(4, { op: 'exec.attach', journal: 'w1', stdoutOffset: end, stderrOffset: end, watch: true });
    await until(() => host.types(4).includes('started'));
    fs.writeFileSync(path.join(dir, 'go'), '');
    await until(() => host.last(4) !== undefined);
    expect(host.last(4)).toMatchObject({ type: 'exit', exitCode: 5 });
    expect(host.data.get(4)).toBeUndefined();
    expect(host.stderr.get(4)).toBeUndefined();
    host.open(5, { op: 'exec.stat', journal: 'w1' });
    await until(() => host.last(5) !== undefined);
    expect(host.last(5)).toMatchObject({
      value: { state: 'exited', exit: { exitCode: 5 }, stdoutBytes: 8, stderrBytes: 6 },
    });
  });

  it("a watch sends stderr from the offset asked, and what an earlier boot's process printed before saying it is gone", async () => {
    const left = journalFiles('w2');
    fs.mkdirSync(left, { recursive: true });
    fs.writeFileSync(path.join(left, 'stdout'), 'one\n');
    fs.writeFileSync(path.join(left, 'stderr'), 'x'.repeat(100_000));
    fs.writeFileSync(
      path.join(left, 'run.json'),
      JSON.stringify({ pid: process.pid, startedAtMs: Date.now(), bootId: 'an-earlier-boot' }),
    );
    host.open(1, { op: 'exec.attach', journal: 'w2', stdoutOffset: 0, stderrOffset: 0, watch: true });
    await until(() => host.last(1) !== undefined);
    expect(host.data.get(1)).toBe('one\n');
    expect(host.stderr.get(1)!.length).toBe(100_000);
    expect(host.last(1)).toMatchObject({ type: 'error', code: 'process_not_found' });
    host.open(2, { op: 'exec.stat', journal: 'w2' });
    host.open(3, { op: 'exec.stat', journal: 'nope' });
    await until(() => host.last(2) !== undefined && host.last(3) !== undefined);
    expect(host.last(2)).toMatchObject({ value: { state: 'lost', pid: process.pid, exit: null } });
    expect(host.last(3)).toMatchObject({ type: 'error', code: 'process_not_found' });
  });

  it('forgets a journal whose process runs: the process is killed and the agent goes on', async () => {
    host.open(1, { op: 'exec', argv: ['sleep', '30'], journal: 'w3', watch: true });
    await until(() => host.types(1).includes('started'));
    const pid = (host.json.get(1)![0] as { pid: number }).pid;
    host.open(2, { op: 'exec.forget', journal: 'w3' });
    await until(() => host.last(2) !== undefined);
    expect(host.last(2)).toMatchObject({ type: 'result' });
    // Its exit comes to a journal that is gone: nothing to write, nothing thrown.
    await until(() => gone(pid));
    await until(() => host.last(1) !== undefined);
    expect(host.last(1)).toMatchObject({ type: 'error', code: 'process_not_found' });
    host.open(3, { op: 'ping' });
    await until(() => host.last(3) !== undefined);
    expect(host.last(3)).toMatchObject({ type: 'result' });
  });

  it('keeps only about the last keepBytes of each stream: the rest is punched out, a read from 0 is told it was skipped', async () => {
    const MiB = 1024 * 1024;
    const script = `head -c ${5 * MiB} /dev/zero | tr "\\0" a; printf END; ${untilGo()}`;
    host.open(1, { op: 'exec', argv: ['sh', '-c', script], journal: 'k1', watch: true, keepBytes: MiB });
    await until(() => host.types(1).includes('started'));
    void host.mux.sendJson(1, { type: 'cancel' });
    const file = path.join(journalFiles('k1'), 'stdout');
    const stat = async () => {
      host.open(9, { op: 'exec.stat', journal: 'k1' });
      await until(() => host.last(9) !== undefined);
      const value = (host.last(9) as { value: { stdoutStart: number; stdoutBytes: number } }).value;
      host.json.delete(9);
      return value;
    };
    // Dropped in steps of at least 1 MiB, at 64 KiB boundaries, leaving at least keepBytes.
    await until(
      () => fs.statSync(file).size === 5 * MiB + 3 && fs.statSync(file).blocks * 512 < 2.2 * MiB,
      10_000,
    );
    const { stdoutStart, stdoutBytes } = await stat();
    expect(stdoutBytes).toBe(5 * MiB + 3);
    expect(stdoutStart % (64 * 1024)).toBe(0);
    expect(stdoutStart).toBeGreaterThanOrEqual(2 * MiB);
    expect(stdoutStart).toBeLessThanOrEqual(4 * MiB + 3 - ((4 * MiB + 3) % (64 * 1024)));
    // A read from 0 is told where the kept output starts, and gets all of that.
    host.open(2, { op: 'exec.attach', journal: 'k1', stdoutOffset: 0, stderrOffset: 0, watch: true });
    await until(() => (host.data.get(2) ?? '').endsWith('END'), 10_000);
    expect(host.json.get(2)![1]).toEqual({ type: 'skipped', stream: 'stdout', offset: stdoutStart });
    expect(host.data.get(2)!.length).toBe(5 * MiB + 3 - stdoutStart);
    expect(host.data.get(2)!.slice(0, 10)).toBe('aaaaaaaaaa');
    fs.writeFileSync(path.join(dir, 'go'), '');
    await until(() => host.last(2) !== undefined);
    expect(host.last(2)).toMatchObject({ type: 'exit', exitCode: 0 });
  });

  it('never drops output a live reader has not read yet', async () => {
    const MiB = 1024 * 1024;
    host.open(1, {
      op: 'exec',
      argv: ['sh', '-c', `head -c ${12 * MiB} /dev/zero; ${untilGo()}`],
      journal: 'k2',
      watch: true,
      keepBytes: MiB,
    });
    await until(() => host.types(1).includes('started'));
    void host.mux.sendJson(1, { type: 'cancel' });
    // A reader that stops acknowledging: it stalls once its window (4 MiB) is full.
    host.open(
      2,
      { op: 'exec.attach', journal: 'k2', stdoutOffset: 0, stderrOffset: 0, watch: true },
      undefined,
      {
        hold: true,
      },
    );
    const file = path.join(journalFiles('k2'), 'stdout');
    await until(() => fs.statSync(file).size === 12 * MiB, 10_000);
    await new Promise((r) => setTimeout(r, 2500));
    const held = host.data.get(2)!.length;
    expect(held).toBeLessThanOrEqual(5 * MiB);
    const dropped = () =>
      (
        JSON.parse(fs.readFileSync(path.join(journalFiles('k2'), 'dropped.json'), 'utf8')) as {
          stdout: number;
        }
      ).stdout;
    expect(dropped()).toBeLessThanOrEqual(held);
    // Once it goes, the output is trimmed to about its last MiB.
    void host.mux.sendJson(2, { type: 'cancel' });
    await until(() => dropped() >= 10 * MiB, 5000);
    fs.writeFileSync(path.join(dir, 'go'), '');
  });

  it('keeps its stdin open when asked: input reaches it in order, eof ends it; refused when not open', async () => {
    host.open(1, {
      op: 'exec',
      argv: ['sh', '-c', 'cat; echo done'],
      journal: 'i1',
      watch: true,
      stdinOpen: true,
    });
    await until(() => host.types(1).includes('started'));
    let channel = 10;
    const input = async (journal: string, text: string, eof = false) => {
      const c = channel++;
      host.open(c, { op: 'exec.input', journal, data: Buffer.from(text).toString('base64'), eof });
      await until(() => host.last(c) !== undefined);
      return host.last(c)!;
    };
    expect(await input('i1', 'one\n')).toEqual({ type: 'result', value: { bytes: 4 } });
    await until(() => host.data.get(1) === 'one\n');
    expect(await input('i1', 'two\n')).toEqual({ type: 'result', value: { bytes: 4 } });
    expect(await input('i1', 'three\n', true)).toEqual({ type: 'result', value: { bytes: 6 } });
    await until(() => host.last(1) !== undefined);
    expect(host.data.get(1)).toBe('one\ntwo\nthree\ndone\n');
    expect(host.last(1)).toMatchObject({ type: 'exit', exitCode: 0 });
    // Closed now; never opened; no such journal.
    expect(await input('i1', 'four\n')).toMatchObject({ type: 'error', code: 'invalid_state' });
    host.open(2, { op: 'exec', argv: ['sleep', '30'], journal: 'i2', watch: true });
    await until(() => host.types(2).includes('started'));
    expect(await input('i2', 'x')).toMatchObject({ type: 'error', code: 'invalid_state' });
    expect(await input('i9', 'x')).toMatchObject({ type: 'error', code: 'process_not_found' });
    host.open(3, { op: 'exec.forget', journal: 'i2' });
    await until(() => host.last(3) !== undefined);
  });

  it('refuses input past what its process has not read yet, and takes more once it reads', async () => {
    const MiB = 1024 * 1024;
    host.open(1, {
      op: 'exec',
      argv: ['sh', '-c', `${untilGo()}; wc -c`],
      journal: 'i3',
      watch: true,
      stdinOpen: true,
    });
    await until(() => host.types(1).includes('started'));
    const half = Buffer.alloc(MiB / 2, 120).toString('base64');
    let channel = 10;
    const input = async (eof = false) => {
      const c = channel++;
      host.open(c, { op: 'exec.input', journal: 'i3', data: half, eof });
      await until(() => host.last(c) !== undefined);
      return host.last(c)!;
    };
    // A FIFO holds 64 KiB; the rest waits in the agent, up to 1 MiB.
    expect(await input()).toMatchObject({ type: 'result' });
    expect(await input()).toMatchObject({ type: 'result' });
    expect(await input()).toMatchObject({ type: 'error', code: 'capacity_exhausted' });
    fs.writeFileSync(path.join(dir, 'go'), '');
    // It reads now: the last half and the eof are taken once it has read enough.
    for (let i = 0; (await input(true)).type !== 'result'; i++) {
      expect(i, 'the input was never taken').toBeLessThan(100);
      await new Promise((r) => setTimeout(r, 50));
    }
    await until(() => host.last(1) !== undefined);
    expect(host.data.get(1)!.trim()).toBe(String(3 * (MiB / 2)));
  });

  it('refuses a watch of an exec with no journal', async () => {
    host.open(1, { op: 'exec', argv: ['true'], watch: true });
    await until(() => host.last(1) !== undefined);
    expect(host.last(1)).toMatchObject({ type: 'error', code: 'invalid_request' });
  });

  it('starts a program that is not there as an exit 127 with the reason on stderr', async () => {
    host.open(1, { op: 'exec', argv: ['no-such-program-here'], journal: 'j8' });
    await until(() => host.last(1) !== undefined);
    expect(host.last(1)).toMatchObject({ type: 'exit', exitCode: 127 });
    expect(host.stderr.get(1)).toBe('agentbox: no-such-program-here: command not found\n');
  });
});
