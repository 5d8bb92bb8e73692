import { type ApiExecRequest, type ExecEvent, type ExecResult } from '@agentbox/protocol';
import type { Actor } from '../store/key-store.js';
import type { BoxService } from './box-service.js';

/** Output a non-streaming exec keeps, per stream; the rest is dropped and `truncated` set. */
export const COLLECT_LIMIT_BYTES = 16 * 1024 * 1024;

export type ExecOutcome = 'ok' | 'timeout' | 'error';

export interface ExecServiceDeps {
  boxes: Pick<BoxService, 'acquire'>;
  metrics: { countExec(outcome: ExecOutcome): void };
}

export interface ExecOptions {
  actor: Actor;
  id: string;
  request: ApiExecRequest;
  signal?: AbortSignal;
}

export function createExecService(deps: ExecServiceDeps) {
  async function run(
    options: ExecOptions,
    onEvent: (event: ExecEvent) => void | Promise<void>,
  ): Promise<Extract<ExecEvent, { type: 'exit' }>> {
    // Held for the whole stream: a box is never paused under a running command.
    const lease = await deps.boxes.acquire(options);
    const { guest, env, workspace } = lease;
    const request = options.request;
    const argv = request.argv ?? ['sh', '-c', request.command ?? ''];
    try {
      const exit = await guest.exec(
        {
          argv,
          env: { ...env, ...request.env },
          cwd: request.cwd ?? workspace,
          ...(request.timeoutMs !== undefined ? { timeoutMs: request.timeoutMs } : {}),
        },
        {
          onStarted: (pid) => void onEvent({ type: 'started', pid }),
          onStdout: (chunk) => onEvent({ type: 'stdout', data: chunk.toString('base64') }),
          onStderr: (chunk) => onEvent({ type: 'stderr', data: chunk.toString('base64') }),
          ...(request.stdin !== undefined ? { stdin: Buffer.from(request.stdin, 'base64') } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
        },
      );
      deps.metrics.countExec(exit.timedOut ? 'timeout' : 'ok');
      return {
        type: 'exit',
        exitCode: exit.exitCode,
        signal: exit.signal,
        timedOut: exit.timedOut,
        durationMs: exit.durationMs,
      };
    } catch (err) {
      deps.metrics.countExec('error');
      throw err;
    } finally {
      lease.release();
    }
  }

  return {
    /** Runs a command, calling `onEvent` for each event in order; resolves with the exit event. */
    stream: run,

    /** Runs a command and returns its exit and (up to a limit) its output. */
    async collect(options: ExecOptions): Promise<ExecResult> {
      const out = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
      const size = { stdout: 0, stderr: 0 };
      let truncated = false;
      const exit = await run(options, (event) => {
        if (event.type !== 'stdout' && event.type !== 'stderr') return;
        const chunk = Buffer.from(event.data, 'base64');
        const room = COLLECT_LIMIT_BYTES - size[event.type];
        if (chunk.length > room) truncated = true;
        const kept = chunk.subarray(0, Math.max(0, room));
        out[event.type].push(kept);
        size[event.type] += kept.length;
      });
      return {
        exitCode: exit.exitCode,
        signal: exit.signal,
        timedOut: exit.timedOut,
        durationMs: exit.durationMs,
        stdout: Buffer.concat(out.stdout).toString('base64'),
        stderr: Buffer.concat(out.stderr).toString('base64'),
        truncated,
      };
    },
  };
}

export type ExecService = ReturnType<typeof createExecService>;
