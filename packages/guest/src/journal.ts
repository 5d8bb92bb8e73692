import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  JOURNAL_INPUT_MAX_BYTES,
  JOURNAL_STDERR_REPLAY_BYTES,
  type ExecExit,
  type ExecStat,
  type ParsedRequest,
} from '@agentbox/protocol';
import type { DataStream } from '@agentbox/protocol/wire';
import { GuestOpError, errnoCode, type RequestContext } from './context.js';
import { killGroup, signalName, startFailure, type ExecDefaults } from './exec.js';
import type { NativeAddon } from './native.js';
import { currentBootId } from './restore.js';

type ExecRequest = Extract<ParsedRequest, { op: 'exec' }>;
type AttachRequest = Extract<ParsedRequest, { op: 'exec.attach' }>;
type InputRequest = Extract<ParsedRequest, { op: 'exec.input' }>;

/** Where a VM's agent keeps its journals (on the box's disk: a hibernated box keeps them too). */
export const GUEST_JOURNAL_ROOT = '/var/lib/agentbox/exec';
/** A finished journal no host came back for is removed after this long. */
const KEEP_UNCLAIMED_MS = 24 * 3600 * 1000;
/** Bytes read from a journal file per frame sent. */
const READ_BYTES = 256 * 1024;
/** A follower looks again this often when no file event came (a process that is not the agent's child). */
const RECHECK_MS = 1000;
/** How often the output of journals that keep only their last bytes is checked for what to drop. */
const TRIM_EVERY_MS = 1000;
/** Output is dropped a step of at least this at a time, at offsets that are multiples of TRIM_ALIGN. */
const TRIM_STEP_BYTES = 1024 * 1024;
const TRIM_ALIGN = 64 * 1024;

type StreamFile = 'stdout' | 'stderr';
const STREAM_FILES: readonly StreamFile[] = ['stdout', 'stderr'];

/** What `<journal>/run.json` holds: written once the process started. */
interface RunRecord {
  pid: number;
  startedAtMs: number;
  /** The boot it ran in: after a reboot its pid is another process's, or none. */
  bootId?: string;
  /** Keep about the last this many bytes of each stream (`keepBytes`); absent: all. */
  keepBytes?: number;
  /**
   * When its `timeoutMs` runs out, on the boot's monotonic clock (ms): an agent that restarts
   * meanwhile kills it then, as the one that started it would have.
   */
  deadlineMonoMs?: number;
}

/** What `<journal>/dropped.json` holds: the first byte of each stream still kept. */
type Dropped = Record<StreamFile, number>;

/** A follow in progress: where it reads each stream (output is never dropped past it). */
interface Reader {
  offset(stream: StreamFile): number;
}

/**
 * Journaled execs: the process writes its stdout and stderr to files in its journal and the agent
 * follows them to the host, so neither a host that goes away (a restarted daemon) nor the agent's
 * own restart loses a byte or the process. The next host session takes the run up with
 * `exec.attach` from what it had kept; the journal is removed when the host says it kept the exit
 * (`exec.forget`), or a day after the exit if no host ever does.
 */
export class ExecJournals {
  /** Journals whose process is this agent's child: its exit is still to be written. */
  private readonly children = new Set<string>();
  /**
   * The open stdins (`stdinOpen`): this agent holds the only writer of each one's FIFO, so its
   * process reads end-of-file once that is closed (an `eof`, the exit, or this agent gone).
   */
  private readonly inputs = new Map<string, net.Socket>();
  /** Journals whose output is kept to its last bytes, while their process may still print: keepBytes. */
  private readonly kept = new Map<string, number>();
  private readonly readers = new Map<string, Set<Reader>>();
  /** Journals with a hole punch in flight. */
  private readonly trimming = new Set<string>();
  private trimTimer: NodeJS.Timeout | undefined;
  /** Whether the running journals an earlier agent left were taken up (trimming, deadlines). */
  private resumed = false;

  /** With the addon, output goes from the journal's files to the port by sendfile, whole frames. */
  constructor(
    private readonly root: string,
    private readonly native?: NativeAddon,
  ) {}

