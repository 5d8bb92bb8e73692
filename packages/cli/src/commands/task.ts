import fs from 'node:fs';
import {
  AgentboxError,
  CreateTaskRequestSchema,
  type CreateTaskRequest,
  type Task,
  type TaskEvent,
} from '@agentbox/protocol';
import type { AgentboxClient } from '@agentbox/sdk';
import { daemonClient, FOLLOW_RECONNECT } from '../daemon.js';

export interface TaskRunOptions {
  agent: string;
  prompt?: string;
  promptFile?: string;
  repo?: string;
  model?: string;
  effort?: string;
  box?: string;
  user?: string;
  timeout?: number;
  file: string[];
  env: string[];
  allowedTools?: string;
  disallowedTools?: string;
  project?: string;
  agentRef?: string;
  resume?: string;
  maxSpend?: number;
  follow: boolean;
  json: boolean;
  url?: string;
  key?: string;
}

const list = (value: string | undefined) =>
  value === undefined
    ? undefined
    : value
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);

/** A file a flag names, read as text; a missing or unreadable one is the flag's error. */
function readFlagFile(flag: string, file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : (err as Error).message;
    throw new AgentboxError('invalid_request', `${flag} ${file}: ${why}`);
  }
}

/** The API fields the flags fill, named as the flags in errors. */
const FLAG_OF_FIELD: Record<string, string> = {
  prompt: '--prompt or --prompt-file',
  agent: '--agent',
  model: '--model',
  effort: '--effort',
  gitRepoUrl: '--repo',
  boxId: '--box',
  userId: '--user',
  timeoutSeconds: '--timeout',
  files: '--file',
  envVars: '--env',
  allowedTools: '--allowed-tools',
  disallowedTools: '--disallowed-tools',
  project: '--project',
  agentDefinition: '--agent-ref',
  resume: '--resume',
  maxSpendUsd: '--max-spend',
};

