import fs from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AgentboxError,
  type Box,
  type Command,
  type CreateBoxRequest,
  type Runtime,
} from '@agentbox/protocol';
import { daemonClient } from '../daemon.js';
import { formatTable, writeJson, writeTo } from '../output.js';
import { parseEnvPairs, shellExitStatus } from './run.js';

/** `--url` / `--key` of every command that talks to the daemon. */
export interface DaemonFlags {
  url?: string;
  key?: string;
}

function age(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

export function formatBoxes(boxes: readonly Box[]): string {
  if (boxes.length === 0) return 'no boxes (`agentbox box create` makes one)';
  return formatTable(
    ['ID', 'STATE', 'RUNTIME', 'MEMORY', 'CPUS', 'AGE', 'USER'],
    boxes.map((b) => [
      b.id,
      b.heldFor === null ? b.state : `${b.state} (${b.heldFor})`,
      b.runtime,
      `${b.memoryMib} MiB`,
      String(b.vcpus),
      age(b.createdAt),
      b.userId ?? '-',
    ]),
  );
}

/** `agentbox box ls`: the boxes this key may see. */
export async function boxList(
  options: DaemonFlags & { json: boolean },
  out = process.stdout,
): Promise<number> {
  const boxes = await daemonClient(options).boxes.list();
  if (options.json) writeJson({ boxes }, out);
  else out.write(`${formatBoxes(boxes)}\n`);
  return 0;
}

export interface BoxCreateFlags extends DaemonFlags {
  runtime?: Runtime;
  memory?: number;
  cpus?: number;
  disk?: number;
  user?: string;
  ttl?: number;
  label: string[];
  json: boolean;
}

/** `agentbox box create`: boots a box on the daemon; prints its id (blank flags: the daemon's defaults). */
export async function boxCreate(options: BoxCreateFlags, out = process.stdout): Promise<number> {
  const labels = Object.fromEntries(options.label.map(labelPair));
  const request: CreateBoxRequest = {
    ...(options.runtime ? { runtime: options.runtime } : {}),
    ...(options.memory !== undefined ? { memoryMib: options.memory } : {}),
    ...(options.cpus !== undefined ? { vcpus: options.cpus } : {}),
    ...(options.disk !== undefined ? { diskGib: options.disk } : {}),
    ...(options.user ? { userId: options.user } : {}),
    ...(options.ttl !== undefined ? { ttlSeconds: options.ttl } : {}),
    ...(options.label.length > 0 ? { labels } : {}),
  };
  const box = await daemonClient(options).boxes.create(request);
  if (options.json) writeJson(box.info, out);
  else out.write(`${box.id}\n`);
  return 0;
}

/** `agentbox box rm`: deletes boxes, one line each. */
export async function boxRemove(ids: string[], options: DaemonFlags, out = process.stdout): Promise<number> {
  const boxes = daemonClient(options).boxes;
  for (const id of ids) {
    const box = await boxes.kill(id);
    out.write(`${box.id} ${box.state}\n`);
  }
  return 0;
}

function labelPair(pair: string): [string, string] {
  const eq = pair.indexOf('=');
  if (eq <= 0)
    throw new AgentboxError('invalid_request', `--label expects KEY=VALUE, got ${JSON.stringify(pair)}`);
  return [pair.slice(0, eq), pair.slice(eq + 1)];
}

export interface BoxExecFlags extends DaemonFlags {
  env: string[];
  workdir?: string;
  timeout?: number;
  stdin: boolean;
  background?: boolean;
  /** MiB of each stream a background command keeps. */
  keepOutput?: number;
  /** A background command keeps its stdin open (`box command stdin`). */
  stdinOpen?: boolean;
}

/**
 * `agentbox box exec BOX -- CMD...`: runs a program in a box on the daemon (no shell: wrap in
 * `sh -c` for one), stdout and stderr passed through as bytes; exits with its status (128 +
 * signal; 124 when it ran past --timeout).
 */
export async function boxExec(
  id: string,
  argv: string[],
  options: BoxExecFlags,
  io: {
    stdin: NodeJS.ReadableStream;
    stdout: NodeJS.WritableStream;
    stderr: NodeJS.WritableStream;
  } = process,
): Promise<number> {
  if (options.keepOutput !== undefined && !options.background)
    throw new AgentboxError('invalid_request', '--keep-output goes with --background');
  if (options.stdinOpen && (!options.background || options.stdin))
    throw new AgentboxError('invalid_request', '--stdin-open goes with --background, not with --stdin');
  if (options.workdir !== undefined && !options.workdir.startsWith('/'))
    throw new AgentboxError('invalid_request', '--workdir must be an absolute path in the box');
  const stdin = options.stdin ? Buffer.concat(await readAll(io.stdin)) : undefined;
  const box = await daemonClient(options).boxes.connect(id);
  const start = {
    env: parseEnvPairs(options.env),
    ...(options.workdir ? { cwd: options.workdir } : {}),
    ...(options.timeout !== undefined ? { timeoutMs: Math.round(options.timeout * 1000) } : {}),
    ...(stdin ? { stdin } : {}),
  };
  if (options.background) {
    const command = await box.commands.start(argv, {
      ...start,
      ...(options.keepOutput !== undefined ? { keepOutputBytes: options.keepOutput * 1024 * 1024 } : {}),
      ...(options.stdinOpen ? { stdinOpen: true } : {}),
    });
    io.stdout.write(`${command.id}\n`);
    return 0;
  }
  // Ctrl-C ends the request, and the daemon ends the command of a client that went away.
  const abort = new AbortController();
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted = signal;
    abort.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const result = await box.commands.run(argv, {
      ...start,
      onStdoutBytes: writeTo(io.stdout),
      onStderrBytes: writeTo(io.stderr),
      signal: abort.signal,
    });
    return result.timedOut ? 124 : shellExitStatus(result);
  } catch (err) {
    if (interrupted) return shellExitStatus({ exitCode: null, signal: interrupted });
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function formatCommands(commands: readonly Command[]): string {
  if (commands.length === 0) return 'no commands (`agentbox box exec --background BOX -- CMD` starts one)';
  return formatTable(
    ['ID', 'STATE', 'PID', 'EXIT', 'AGE', 'COMMAND'],
    commands.map((c) => [
      c.id,
      c.state,
      c.pid === null ? '-' : String(c.pid),
      c.state !== 'exited' ? '-' : (c.signal ?? String(c.exitCode)),
      age(c.startedAt),
      c.argv.join(' ').slice(0, 60),
    ]),
  );
}

/** `agentbox box command ls BOX`: the box's background commands. */
export async function boxCommandList(
  id: string,
  options: DaemonFlags & { json: boolean },
  out = process.stdout,
): Promise<number> {
  const box = await daemonClient(options).boxes.connect(id);
  const commands = await box.commands.list();
  if (options.json) writeJson({ commands }, out);
  else out.write(`${formatCommands(commands)}\n`);
  return 0;
}

/**
 * `agentbox box command output BOX CMD [--follow]`: what a background command printed, stdout and
 * stderr passed through as bytes; with --follow, as it comes until it ends, exiting with its
 * status (the command runs on if this is interrupted).
 */
export async function boxCommandOutput(
  id: string,
  commandId: string,
  options: DaemonFlags & { follow: boolean },
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream } = process,
): Promise<number> {
  const box = await daemonClient(options).boxes.connect(id);
  const sinks = { onStdoutBytes: writeTo(io.stdout), onStderrBytes: writeTo(io.stderr) };
  if (!options.follow) {
    await box.commands.output(commandId, sinks);
    return 0;
  }
  const result = await box.commands.follow(commandId, sinks);
  return result.timedOut ? 124 : shellExitStatus(result);
}

/**
 * `agentbox box command stdin BOX CMD [--keep-open]`: this process's stdin to a background command
 * started with `--stdin-open`, as it comes (held back while the command does not read), then
 * closes it unless --keep-open.
 */
export async function boxCommandStdin(
  id: string,
  commandId: string,
  options: DaemonFlags & { keepOpen: boolean },
  stdin: NodeJS.ReadableStream = process.stdin,
): Promise<number> {
  const box = await daemonClient(options).boxes.connect(id);
  for await (const chunk of stdin) {
    const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    // Waits while the command has not read what it was sent (as long as it takes).
    await box.commands.sendStdin(commandId, bytes, { waitMs: Infinity });
  }
  if (!options.keepOpen) await box.commands.closeStdin(commandId);
  return 0;
}

/** `agentbox box command rm BOX CMD...`: ends background commands still running and drops them. */
export async function boxCommandRemove(
  id: string,
  commandIds: string[],
  options: DaemonFlags,
  out = process.stdout,
): Promise<number> {
  const box = await daemonClient(options).boxes.connect(id);
  for (const commandId of commandIds) {
    await box.commands.remove(commandId);
    out.write(`${commandId} deleted\n`);
  }
  return 0;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  return chunks;
}

/** `BOX:PATH` names a path in a box; anything else is a local path (`-`: stdin or stdout). */
function parseLocation(arg: string): { box: string; path: string } | { local: string } {
  const m = /^(box-[a-z0-9]+):(.+)$/.exec(arg);
  return m ? { box: m[1]!, path: m[2]! } : { local: arg };
}

/**
 * `agentbox box cp SRC DST`: copies one file into a box (`cp ./a.txt BOX:/workspace/a.txt`) or out
 * of one (`cp BOX:out.log -`), streamed; a path in a box is absolute or relative to /workspace.
 */
export async function boxCopy(
  from: string,
  to: string,
  options: DaemonFlags,
  io: { stdin: NodeJS.ReadableStream; stdout: NodeJS.WritableStream } = process,
): Promise<number> {
  const src = parseLocation(from);
  const dst = parseLocation(to);
  const client = daemonClient(options);
  if ('box' in src && 'local' in dst) {
    const box = await client.boxes.connect(src.box);
    const body = Readable.fromWeb(await box.files.readStream(src.path));
    if (dst.local === '-') {
      const write = writeTo(io.stdout);
      for await (const chunk of body) await write(chunk as Buffer);
    } else {
      await pipeline(body, fs.createWriteStream(dst.local)).catch((err: NodeJS.ErrnoException) => {
        throw new AgentboxError('invalid_request', `cannot write ${dst.local}: ${err.code ?? err.message}`);
      });
    }
    return 0;
  }
  if ('local' in src && 'box' in dst) {
    const box = await client.boxes.connect(dst.box);
    let data: AsyncIterable<Uint8Array>;
    if (src.local === '-') data = io.stdin as AsyncIterable<Uint8Array>;
    else {
      // Said before anything is sent: a missing or unreadable file is the caller's, not the box's.
      const cannot = (why: string) =>
        new AgentboxError('invalid_request', `cannot read ${src.local}: ${why}`);
      try {
        fs.accessSync(src.local, fs.constants.R_OK);
      } catch (err) {
        throw cannot(String((err as NodeJS.ErrnoException).code));
      }
      if (!fs.statSync(src.local).isFile()) throw cannot('not a file');
      data = fs.createReadStream(src.local);
    }
    await box.files.write(dst.path, data);
    return 0;
  }
  throw new AgentboxError(
    'invalid_request',
    'one side of `box cp` must be BOX:PATH and the other a local path (or -)',
  );
}
