import {
  AgentboxError,
  type ApiExecRequest,
  type Command,
  type CommandOutputEvent,
  type CommandStdinRequest,
  type ExecEvent,
  type StartCommandRequest,
} from '@agentbox/protocol';
import { fromBase64, toBase64, utf8 } from './bytes.js';
import { errorFromObject, sdkError } from './errors.js';
import { ndjsonLines, type HttpTransport, type RequestOpts } from './http.js';
import { Reconnects, isRetried, sleep, type ReconnectOpts } from './retry.js';

/** What one stdin write carries (the daemon takes up to 1 MiB a call). */
const STDIN_CHUNK_BYTES = 256 * 1024;
/** How long `sendStdin` waits, at most, for a command that does not read what it was sent. */
const STDIN_WAIT_MS = 60_000;
/** How often it tries again meanwhile. */
const STDIN_RETRY_MS = 100;

/** How a command's output reaches the caller, as it arrives. */
export interface OutputCallbacks {
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
  /**
   * A background command's output of that stream before `offset` (bytes) was dropped: it keeps
   * only its last `keepOutputBytes`. What follows is from there.
   */
  onSkipped?: (stream: 'stdout' | 'stderr', offset: number) => void;
}

/** What a command is started with. */
export interface StartOpts {
  /** The daemon kills the command's process group after this long; the result says `timedOut`. */
  timeoutMs?: number;
  /** Added to the box's environment. */
  env?: Record<string, string>;
  /** Working directory in the box; default /workspace. */
  cwd?: string;
  /** Fed to standard input, which is then closed. */
  stdin?: string | Uint8Array;
  /**
   * A background command (`start`) keeps about the last this many bytes of each stream in the
   * box (default 32 MiB, at least 1 MiB); older output is dropped.
   */
  keepOutputBytes?: number;
  /**
   * A background command (`start`) keeps its stdin open: write to it with `sendStdin`, close it
   * with `closeStdin`. Not with `stdin`.
   */
  stdinOpen?: boolean;
}

export interface CommandOpts extends OutputCallbacks, StartOpts, Omit<RequestOpts, 'timeoutMs'> {
  /** Called once the process started, with its pid in the box. */
  onStart?: (pid: number) => void;
}

export interface FollowCommandOpts extends OutputCallbacks {
  /** Bytes of standard output to skip (what the caller has already); default 0. */
  stdoutOffset?: number;
  /** Bytes of standard error to skip; default 0. */
  stderrOffset?: number;
  /** Stop following (the command runs on); the call rejects with the signal's reason. */
  signal?: AbortSignal;
  reconnect?: ReconnectOpts;
}

/** What a background command printed from the offsets asked, and whether it still runs. */
export interface CommandOutput {
  stdout: string;
  stderr: string;
  /** Where to read on from: the offsets asked plus the bytes returned. */
  stdoutOffset: number;
  stderrOffset: number;
  /** How it ended; null while it runs. */
  exit: Pick<CommandResult, 'exitCode' | 'signal' | 'timedOut' | 'durationMs'> | null;
}

function execRequest(
  cmd: string | readonly string[],
  opts: Omit<StartOpts, 'keepOutputBytes' | 'stdinOpen'>,
): ApiExecRequest {
  return {
    ...(typeof cmd === 'string' ? { command: cmd } : { argv: [...cmd] }),
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    ...(opts.stdin !== undefined
      ? { stdin: toBase64(typeof opts.stdin === 'string' ? utf8(opts.stdin) : opts.stdin) }
      : {}),
  };
}

/**
 * Hands a command's output events to the callbacks and keeps what the result needs; `exit` closes
 * the text (a character split across the last chunk is flushed).
 */
class OutputSink {
  private readonly decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  readonly text = { stdout: '', stderr: '' };
  /** The byte offset of each stream read up to (its output received, or skipped). */
  readonly position: { stdout: number; stderr: number };
  /** The process, once an output stream said. */
  pid: number | null = null;

  constructor(
    private readonly opts: OutputCallbacks,
    from = { stdout: 0, stderr: 0 },
  ) {
    this.position = { ...from };
  }

