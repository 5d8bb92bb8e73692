import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import {
  GUEST_LANG,
  GUEST_NODE_OPTIONS,
  GUEST_NO_PROXY,
  GUEST_PROXY_URL,
  type ExecExit,
  type ParsedRequest,
} from '@agentbox/protocol';
import { GuestOpError, errnoCode, type RequestContext } from './context.js';
import { RawPipe } from './raw-handle.js';
import type { DataStream } from '@agentbox/protocol/wire';
import { decodeWaitStatus, isErrno, type NativeAddon } from './native.js';

type ExecRequest = Extract<ParsedRequest, { op: 'exec' }>;

export interface ExecDefaults {
  env: Record<string, string>;
  cwd: string;
}

export const GUEST_BASE_ENV: Record<string, string> = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  USER: 'root',
  LOGNAME: 'root',
  SHELL: '/bin/bash',
  LANG: GUEST_LANG,
  // There is no NIC: the only way out is the egress proxy, whose host side enforces the policy.
  HTTP_PROXY: GUEST_PROXY_URL,
  HTTPS_PROXY: GUEST_PROXY_URL,
  http_proxy: GUEST_PROXY_URL,
  https_proxy: GUEST_PROXY_URL,
  NO_PROXY: GUEST_NO_PROXY,
  no_proxy: GUEST_NO_PROXY,
  // node's fetch and http ignore the variables above unless told (node >= 22.21): without it a
  // script's fetch() looked up DNS, which a box does not have, and failed with EAI_AGAIN. node 22
  // then warns on every start that this is experimental, on stderr that tools and tests read.
  NODE_USE_ENV_PROXY: '1',
  NODE_OPTIONS: GUEST_NODE_OPTIONS,
};

/** Bytes of output a process may have queued towards the host before its pipes are paused. */
const MAX_QUEUED_OUTPUT_BYTES = 2 * 1024 * 1024;
/** Frames of output the kernel moves from the pipe (splice): big, no JavaScript touches them. */
const SPLICE_FRAME_BYTES = 256 * 1024;

/**
 * A process's stdout or stderr, whichever way it was started: chunks read into buffers (node's
 * streams, or bare pipe handles), or a pipe fd whose bytes the kernel moves to the channel.
 */
type OutputSource =
  | {
      kind: 'buffers';
      /** Delivers chunks until EOF, then calls `onEnd`. */
      read(onData: (chunk: Buffer) => void, onEnd: () => void): void;
      pause(): void;
      resume(): void;
    }
  | { kind: 'pipe'; fd: number };

/** A process as runExec supervises it. */
interface RunningProcess {
  pid: number;
  stdout: OutputSource;
  stderr: OutputSource;
  writeStdin?: (chunk: Buffer, written: () => void) => void;
  endStdin?: () => void;
  /** Its exit status (output may still be draining). */
  exited: Promise<{ exitCode: number | null; signal: string | null }>;
  /** Called once it exited and its output ended. */
  cleanUp?: () => void;
}

/**
 * Runs one process in its own process group (so a timeout or cancel kills its children too) and
 * streams stdout and stderr separately until it exits and its output ends. Resolves with the exit
 * message. Started by the native addon when the agent has it (cheap under emulation), else by node.
 */
export async function runExec(
  req: ExecRequest,
  ctx: RequestContext,
  defaults: ExecDefaults,
  native?: NativeAddon,
): Promise<ExecExit> {
  const cwd = req.cwd ?? defaults.cwd;
  const started = performance.now();
  const env = { ...defaults.env, ...req.env };
  let proc: RunningProcess;
  try {
    proc = native
      ? startWithNative(native, req, env, cwd, ctx.mux.sendsFromFds)
      : await startWithNode(req, env, cwd);
  } catch (err) {
    const code = errnoCode(err);
    // Checked only now: a missing cwd fails the spawn with ENOENT too (one stat less per exec).
    if (code === 'ENOENT' && !fs.existsSync(cwd))
      throw new GuestOpError('file_not_found', `working directory ${cwd} does not exist`);
    const failed = startFailure(req.argv[0]!, err);
    void ctx.mux.sendData(ctx.channel, 'stderr', Buffer.from(failed.stderr));
    return {
      type: 'exit',
      exitCode: failed.exitCode,
      signal: null,
      timedOut: false,
      durationMs: performance.now() - started,
    };
  }

  const group = superviseGroup(proc.pid, ctx, req.timeoutMs);
  const output = forwardOutput(proc, ctx, native, () => group.kill());
  if (proc.writeStdin && proc.endStdin) {
    const { writeStdin, endStdin } = proc;
    ctx.onData((chunk) => writeStdin(chunk, () => ctx.mux.consumed(ctx.channel, chunk.length)), endStdin);
  }
  try {
    const [{ exitCode, signal }] = await Promise.all([proc.exited, output]);
    // Stragglers of the group are reaped only on timeout/cancel; a normal exit leaves daemons alone.
    return {
      type: 'exit',
      exitCode,
      signal,
      timedOut: group.timedOut(),
      durationMs: performance.now() - started,
    };
  } finally {
    group.done();
    proc.cleanUp?.();
  }
}