  async start(
    req: ExecRequest & { journal: string },
    ctx: RequestContext,
    defaults: ExecDefaults,
  ): Promise<ExecExit> {
    this.removeUnclaimed();
    this.resume();
    const dir = path.join(this.root, req.journal);
    fs.mkdirSync(this.root, { recursive: true, mode: 0o700 });
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if (errnoCode(err) === 'EEXIST')
        throw new GuestOpError('invalid_request', `exec journal ${req.journal} exists already`);
      throw err;
    }
    try {
      if (req.stdin) await receiveFile(path.join(dir, 'stdin'), ctx);
      await this.spawnInto(dir, req, { ...defaults.env, ...req.env }, req.cwd ?? defaults.cwd);
      // Until here a host that went (its stdin not all sent) cancelled the exec; now it runs on.
      ctx.outliveHost();
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    return this.follow(req.journal, ctx, 0, 0, req.watch ?? false);
  }

  attach(req: AttachRequest, ctx: RequestContext): Promise<ExecExit> {
    this.resume();
    const dir = this.existing(req.journal);
    const watch = req.watch ?? false;
    const stderr = fs.statSync(path.join(dir, 'stderr')).size;
    return this.follow(
      req.journal,
      ctx,
      req.stdoutOffset,
      watch ? req.stderrOffset : Math.max(req.stderrOffset, stderr - JOURNAL_STDERR_REPLAY_BYTES),
      watch,
    );
  }

  /** Where a journal's process stands and how much it printed, without following it. */
  stat(id: string): ExecStat {
    this.resume();
    const dir = this.existing(id);
    const dropped = droppedOf(dir);
    const run = readJson<RunRecord>(dir, 'run.json');
    const exit = readJson<ExecExit>(dir, 'exit.json') ?? null;
    const lost =
      exit === null &&
      (run === undefined ||
        (run.bootId !== undefined && run.bootId !== currentBootId()) ||
        (!this.children.has(id) && !alive(run.pid)));
    return {
      pid: run?.pid ?? null,
      state: exit ? 'exited' : lost ? 'lost' : 'running',
      exit,
      stdoutBytes: fs.statSync(path.join(dir, 'stdout')).size,
      stderrBytes: fs.statSync(path.join(dir, 'stderr')).size,
      stdoutStart: dropped.stdout,
      stderrStart: dropped.stderr,
    };
  }

  private existing(id: string): string {
    const dir = path.join(this.root, id);
    if (!fs.existsSync(path.join(dir, 'stdout')))
      throw new GuestOpError('process_not_found', `no exec journal ${id} in the box`);
    return dir;
  }

  /** The host kept the run's exit: its files go (and its process, if it still runs). */
  forget(id: string): void {
    const dir = path.join(this.root, id);
    const run = readJson<RunRecord>(dir, 'run.json');
    if (run && !fs.existsSync(path.join(dir, 'exit.json'))) killGroup(run.pid);
    this.inputs.get(id)?.destroy();
    this.inputs.delete(id);
    fs.rmSync(dir, { recursive: true, force: true });
  }

  /** Writes to an open stdin; `eof` then closes it once what was written went out. */
  input(req: InputRequest): { bytes: number } {
    const input = this.inputs.get(req.journal);
    if (!input) {
      this.existing(req.journal);
      throw new GuestOpError(
        'invalid_state',
        `the stdin of ${req.journal} is not open: it was not started with it open, was closed, its process ` +
          'ended, or the guest agent restarted',
      );
    }
    const bytes = Buffer.from(req.data, 'base64');
    if (input.writableLength + bytes.length > JOURNAL_INPUT_MAX_BYTES)
      throw new GuestOpError(
        'capacity_exhausted',
        `the process has not read the ${input.writableLength} bytes sent to its stdin before; send more once it has`,
      );
    if (bytes.length > 0) input.write(bytes);
    if (req.eof) {
      this.inputs.delete(req.journal);
      input.end();
    }
    return { bytes: bytes.length };
  }