  async chunk(stream: 'stdout' | 'stderr', data: string): Promise<void> {
    const raw = fromBase64(data);
    this.position[stream] += raw.length;
    const onBytes = stream === 'stdout' ? this.opts.onStdoutBytes : this.opts.onStderrBytes;
    if (onBytes) return onBytes(raw);
    const text = this.decoders[stream].decode(raw, { stream: true });
    this.text[stream] += text;
    if (text) (stream === 'stdout' ? this.opts.onStdout : this.opts.onStderr)?.(text);
  }

  /** The command no longer kept that stream's output before `offset`: reading goes on from there. */
  skipped(stream: 'stdout' | 'stderr', offset: number): void {
    this.position[stream] = Math.max(this.position[stream], offset);
    this.opts.onSkipped?.(stream, offset);
  }

  /** Takes one event of a background command's output; returns the one that ends it (exit, running). */
  async take(
    event: CommandOutputEvent,
  ): Promise<Extract<CommandOutputEvent, { type: 'exit' | 'running' }> | undefined> {
    switch (event.type) {
      case 'started':
        this.pid = event.pid;
        return undefined;
      case 'stdout':
      case 'stderr':
        await this.chunk(event.type, event.data);
        return undefined;
      case 'skipped':
        this.skipped(event.stream, event.offset);
        return undefined;
      case 'error':
        throw errorFromObject(event.error, { message: 'reading the command output failed' });
      case 'exit':
      case 'running':
        this.end();
        return event;
    }
  }