/** Forwards stdout and stderr to the channel; resolves once both ended. `onFail`: the channel failed. */
function forwardOutput(
  proc: RunningProcess,
  ctx: RequestContext,
  native: NativeAddon | undefined,
  onFail: () => void,
): Promise<void> {
  const buffered = [proc.stdout, proc.stderr].filter((s) => s.kind === 'buffers');
  let queued = 0;
  const forward = (stream: DataStream, source: OutputSource): Promise<void> => {
    if (source.kind === 'pipe') return spliceOutput(native!, source.fd, stream, ctx, onFail);
    return new Promise<void>((resolve) =>
      source.read((chunk) => {
        // Both streams pause while too much is queued, so neither runs ahead of the other.
        queued += chunk.length;
        if (queued > MAX_QUEUED_OUTPUT_BYTES) for (const s of buffered) s.pause();
        ctx.mux.sendData(ctx.channel, stream, chunk).then(() => {
          queued -= chunk.length;
          if (queued <= MAX_QUEUED_OUTPUT_BYTES) for (const s of buffered) s.resume();
        }, onFail);
      }, resolve),
    );
  };
  return Promise.all([forward('data', proc.stdout), forward('stderr', proc.stderr)]).then(() => undefined);
}

/**
 * Moves a pipe's bytes to the channel with splice, a frame at a time: what is in the pipe when it
 * turns readable (FIONREAD), never read into JavaScript. The pipe itself is the backpressure:
 * while a frame waits for credit, the process's writes fill the pipe and then block.
 */
function spliceOutput(
  native: NativeAddon,
  fd: number,
  stream: DataStream,
  ctx: RequestContext,
  onFail: () => void,
): Promise<void> {
  return new Promise<void>((resolve) => {
    let sending = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      watch.close();
      fs.closeSync(fd);
      resolve();
    };
    const watch = native.watchReadable(fd, (events) => {
      if (sending || done) return;
      let available = 0;
      try {
        available = native.pipeBytes(fd);
      } catch {
        return finish();
      }
      if (available > 0) {
        sending = true;
        watch.pause();
        ctx.mux
          .sendDataFrom(ctx.channel, stream, { fd, offset: -1 }, Math.min(available, SPLICE_FRAME_BYTES))
          .then(
            () => {
              sending = false;
              if (!done) watch.resume();
            },
            () => {
              onFail();
              finish();
            },
          );
      } else if (events !== 0) {
        // Readable with nothing in it: the writers are gone (epoll may say so only as "readable").
        finish();
      }
    });
    watch.resume();
  });
}

function startWithNative(
  native: NativeAddon,
  req: ExecRequest,
  env: Record<string, string>,
  cwd: string,
  splice: boolean,
): RunningProcess {
  const [pid, stdinFd, stdoutFd, stderrFd, stdoutHold, stderrHold] = native.spawn(
    req.argv,
    Object.entries(env).map(([k, v]) => `${k}=${v}`),
    cwd,
    req.stdin === true,
  );
  const exited = new Promise<number>((resolve) => native.watchExit(pid, resolve))
    .finally(() => {
      // Only descendants hold the output pipes now (see spawn): they end when those are gone.
      fs.closeSync(stdoutHold);
      fs.closeSync(stderrHold);
    })
    .then((status) => {
      if (status < 0) throw new Error(`the exit status of process ${pid} was lost`);
      const exit = decodeWaitStatus(status);
      return { exitCode: exit.exitCode, signal: exit.signal === null ? null : signalName(exit.signal) };
    });
  const output = (fd: number): OutputSource => {
    if (splice) return { kind: 'pipe', fd };
    const pipe = openPipe(fd);
    return {
      kind: 'buffers',
      read: (onData, onEnd) =>
        pipe.read(onData, () => {
          pipe.close();
          onEnd();
        }),
      pause: () => pipe.pause(),
      resume: () => pipe.resume(),
    };
  };
  const stdin = stdinFd >= 0 ? openPipe(stdinFd) : undefined;
  let pendingWrites = Promise.resolve();
  return {
    pid,
    stdout: output(stdoutFd),
    stderr: output(stderrFd),
    ...(stdin
      ? {
          writeStdin: (chunk: Buffer, written: () => void) => {
            // A process that closed its stdin drops the rest, as with a pipe; the host is still
            // told the bytes were taken, so it does not wait for credit forever.
            const { done } = stdin.write([chunk]);
            pendingWrites = pendingWrites.then(() => done.then(written));
          },
          endStdin: () => void pendingWrites.then(() => stdin.close()),
        }
      : {}),
    exited,
    ...(stdin ? { cleanUp: () => stdin.close() } : {}),
  };
}