  /** Starts the process on the journal's files; a program that cannot start exits 127 or 126 there. */
  private async spawnInto(
    dir: string,
    req: ExecRequest,
    env: Record<string, string>,
    cwd: string,
  ): Promise<void> {
    if (!fs.existsSync(cwd))
      throw new GuestOpError('file_not_found', `working directory ${cwd} does not exist`);
    const stdout = fs.openSync(path.join(dir, 'stdout'), 'wx', 0o600);
    const stderr = fs.openSync(path.join(dir, 'stderr'), 'wx', 0o600);
    const open = req.stdinOpen ? openStdinFifo(path.join(dir, 'stdin.fifo'), this.native) : undefined;
    const stdin = open?.reader ?? (req.stdin ? fs.openSync(path.join(dir, 'stdin'), 'r') : 'ignore');
    const startedAtMs = Date.now();
    try {
      const child = spawn(req.argv[0]!, req.argv.slice(1), {
        cwd,
        env,
        detached: true,
        stdio: [stdin, stdout, stderr],
      });
      const pid = await new Promise<number>((resolve, reject) => {
        child.once('error', reject);
        child.once('spawn', () => resolve(child.pid!));
      }).catch((err: unknown) => {
        const failed = startFailure(req.argv[0]!, err);
        fs.writeSync(stderr, failed.stderr);
        writeAtomically(dir, 'exit.json', {
          type: 'exit',
          exitCode: failed.exitCode,
          signal: null,
          timedOut: false,
          durationMs: Date.now() - startedAtMs,
        } satisfies ExecExit);
        return undefined;
      });
      if (pid === undefined) return;
      const id = path.basename(dir);
      if (open) {
        const input = new net.Socket({ fd: open.writer, readable: false, writable: true });
        open.writer = -1;
        // A process that exits with input unread: what was queued is dropped with the pipe.
        input.on('error', () => input.destroy());
        this.inputs.set(id, input);
      }
      writeAtomically(dir, 'run.json', {
        pid,
        startedAtMs,
        bootId: currentBootId(),
        ...(req.keepBytes !== undefined ? { keepBytes: req.keepBytes } : {}),
        ...(req.timeoutMs ? { deadlineMonoMs: monoNowMs() + req.timeoutMs } : {}),
      } satisfies RunRecord);
      this.children.add(id);
      if (req.keepBytes !== undefined) this.keep(id, req.keepBytes);
      let timedOut = false;
      const timer = req.timeoutMs
        ? setTimeout(() => {
            timedOut = true;
            killGroup(pid);
          }, req.timeoutMs)
        : undefined;
      child.once('exit', (exitCode, signal) => {
        clearTimeout(timer);
        this.children.delete(id);
        this.inputs.get(id)?.destroy();
        this.inputs.delete(id);
        // Forgotten while it ran (`exec.forget` killed it): its journal is gone, and no one waits.
        if (!fs.existsSync(dir)) return;
        writeAtomically(dir, 'exit.json', {
          type: 'exit',
          exitCode,
          signal: signal === null ? null : signalName(signal),
          timedOut,
          durationMs: Date.now() - startedAtMs,
        } satisfies ExecExit);
      });
    } finally {
      fs.closeSync(stdout);
      fs.closeSync(stderr);
      if (typeof stdin === 'number') fs.closeSync(stdin);
      // Not handed to a socket: the process never started.
      if (open && open.writer >= 0) fs.closeSync(open.writer);
    }
  }