  end(): void {
    for (const stream of ['stdout', 'stderr'] as const) {
      const rest = this.decoders[stream].decode();
      this.text[stream] += rest;
      if (rest) (stream === 'stdout' ? this.opts.onStdout : this.opts.onStderr)?.(rest);
    }
  }
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
    const res = await this.http.request({
      method: 'POST',
      path: `${this.base}/exec`,
      json: execRequest(cmd, opts),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    const sink = new OutputSink(opts);
    let pid: number | null = null;
    for await (const line of ndjsonLines(res.body, this.http.url, opts.signal)) {
      const event = line as ExecEvent;
      switch (event.type) {
        case 'started':
          pid = event.pid;
          opts.onStart?.(event.pid);
          break;
        case 'stdout':
        case 'stderr':
          await sink.chunk(event.type, event.data);
          break;
        case 'exit': {
          sink.end();
          return { ...exitOf(event), pid, ...sink.text };
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

  /**
   * Starts a background command: it runs on in the box past this call (a server, a long build), its
   * output kept there. Answers once its process runs; read its output with `output` or `follow`,
   * end it with `remove`. It holds its box awake (never paused for idleness) while it runs.
   */
  async start(
    cmd: string | readonly string[],
    opts: StartOpts & Omit<RequestOpts, 'timeoutMs'> = {},
  ): Promise<Command> {
    return this.http.json<Command>({
      method: 'POST',
      path: `${this.base}/commands`,
      json: {
        ...execRequest(cmd, opts),
        ...(opts.keepOutputBytes !== undefined ? { keepOutputBytes: opts.keepOutputBytes } : {}),
        ...(opts.stdinOpen ? { stdinOpen: true } : {}),
      } satisfies StartCommandRequest,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  }

  /** The box's background commands, oldest first. */
  async list(opts: RequestOpts = {}): Promise<Command[]> {
    return (
      await this.http.json<{ commands: Command[] }>({ method: 'GET', path: `${this.base}/commands`, ...opts })
    ).commands;
  }

  /** One background command: its state, and its exit once it ended. */
  get(id: string, opts: RequestOpts = {}): Promise<Command> {
    return this.http.json<Command>({ method: 'GET', path: this.commandPath(id), ...opts });
  }

  /**
   * What a background command printed so far, from the offsets given (bytes), without waiting;
   * the callbacks get it as it arrives too (with a bytes callback, that stream's text is '').
   */
  async output(
    id: string,
    opts: RequestOpts & OutputCallbacks & { stdoutOffset?: number; stderrOffset?: number } = {},
  ): Promise<CommandOutput> {
    const { stdoutOffset = 0, stderrOffset = 0 } = opts;
    const res = await this.http.request({
      method: 'GET',
      path: `${this.commandPath(id)}/output`,
      query: { stdoutOffset, stderrOffset },
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    });
    const sink = new OutputSink(opts, { stdout: stdoutOffset, stderr: stderrOffset });
    for await (const line of ndjsonLines(res.body, this.http.url, opts.signal)) {
      const end = await sink.take(line as CommandOutputEvent);
      if (end)
        return {
          ...sink.text,
          stdoutOffset: sink.position.stdout,
          stderrOffset: sink.position.stderr,
          exit: end.type === 'exit' ? exitOf(end) : null,
        };
    }
    throw sdkError('daemon_unreachable', `the output stream from ${this.http.url} ended early`);
  }

  /**
   * Follows a background command's output, as it comes, to its exit. A dropped connection (a
   * daemon restart) is resumed from the bytes received, so nothing is lost or repeated; aborting
   * stops following, and the command runs on.
   */
  async follow(id: string, opts: FollowCommandOpts = {}): Promise<CommandResult> {
    const reconnects = new Reconnects(opts.reconnect);
    const sink = new OutputSink(opts, { stdout: opts.stdoutOffset ?? 0, stderr: opts.stderrOffset ?? 0 });
    const read = () => sink.position.stdout + sink.position.stderr;
    for (;;) {
      const startedAt = Date.now();
      const before = read();
      let failure: unknown;
      try {
        const res = await this.http.request({
          method: 'GET',
          path: `${this.commandPath(id)}/output`,
          query: {
            follow: 'true',
            stdoutOffset: sink.position.stdout,
            stderrOffset: sink.position.stderr,
          },
          gatewayUnreachable: true,
          ...(opts.signal ? { signal: opts.signal } : {}),
        });
        for await (const line of ndjsonLines(res.body, this.http.url, opts.signal)) {
          const end = await sink.take(line as CommandOutputEvent);
          if (end?.type === 'exit') return { ...exitOf(end), pid: sink.pid, ...sink.text };
        }
        failure = sdkError('daemon_unreachable', `the output stream from ${this.http.url} ended early`);
      } catch (err) {
        if (!isRetried(err)) throw err;
        failure = err;
      }
      await reconnects.next({ startedAt, progressed: read() > before, failure }, opts.signal);
    }
  }

  /**
   * Writes to the stdin of a background command started with `stdinOpen` (text as UTF-8), and
   * resolves once the box has taken all of it. The box holds up to 1 MiB the command has not read
   * yet; past that this waits, sending the rest as the command reads, for `waitMs` at most
   * (default 60 s; then `CapacityExhaustedError`). `InvalidStateError` when its stdin is not open.
   */
  async sendStdin(
    id: string,
    data: string | Uint8Array,
    opts: RequestOpts & { waitMs?: number } = {},
  ): Promise<void> {
    const { waitMs = STDIN_WAIT_MS, ...request } = opts;
    const bytes = typeof data === 'string' ? utf8(data) : data;
    const deadline = Date.now() + waitMs;
    for (let at = 0; at < bytes.length; at += STDIN_CHUNK_BYTES) {
      const chunk = { data: toBase64(bytes.subarray(at, at + STDIN_CHUNK_BYTES)) };
      for (;;) {
        try {
          await this.writeStdin(id, chunk, request);
          break;
        } catch (err) {
          if (!(err instanceof AgentboxError) || err.code !== 'capacity_exhausted' || Date.now() > deadline)
            throw err;
          await sleep(STDIN_RETRY_MS, request.signal);
        }
      }
    }
  }

  /** Closes the stdin of a background command started with `stdinOpen`: it reads end-of-file. */
  async closeStdin(id: string, opts: RequestOpts = {}): Promise<void> {
    await this.writeStdin(id, { eof: true }, opts);
  }

  private writeStdin(id: string, body: CommandStdinRequest, opts: RequestOpts) {
    return this.http.json({ method: 'POST', path: `${this.commandPath(id)}/stdin`, json: body, ...opts });
  }

  /** Ends a background command if it still runs, and drops it and its output. */
  async remove(id: string, opts: RequestOpts = {}): Promise<void> {
    await this.http.json({ method: 'DELETE', path: this.commandPath(id), ...opts });
  }

  private get base(): string {
    return `/v1/boxes/${encodeURIComponent(this.boxId)}`;
  }

  private commandPath(id: string): string {
    return `${this.base}/commands/${encodeURIComponent(id)}`;
  }
}

function exitOf(event: Extract<ExecEvent, { type: 'exit' }>) {
  return {
    exitCode: event.exitCode,
    signal: event.signal,
    timedOut: event.timedOut,
    durationMs: event.durationMs,
  };
}