/** The request body from the flags; validated by the same schema as the daemon's. */
export function taskRequestFromFlags(options: TaskRunOptions): CreateTaskRequest {
  const prompt =
    options.promptFile !== undefined ? readFlagFile('--prompt-file', options.promptFile) : options.prompt;
  const files: Record<string, string> = {};
  for (const spec of options.file) {
    const eq = spec.indexOf('=');
    if (eq <= 0)
      throw new AgentboxError('invalid_request', `--file takes NAME=PATH, got ${JSON.stringify(spec)}`);
    files[spec.slice(0, eq)] = readFlagFile('--file', spec.slice(eq + 1));
  }
  const env: Record<string, string> = {};
  for (const pair of options.env) {
    const eq = pair.indexOf('=');
    if (eq <= 0)
      throw new AgentboxError('invalid_request', `--env takes KEY=VALUE, got ${JSON.stringify(pair)}`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const raw = {
    prompt,
    agent: options.agent,
    ...(options.model ? { model: options.model } : {}),
    ...(options.effort ? { effort: options.effort } : {}),
    ...(options.repo ? { gitRepoUrl: options.repo } : {}),
    ...(options.box ? { boxId: options.box } : {}),
    ...(options.user ? { userId: options.user } : {}),
    ...(options.timeout ? { timeoutSeconds: options.timeout } : {}),
    ...(Object.keys(files).length ? { files } : {}),
    ...(Object.keys(env).length ? { envVars: env } : {}),
    ...(options.allowedTools ? { allowedTools: list(options.allowedTools) } : {}),
    ...(options.disallowedTools ? { disallowedTools: list(options.disallowedTools) } : {}),
    ...(options.project ? { project: options.project } : {}),
    ...(options.agentRef ? { agentDefinition: { ref: options.agentRef } } : {}),
    ...(options.resume ? { resume: options.resume } : {}),
    ...(options.maxSpend ? { maxSpendUsd: options.maxSpend } : {}),
  };
  const parsed = CreateTaskRequestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = String(issue.path[0] ?? '');
    const where = FLAG_OF_FIELD[field] ?? (issue.path.join('.') || 'task');
    // Messages written for the API name its fields; say the flags instead.
    const message = issue.message
      .replace(/`boxId`/g, '--box')
      .replace(/`userId`/g, '--user')
      .replace(/Invalid input: expected string, received undefined/, 'missing');
    throw new AgentboxError('invalid_request', `${where}: ${message}`);
  }
  return parsed.data;
}

function short(value: unknown, max = 160): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** One human-readable line per event. */
export function formatEvent(event: TaskEvent): string {
  const c = event.content as Record<string, unknown> | string | null;
  const obj: Record<string, unknown> = typeof c === 'object' && c !== null ? c : {};
  switch (event.type) {
    case 'text':
      return typeof c === 'string' ? c : short(c);
    case 'tool_use':
      return `⚙ ${String(obj.name)} ${short(obj.input)}`;
    case 'tool_result':
      return `  ↳ ${obj.isError ? 'error: ' : ''}${short(obj.content)}`;
    case 'completion':
      return `✔ ${typeof c === 'string' ? c : short(c)}`;
    case 'error':
      return `✖ ${short(obj.code ?? 'error')}: ${short(obj.message ?? c, 400)}`;
    case 'status':
      return `· ${Object.entries(obj)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ')}`;
  }
}

/** Prints the events of a task until it ends; the exit code says how it ended. */
async function printFollow(
  client: AgentboxClient,
  taskId: string,
  json: boolean,
  after = 0,
): Promise<number> {
  for await (const event of client.tasks.events(taskId, { after, reconnect: FOLLOW_RECONNECT })) {
    process.stdout.write(`${json ? JSON.stringify(event) : formatEvent(event)}\n`);
  }
  const task = await client.tasks.get(taskId);
  if (!json) process.stderr.write(`agentbox: task ${task.id} ${task.state}\n`);
  return task.state === 'succeeded' ? 0 : 1;
}

/** `agentbox task run`: queue a task on the daemon; with --follow, stream it to the end. */
export async function taskRun(options: TaskRunOptions): Promise<number> {
  const body = taskRequestFromFlags(options);
  const client = daemonClient(options);
  const task = await client.tasks.create(body);
  if (!options.follow) {
    process.stdout.write(
      options.json
        ? `${JSON.stringify(task)}\n`
        : `${task.id} ${task.state}${task.queuePosition ? ` (position ${task.queuePosition})` : ''}\n`,
    );
    return 0;
  }
  if (!options.json) process.stderr.write(`agentbox: task ${task.id} queued\n`);
  return printFollow(client, task.id, options.json);
}

export async function taskEvents(
  id: string,
  options: { after?: number; json: boolean; url?: string; key?: string },
): Promise<number> {
  return printFollow(daemonClient(options), id, options.json, options.after ?? 0);
}

export async function taskShow(id: string, options: { url?: string; key?: string }): Promise<number> {
  const task = await daemonClient(options).tasks.get(id);
  process.stdout.write(`${JSON.stringify(task, null, 2)}\n`);
  return 0;
}

export async function taskCancel(id: string, options: { url?: string; key?: string }): Promise<number> {
  const task = await daemonClient(options).tasks.cancel(id);
  process.stdout.write(`${task.id} ${task.state}\n`);
  return 0;
}

/** `agentbox task rm`: deletes ended tasks and their events, one line each. */
export async function taskRemove(ids: string[], options: { url?: string; key?: string }): Promise<number> {
  const tasks = daemonClient(options).tasks;
  for (const id of ids) {
    await tasks.delete(id);
    process.stdout.write(`${id} deleted\n`);
  }
  return 0;
}

export interface TaskListOptions {
  json: boolean;
  /** Tasks per page (the daemon's default: 100). */
  limit?: number;
  /** Start after this page end (a `nextCursor`, as the hint prints it). */
  cursor?: string;
  /** Every page, not just the first. */
  all?: boolean;
  box?: string;
  url?: string;
  key?: string;
}

/** `agentbox task list`: a page of tasks, newest first (every page with --all). */
export async function taskList(options: TaskListOptions): Promise<number> {
  const tasks = daemonClient(options).tasks;
  const query = {
    ...(options.limit !== undefined ? { limit: options.limit } : {}),
    ...(options.cursor !== undefined ? { cursor: options.cursor } : {}),
    ...(options.box !== undefined ? { boxId: options.box } : {}),
  };
  const print = (t: Task) =>
    process.stdout.write(
      options.json
        ? `${JSON.stringify(t)}\n`
        : `${t.id} ${t.state.padEnd(9)} ${t.agent.padEnd(8)} ${t.boxId ?? '-'} ${t.createdAt} ${short(t.spec.prompt, 60)}\n`,
    );
  if (options.all) {
    for await (const t of tasks.listAll(query)) print(t);
    return 0;
  }
  const page = await tasks.listPage(query);
  page.tasks.forEach(print);
  // On stderr: stdout stays one task per line (NDJSON with --json).
  if (page.nextCursor !== null)
    process.stderr.write(`agentbox: more tasks: --cursor ${page.nextCursor} (or --all)\n`);
  return 0;
}