  /**
   * Sends the journal's output from the given offsets as it grows, then its exit. Stops, leaving
   * the process and the journal alone, when its host session ends: the next one attaches. A cancel
   * kills the process group, or, when the follow only `watch`es, ends the follow.
   */
  private async follow(
    id: string,
    ctx: RequestContext,
    stdoutOffset: number,
    stderrOffset: number,
    watch: boolean,
  ): Promise<ExecExit> {
    const dir = path.join(this.root, id);
    const run = readJson<RunRecord>(dir, 'run.json');
    const earlierBoot =
      run?.bootId !== undefined &&
      run.bootId !== currentBootId() &&
      !fs.existsSync(path.join(dir, 'exit.json'));
    const gone = () =>
      new GuestOpError('process_not_found', `the box restarted while process ${run?.pid} ran: it is gone`);
    // A watcher still gets what it printed (a background command's log); a taker-up has nothing to take.
    if (earlierBoot && !watch) throw gone();
    let wake: (() => void) | undefined;
    let cancelled = false;
    if (run) ctx.mux.post(ctx.channel, { type: 'started', pid: run.pid });
    ctx.onCancel(() => {
      if (watch) {
        cancelled = true;
        wake?.();
        // A reader stalled on its window (a host that stopped acknowledging, having let go of the
        // read) would wait forever: its queued output is dropped and the send fails.
        ctx.mux.close(ctx.channel);
      } else if (run && !fs.existsSync(path.join(dir, 'exit.json'))) killGroup(run.pid);
    });
    const streams: { file: StreamFile; name: DataStream; fd: number; offset: number }[] = [
      { file: 'stdout', name: 'data', fd: fs.openSync(path.join(dir, 'stdout'), 'r'), offset: stdoutOffset },
      {
        file: 'stderr',
        name: 'stderr',
        fd: fs.openSync(path.join(dir, 'stderr'), 'r'),
        offset: stderrOffset,
      },
    ];
    // Registered before dropped.json is read, in the same tick: a trim sees this reader, or wrote
    // the file this reads (it writes before it punches).
    const reader: Reader = { offset: (file) => streams.find((s) => s.file === file)!.offset };
    const readers = this.readers.get(id) ?? new Set<Reader>();
    this.readers.set(id, readers);
    readers.add(reader);
    const dropped = droppedOf(dir);
    for (const stream of streams) {
      if (stream.offset >= dropped[stream.file]) continue;
      stream.offset = dropped[stream.file];
      ctx.mux.post(ctx.channel, { type: 'skipped', stream: stream.file, offset: stream.offset });
    }
    const watcher = fs.watch(dir, () => wake?.());
    try {
      for (;;) {
        if (!ctx.isOpen()) throw new Error('the host session ended');
        if (cancelled) throw new GuestOpError('invalid_request', 'the watch was cancelled');
        // Read before the output is drained: output drained after the exit was written is all of it.
        const exit = readJson<ExecExit>(dir, 'exit.json');
        let moved = false;
        for (const stream of streams) {
          const n = await this.sendFrom(ctx, stream);
          if (n === 0) continue;
          stream.offset += n;
          moved = true;
        }
        if (moved) continue;
        if (exit) return exit;
        if (earlierBoot) throw gone();
        if (!fs.existsSync(dir))
          throw new GuestOpError('process_not_found', `exec journal ${id} was forgotten`);
        if (run && !this.children.has(id) && !alive(run.pid))
          throw new GuestOpError(
            'guest_error',
            `the exit status of process ${run.pid} was lost (the guest agent restarted while it ran)`,
          );
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, RECHECK_MS);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
    } finally {
      watcher.close();
      for (const stream of streams) fs.closeSync(stream.fd);
      readers.delete(reader);
      if (readers.size === 0 && this.readers.get(id) === readers) this.readers.delete(id);
    }
  }

  /** From now on the journal's output is kept to about its last `keepBytes` per stream. */
  private keep(id: string, keepBytes: number): void {
    this.kept.set(id, keepBytes);
    this.trimTimer ??= setInterval(() => this.trimPass(), TRIM_EVERY_MS);
    this.trimTimer.unref();
  }

