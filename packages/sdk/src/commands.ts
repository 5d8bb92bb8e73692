import type { ApiExecRequest, ExecEvent } from '@agentbox/protocol';
import { fromBase64, toBase64, utf8 } from './bytes.js';
import { errorFromObject, sdkError } from './errors.js';
import { ndjsonLines, type HttpTransport, type RequestOpts } from './http.js';

export interface CommandOpts extends Omit<RequestOpts, 'timeoutMs'> {
  /** Called with each piece of standard output as it arrives (UTF-8 decoded). */
  onStdout?: (data: string) => void;
  /** Called with each piece of standard error as it arrives (UTF-8 decoded). */
  onStderr?: (data: string) => void;
  /**
   * Called with each piece of standard output as bytes, as it arrives; the next piece is read once
   * a returned promise settles. With it, standard output is neither decoded nor kept in the result
   * (`stdout` is ''): for binary or unbounded output.
   */
  onStdoutBytes?: (data: Uint8Array) => void | Promise<void>;
  /** As `onStdoutBytes`, for standard error. */
  onStderrBytes?: (data: Uint8Array) => void | Promise<void>;
  /** Called once the process started, with its pid in the box. */
  onStart?: (pid: number) => void;
  /** The daemon kills the command's process group after this long; the result says `timedOut`. */
  timeoutMs?: number;
  /** Added to the box's environment. */
  env?: Record<string, string>;
  /** Working directory in the box; default /workspace. */
  cwd?: string;
  /** Fed to standard input, which is then closed. */
  stdin?: string | Uint8Array;
}

export interface CommandResult {
  /** Exit status; null when a signal ended the process. */
  exitCode: number | null;
  /** The signal that ended it, e.g. 'SIGKILL'. */
  signal: string | null;
  /** It ran past `timeoutMs` and was killed. */
  timedOut: boolean;
  stdout: string;
  stderr: string;
  durationMs: number;
  /** The pid it had in the box. */
  pid: number | null;
}

/** `box.commands`: run programs in the box, output streamed back as it happens. */
export class Commands {
  constructor(
    private readonly http: HttpTransport,
    private readonly boxId: string,
  ) {}

  /**
   * Runs a shell command line (`sh -c`, a string) or a program with its arguments (an array, no
   * shell) to its end. A non-zero exit is a result, not an error; errors are the daemon's (box not
   * found, guest unreachable, …) or a lost connection (`DaemonUnreachableError`).
   */
  async run(cmd: string | readonly string[], opts: CommandOpts = {}): Promise<CommandResult> {
    const request: ApiExecRequest = {
      ...(typeof cmd === 'string' ? { command: cmd } : { argv: [...cmd] }),
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      ...(opts.stdin !== undefined
        ? { stdin: toBase64(typeof opts.stdin === 'string' ? utf8(opts.stdin) : opts.stdin) }
        : {}),
    };
    const res = await this.http.request({
      method: 'POST',
      path: `/v1/boxes/${encodeURIComponent(this.boxId)}/exec`,
      json: request,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    const output = { stdout: '', stderr: '' };
    const callbacks = { stdout: opts.onStdout, stderr: opts.onStderr };
    const bytes = { stdout: opts.onStdoutBytes, stderr: opts.onStderrBytes };
    let pid: number | null = null;
    for await (const line of ndjsonLines(res.body, this.http.url, opts.signal)) {
      const event = line as ExecEvent;
      switch (event.type) {
        case 'started':
          pid = event.pid;
          opts.onStart?.(event.pid);
          break;
        case 'stdout':
        case 'stderr': {
          const raw = bytes[event.type];
          if (raw) {
            await raw(fromBase64(event.data));
            break;
          }
          const text = decoders[event.type].decode(fromBase64(event.data), { stream: true });
          output[event.type] += text;
          if (text) callbacks[event.type]?.(text);
          break;
        }
        case 'exit': {
          for (const stream of ['stdout', 'stderr'] as const) {
            const rest = decoders[stream].decode();
            output[stream] += rest;
            if (rest) callbacks[stream]?.(rest);
          }
          return {
            exitCode: event.exitCode,
            signal: event.signal,
            timedOut: event.timedOut,
            durationMs: event.durationMs,
            pid,
            ...output,
          };
        }
        case 'error':
          // Not sdkError(event.error.code): a newer daemon may send a code this SDK has no class for.
          throw errorFromObject(event.error, { message: 'the command failed in the box' });
      }
    }
    throw sdkError(
      'daemon_unreachable',
      `the exec stream from ${this.http.url} ended before the command did`,
    );
  }
}
