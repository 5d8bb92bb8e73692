import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import { GUEST_NO_PROXY, GUEST_PROXY_URL, type ExecExit, type ParsedRequest } from '@agentbox/protocol';
import { GuestOpError, errnoCode, type RequestContext } from './context.js';

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
  LANG: 'C.UTF-8',
  // There is no NIC: the only way out is the egress proxy, whose host side enforces the policy.
  HTTP_PROXY: GUEST_PROXY_URL,
  HTTPS_PROXY: GUEST_PROXY_URL,
  http_proxy: GUEST_PROXY_URL,
  https_proxy: GUEST_PROXY_URL,
  NO_PROXY: GUEST_NO_PROXY,
  no_proxy: GUEST_NO_PROXY,
};

/** Bytes of output a process may have queued towards the host before its pipe is paused. */
const MAX_QUEUED_OUTPUT_BYTES = 2 * 1024 * 1024;

/**
 * Runs one process in its own process group (so a timeout or cancel kills its children too) and
 * streams stdout and stderr separately until it exits. Resolves with the exit message.
 */
export async function runExec(
  req: ExecRequest,
  ctx: RequestContext,
  defaults: ExecDefaults,
): Promise<ExecExit> {
  const cwd = req.cwd ?? defaults.cwd;
  if (!fs.existsSync(cwd))
    throw new GuestOpError('file_not_found', `working directory ${cwd} does not exist`);
  const started = performance.now();
  const child = spawn(req.argv[0]!, req.argv.slice(1), {
    cwd,
    env: { ...defaults.env, ...req.env },
    detached: true,
    stdio: [req.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });

  const group = superviseGroup(child, ctx, req.timeoutMs);
  const killGroup = group.kill;

  let queued = 0;
  const forward = (stream: 'data' | 'stderr', source: NodeJS.ReadableStream) => {
    source.on('data', (chunk: Buffer) => {
      queued += chunk.length;
      if (queued > MAX_QUEUED_OUTPUT_BYTES) {
        child.stdout?.pause();
        child.stderr?.pause();
      }
      ctx.mux.sendData(ctx.channel, stream, chunk).then(
        () => {
          queued -= chunk.length;
          if (queued <= MAX_QUEUED_OUTPUT_BYTES) {
            child.stdout?.resume();
            child.stderr?.resume();
          }
        },
        () => killGroup(),
      );
    });
  };
  forward('data', child.stdout!);
  forward('stderr', child.stderr!);

  if (child.stdin) {
    const stdin = child.stdin;
    stdin.on('error', () => {
      // the process closed its stdin; the rest of the input is dropped, as with a pipe
    });
    ctx.onData(
      (chunk) => stdin.write(chunk, () => ctx.mux.consumed(ctx.channel, chunk.length)),
      () => stdin.end(),
    );
  }

  return new Promise<ExecExit>((resolve, reject) => {
    child.once('error', (err) => {
      group.done();
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'EACCES') {
        const exitCode = code === 'ENOENT' ? 127 : 126;
        const reason = code === 'ENOENT' ? 'command not found' : 'permission denied';
        void ctx.mux.sendData(ctx.channel, 'stderr', Buffer.from(`agentbox: ${req.argv[0]}: ${reason}\n`));
        resolve({
          type: 'exit',
          exitCode,
          signal: null,
          timedOut: false,
          durationMs: performance.now() - started,
        });
      } else {
        reject(new GuestOpError('guest_error', `could not start ${req.argv[0]}: ${err.message}`));
      }
    });
    child.once('close', (exitCode, signal) => {
      group.done();
      // Reap stragglers of the group only on timeout/cancel; a normal exit leaves daemons alone.
      resolve({
        type: 'exit',
        exitCode,
        signal: signal === null ? null : signalName(signal),
        timedOut: group.timedOut(),
        durationMs: performance.now() - started,
      });
    });
  });
}

/**
 * Supervises a spawned process group (`detached: true`) for an exec: reports `started`, and kills
 * the whole group on timeout or cancel. `done()` once the process has ended.
 */
export function superviseGroup(
  child: ChildProcess,
  ctx: RequestContext,
  timeoutMs: number | undefined,
): { kill: () => void; timedOut: () => boolean; done: () => void } {
  if (child.pid !== undefined)
    void ctx.mux.sendJson(ctx.channel, { type: 'started', pid: child.pid }).catch(() => undefined);
  let timedOut = false;
  const kill = (): void => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // the group is already gone
    }
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