  /**
   * An agent that restarted takes up what its predecessor did for the journals still running: it
   * goes on trimming their output, and kills each at its deadline. Once; at the agent's start, or
   * at the first request about journals.
   */
  resume(): void {
    if (this.resumed) return;
    this.resumed = true;
    let names: string[];
    try {
      names = fs.readdirSync(this.root);
    } catch {
      return;
    }
    for (const name of names) {
      const dir = path.join(this.root, name);
      const run = readJson<RunRecord>(dir, 'run.json');
      if (!run || fs.existsSync(path.join(dir, 'exit.json')) || this.children.has(name)) continue;
      if (run.bootId !== undefined && run.bootId !== currentBootId()) continue;
      if (run.keepBytes !== undefined) this.keep(name, run.keepBytes);
      if (run.deadlineMonoMs !== undefined && alive(run.pid))
        setTimeout(() => this.expire(dir, run), Math.max(0, run.deadlineMonoMs - monoNowMs())).unref();
    }
  }

  /**
   * Kills a process an earlier agent started once its time ran out, and writes its exit: a
   * SIGKILL, which it cannot outlive (not this agent's child, its status is not ours to reap).
   */
  private expire(dir: string, run: RunRecord): void {
    if (fs.existsSync(path.join(dir, 'exit.json')) || !fs.existsSync(dir) || !alive(run.pid)) return;
    killGroup(run.pid);
    try {
      // Its group, as it was started; and itself, should it have left that group.
      process.kill(run.pid, 'SIGKILL');
    } catch {
      // gone already
    }
    writeAtomically(dir, 'exit.json', {
      type: 'exit',
      exitCode: null,
      signal: 'SIGKILL',
      timedOut: true,
      durationMs: Date.now() - run.startedAtMs,
    } satisfies ExecExit);
  }

  /** Drops what each kept journal has past its bytes to keep; one last time once its process ended. */
  private trimPass(): void {
    for (const [id, keepBytes] of this.kept) {
      const dir = path.join(this.root, id);
      const run = readJson<RunRecord>(dir, 'run.json');
      const ended =
        !run || fs.existsSync(path.join(dir, 'exit.json')) || (!this.children.has(id) && !alive(run.pid));
      // A punch still in flight makes this pass's trim a no-op: the last one is then the next pass.
      const busy = this.trimming.has(id);
      const exists = fs.existsSync(dir);
      if (exists) void this.trim(id, dir, keepBytes);
      if (!exists || (ended && !busy)) this.kept.delete(id);
    }
    if (this.kept.size === 0) {
      clearInterval(this.trimTimer);
      this.trimTimer = undefined;
    }
  }

  /**
   * Punches out each stream's bytes before its last `keepBytes` (the file keeps its size; the disk
   * blocks are freed), never past where a follow of it reads. dropped.json is written first, in the
   * same tick the readers were looked at, so a follow that starts meanwhile skips the range.
   */
  private async trim(id: string, dir: string, keepBytes: number): Promise<void> {
    if (this.trimming.has(id)) return;
    const dropped = droppedOf(dir);
    const punches: { file: StreamFile; from: number; to: number }[] = [];
    for (const file of STREAM_FILES) {
      let size: number;
      try {
        size = fs.statSync(path.join(dir, file)).size;
      } catch {
        return;
      }
      let to = size - keepBytes;
      for (const reader of this.readers.get(id) ?? []) to = Math.min(to, reader.offset(file));
      to = Math.floor(to / TRIM_ALIGN) * TRIM_ALIGN;
      if (to - dropped[file] < TRIM_STEP_BYTES) continue;
      punches.push({ file, from: dropped[file], to });
      dropped[file] = to;
    }
    if (punches.length === 0) return;
    this.trimming.add(id);
    try {
      writeAtomically(dir, 'dropped.json', dropped);
      for (const punch of punches)
        await punchHole(path.join(dir, punch.file), punch.from, punch.to, this.native);
    } catch {
      // Forgotten meanwhile, or no `fallocate`: the bytes stay on disk, read as they were.
    } finally {
      this.trimming.delete(id);
    }
  }