function openPipe(fd: number): RawPipe {
  const pipe = RawPipe.open(fd);
  if (!pipe) {
    fs.closeSync(fd);
    throw new Error('cannot watch a pipe of the process');
  }
  return pipe;
}

function startWithNode(req: ExecRequest, env: Record<string, string>, cwd: string): Promise<RunningProcess> {
  const child = spawn(req.argv[0]!, req.argv.slice(1), {
    cwd,
    env,
    detached: true,
    stdio: [req.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('spawn', () => {
      child.off('error', reject);
      const source = (stream: NodeJS.ReadableStream): OutputSource => ({
        kind: 'buffers',
        read: (onData, onEnd) => {
          stream.on('data', onData);
          stream.once('close', onEnd);
        },
        pause: () => void stream.pause(),
        resume: () => void stream.resume(),
      });
      const stdin = child.stdin;
      stdin?.on('error', () => {
        // the process closed its stdin; the rest of the input is dropped, as with a pipe
      });
      resolve({
        pid: child.pid!,
        stdout: source(child.stdout!),
        stderr: source(child.stderr!),
        ...(stdin
          ? {
              writeStdin: (chunk: Buffer, written: () => void) => void stdin.write(chunk, () => written()),
              endStdin: () => void stdin.end(),
            }
          : {}),
        exited: new Promise((resolveExit) =>
          child.once('exit', (exitCode, signal) =>
            resolveExit({ exitCode, signal: signal === null ? null : signalName(signal) }),
          ),
        ),
      });
    });
  });
}

/**
 * A program that could not be started exits as a shell would say: 127 (not found) or 126 (not
 * executable), the reason on stderr. Any other spawn failure is the guest's error.
 */
export function startFailure(program: string, err: unknown): { exitCode: 126 | 127; stderr: string } {
  if (!isErrno(err, 'ENOENT', 'EACCES'))
    throw new GuestOpError('guest_error', `could not start ${program}: ${(err as Error).message}`);
  const found = errnoCode(err) === 'EACCES';
  return {
    exitCode: found ? 126 : 127,
    stderr: `agentbox: ${program}: ${found ? 'permission denied' : 'command not found'}\n`,
  };
}

/** SIGKILLs a process group (its leader's pid is the group id), if it is still there. */
export function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // the group is already gone
  }
}

/**
 * Supervises a process group started for an exec (its leader's pid is the group id): reports
 * `started`, and kills the whole group on timeout or cancel. `done()` once the process has ended.
 */
export function superviseGroup(
  pid: number | undefined,
  ctx: RequestContext,
  timeoutMs: number | undefined,
): { kill: () => void; timedOut: () => boolean; done: () => void } {
  if (pid !== undefined) ctx.mux.post(ctx.channel, { type: 'started', pid });
  let timedOut = false;
  const kill = (): void => {
    if (pid !== undefined) killGroup(pid);
  };
  const timer = timeoutMs
    ? setTimeout(() => {
        timedOut = true;
        kill();
      }, timeoutMs)
    : undefined;
  ctx.onCancel(kill);
  return { kill, timedOut: () => timedOut, done: () => clearTimeout(timer) };
}

export function signalName(signal: NodeJS.Signals | number): string {
  if (typeof signal === 'string') return signal;
  const entry = Object.entries(osConstants.signals).find(([, n]) => n === signal);
  return entry ? entry[0] : String(signal);
}