  /**
   * Sends what the file holds past the stream's offset, up to READ_BYTES: with the addon, one
   * frame the kernel moves from the file (sendfile), never through JavaScript, as file reads go;
   * else read and sent.
   */
  private async sendFrom(
    ctx: RequestContext,
    stream: { name: DataStream; fd: number; offset: number },
  ): Promise<number> {
    if (this.native && ctx.mux.sendsFromFds) {
      const n = Math.min(READ_BYTES, fs.fstatSync(stream.fd).size - stream.offset);
      if (n <= 0) return 0;
      const moved = await ctx.mux.sendDataFrom(
        ctx.channel,
        stream.name,
        { fd: stream.fd, offset: stream.offset },
        n,
      );
      // A journal only grows: a frame padded past its end would hand the host bytes never written.
      if (moved < n) throw new GuestOpError('guest_error', 'an exec journal shrank while it was read');
      return n;
    }
    const buffer = Buffer.allocUnsafe(READ_BYTES);
    const n = fs.readSync(stream.fd, buffer, 0, READ_BYTES, stream.offset);
    if (n > 0) await ctx.mux.sendData(ctx.channel, stream.name, buffer.subarray(0, n));
    return n;
  }

  /** Journals finished long ago whose host never came back for their exit. */
  private removeUnclaimed(): void {
    let names: string[];
    try {
      names = fs.readdirSync(this.root);
    } catch {
      return;
    }
    const before = Date.now() - KEEP_UNCLAIMED_MS;
    for (const name of names) {
      try {
        if (fs.statSync(path.join(this.root, name, 'exit.json')).mtimeMs < before)
          fs.rmSync(path.join(this.root, name), { recursive: true, force: true });
      } catch {
        // still running, or not a journal
      }
    }
  }
}

/** Writes what the host streams on the channel (stdin) into a file, until its end. */
function receiveFile(file: string, ctx: RequestContext): Promise<void> {
  const fd = fs.openSync(file, 'wx', 0o600);
  return new Promise<void>((resolve, reject) => {
    ctx.onCancel(() => reject(new GuestOpError('invalid_request', 'cancelled before the process started')));
    ctx.onData(
      (chunk) => {
        fs.writeSync(fd, chunk);
        ctx.mux.consumed(ctx.channel, chunk.length);
      },
      () => resolve(),
    );
  }).finally(() => fs.closeSync(fd));
}

/** The first byte of each stream a journal still keeps. */
function droppedOf(dir: string): Dropped {
  return readJson<Dropped>(dir, 'dropped.json') ?? { stdout: 0, stderr: 0 };
}

/**
 * Frees a file's blocks in [from, to): node has no binding for fallocate; the addon has, else
 * util-linux's fallocate (a process, ~20 ms of the agent's time under emulation).
 */
function punchHole(file: string, from: number, to: number, native: NativeAddon | undefined): Promise<void> {
  if (native?.punchHole) {
    try {
      native.punchHole(file, from, to - from);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }
  return new Promise((resolve, reject) =>
    execFile(
      'fallocate',
      ['--punch-hole', '--offset', String(from), '--length', String(to - from), file],
      (err) => (err ? reject(err) : resolve()),
    ),
  );
}

function writeAtomically(dir: string, name: string, value: unknown): void {
  const temp = path.join(dir, `.${name}.tmp`);
  fs.writeFileSync(temp, JSON.stringify(value));
  fs.renameSync(temp, path.join(dir, name));
}

function readJson<T>(dir: string, name: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/**
 * A FIFO for a process's stdin: `writer` (this agent's, O_RDWR so that opening it never waits)
 * and `reader` (the process's, opened after it, so it does not wait for a writer either). Both
 * close on exec: the process must not hold a writer of its own, or it would never read EOF.
 */
function openStdinFifo(fifo: string, native: NativeAddon | undefined): { writer: number; reader: number } {
  // Without the addon a process makes it (the agent waits ~20 ms for it under emulation).
  if (native?.makeFifo) native.makeFifo(fifo, 0o600);
  else execFileSync('mkfifo', ['-m', '600', fifo]);
  const writer = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  return { writer, reader: fs.openSync(fifo, fs.constants.O_RDONLY) };
}

/** The boot's monotonic clock (CLOCK_MONOTONIC, the same in every process of a boot), in ms. */
function monoNowMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}
