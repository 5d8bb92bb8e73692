import type {
  ApiKey,
  ApiKeyGrantsUpdate,
  Box,
  Command,
  CommandDeleteResponse,
  CreateApiKeyRequest,
  CreateBoxRequest,
  CreatedApiKey,
  EgressAuditRecord,
  ErrorBody,
  FileDeleteResponse,
  FileListResponse,
  FileWriteResponse,
  KillProcessResponse,
  ProcessInfo,
  Task,
  TaskDeleteResponse,
  TaskEvent,
  TaskSpecInput,
} from '@agentbox/protocol';
import { commandOutputText } from './command-output.js';
import { createLineSplitter } from './ndjson.js';

/*
 * A small fetch client of the daemon's HTTP API for the browser. Types only come from
 * `@agentbox/protocol` (erased at build time: no zod in the bundle).
 * Not `@agentbox/sdk` (yet): it targets Node (`node:timers/promises`, `Buffer`) and parses error
 * bodies with the protocol's zod schemas at run time. Switch once it has a browser entry without
 * those; this file is the only one that talks HTTP.
 */

export type EgressRecord = EgressAuditRecord & { seq: number };
export type BoxAction = 'pause' | 'resume';
/** `POST /v1/tasks`: a spec as sent (defaults left out), and where it runs. */
export type NewTask = TaskSpecInput & { boxId?: string; userId?: string };

/** A refused request: the API's `{error: {code, message, requestId}}`, or a network failure. */
export class ApiError extends Error {
  readonly code: string;
  readonly status: number;
  readonly requestId: string | undefined;

  constructor(options: { code: string; message: string; status: number; requestId?: string | undefined }) {
    super(options.message);
    this.name = new.target.name;
    this.code = options.code;
    this.status = options.status;
    this.requestId = options.requestId;
  }
}

async function toApiError(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text) as Partial<ErrorBody>;
    if (body.error && typeof body.error.code === 'string') {
      return new ApiError({
        code: body.error.code,
        message: body.error.message,
        status: res.status,
        requestId: body.error.requestId,
      });
    }
  } catch {
    // not JSON: fall through
  }
  return new ApiError({ code: `http_${res.status}`, message: text || res.statusText, status: res.status });
}

/** Tasks per page of the task list ("Load more" adds a page). */
export const TASK_PAGE = 100;

export interface ApiClientOptions {
  key: string;
  /** Default: the page's origin (the daemon that served it). */
  baseUrl?: string;
  fetch?: typeof fetch;
}

export function createApiClient(options: ApiClientOptions) {
  const base = options.baseUrl ?? '';
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);

  async function send(
    method: string,
    path: string,
    init: { body?: unknown; bytes?: Blob; signal?: AbortSignal } = {},
  ) {
    const content =
      init.bytes !== undefined
        ? { type: 'application/octet-stream', body: init.bytes }
        : init.body !== undefined
          ? { type: 'application/json', body: JSON.stringify(init.body) }
          : undefined;
    let res: Response;
    try {
      res = await doFetch(`${base}${path}`, {
        method,
        headers: { 'x-api-key': options.key, ...(content ? { 'content-type': content.type } : {}) },
        ...(content ? { body: content.body } : {}),
        ...(init.signal ? { signal: init.signal } : {}),
      });
    } catch (err) {
      if (init.signal?.aborted) throw err;
      throw new ApiError({
        code: 'network_error',
        message: `the daemon is unreachable (${String(err)})`,
        status: 0,
      });
    }
    if (!res.ok) throw await toApiError(res);
    return res;
  }

  async function json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await send(method, path, body === undefined ? {} : { body });
    return (await res.json()) as T;
  }

  const id = encodeURIComponent;

  /** One page of `GET /v1/tasks` (newest first); `nextCursor` is null on the last. */
  function taskPage(filter: { boxId?: string; cursor?: string }) {
    const query = new URLSearchParams({ limit: String(TASK_PAGE) });
    if (filter.boxId) query.set('boxId', filter.boxId);
    if (filter.cursor) query.set('cursor', filter.cursor);
    return json<{ tasks: Task[]; nextCursor: string | null }>('GET', `/v1/tasks?${query.toString()}`);
  }

  return {
    listBoxes: async () => (await json<{ boxes: Box[] }>('GET', '/v1/boxes')).boxes,
    getBox: (boxId: string) => json<Box>('GET', `/v1/boxes/${id(boxId)}`),
    createBox: (body: CreateBoxRequest) => json<Box>('POST', '/v1/boxes', body),
    killBox: (boxId: string) => json<Box>('DELETE', `/v1/boxes/${id(boxId)}`),
    boxAction: (boxId: string, action: BoxAction) => json<Box>('POST', `/v1/boxes/${id(boxId)}/${action}`),
    egress: (boxId: string, after = 0) =>
      json<{ records: EgressRecord[]; next: number | null }>(
        'GET',
        `/v1/boxes/${id(boxId)}/egress?after=${after}&limit=500`,
      ),
    listTasks: async (filter: { boxId?: string } = {}) => (await taskPage(filter)).tasks,
    /**
     * The newest `pages` pages of tasks, walked from the top each time (so a poll sees new tasks
     * and state changes, with no gap or repeat where pages meet); `more`: older ones remain.
     */
    async listTaskPages(
      pages: number,
      filter: { boxId?: string } = {},
    ): Promise<{ tasks: Task[]; more: boolean }> {
      const tasks: Task[] = [];
      let cursor: string | undefined;
      for (let i = 0; i < pages; i++) {
        const page = await taskPage({ ...filter, ...(cursor === undefined ? {} : { cursor }) });
        tasks.push(...page.tasks);
        if (page.nextCursor === null) return { tasks, more: false };
        cursor = page.nextCursor;
      }
      return { tasks, more: true };
    },
    getTask: (taskId: string) => json<Task>('GET', `/v1/tasks/${id(taskId)}`),
    createTask: (body: NewTask) => json<Task>('POST', '/v1/tasks', body),
    cancelTask: (taskId: string) => json<Task>('POST', `/v1/tasks/${id(taskId)}/cancel`),
    deleteTask: (taskId: string) => json<TaskDeleteResponse>('DELETE', `/v1/tasks/${id(taskId)}`),
    /** A directory's entries; a path that is a file is refused here (`download` reads it). */
    async listDir(boxId: string, path: string): Promise<FileListResponse> {
      const res = await send('GET', `/v1/boxes/${id(boxId)}/files?path=${id(path)}`);
      if (!res.headers.get('content-type')?.startsWith('application/json')) {
        await res.body?.cancel();
        throw new ApiError({ code: 'not_a_directory', message: `${path} is a file`, status: 0 });
      }
      return (await res.json()) as FileListResponse;
    },
    /** A file's bytes, whole (the dashboard saves them with the browser's download). */
    download: async (boxId: string, path: string) =>
      (await send('GET', `/v1/boxes/${id(boxId)}/files?path=${id(path)}`)).blob(),
    upload: async (boxId: string, path: string, bytes: Blob) =>
      (
        await send('PUT', `/v1/boxes/${id(boxId)}/files?path=${id(path)}`, { bytes })
      ).json() as Promise<FileWriteResponse>,
    removeFile: (boxId: string, path: string) =>
      json<FileDeleteResponse>('DELETE', `/v1/boxes/${id(boxId)}/files?path=${id(path)}`),
    listProcesses: async (boxId: string) =>
      (await json<{ processes: ProcessInfo[] }>('GET', `/v1/boxes/${id(boxId)}/processes`)).processes,
    /** SIGKILL unless `signal` says otherwise. */
    killProcess: (boxId: string, pid: number, signal?: string) =>
      json<KillProcessResponse>(
        'DELETE',
        `/v1/boxes/${id(boxId)}/processes/${pid}${signal ? `?signal=${id(signal)}` : ''}`,
      ),
    /** The box's background commands (from the daemon's store: the box is not woken). */
    listCommands: async (boxId: string) =>
      (await json<{ commands: Command[] }>('GET', `/v1/boxes/${id(boxId)}/commands`)).commands,
    /** What a background command printed so far (the box wakes to read it). */
    commandOutput: async (boxId: string, commandId: string) =>
      commandOutputText(
        await (await send('GET', `/v1/boxes/${id(boxId)}/commands/${id(commandId)}/output`)).text(),
      ),
    /** Ends a background command if it runs, and drops it and its output. */
    deleteCommand: (boxId: string, commandId: string) =>
      json<CommandDeleteResponse>('DELETE', `/v1/boxes/${id(boxId)}/commands/${id(commandId)}`),
    /** API keys (admin keys only: a user key gets 403 `forbidden`). */
    listKeys: async () => (await json<{ keys: ApiKey[] }>('GET', '/v1/keys')).keys,
    createKey: (body: CreateApiKeyRequest) => json<CreatedApiKey>('POST', '/v1/keys', body),
    updateKeyGrants: (keyId: string, grants: ApiKeyGrantsUpdate) =>
      json<ApiKey>('PUT', `/v1/keys/${id(keyId)}/grants`, grants),
    revokeKey: (keyId: string) => json<ApiKey>('DELETE', `/v1/keys/${id(keyId)}`),
    resetKeySpend: (keyId: string) => json<ApiKey>('POST', `/v1/keys/${id(keyId)}/spend/reset`),
    /** The API's paths (from its OpenAPI document), to offer only what this daemon has. */
    paths: async () => new Set(Object.keys((await json<{ paths: object }>('GET', '/openapi.json')).paths)),

    /**
     * Follows a task's events after `after` as NDJSON over fetch (the key goes in the header,
     * never in the URL); calls `onEvent` for each as it arrives and resolves when the stream ends.
     */
    async followEvents(
      taskId: string,
      opts: {
        after: number;
        signal: AbortSignal;
        onEvent: (event: TaskEvent) => void;
        /** The daemon answered; events follow. */
        onOpen?: () => void;
      },
    ): Promise<void> {
      const res = await send('GET', `/v1/tasks/${id(taskId)}/events?after=${opts.after}`, {
        signal: opts.signal,
      });
      opts.onOpen?.();
      if (!res.body) throw new ApiError({ code: 'network_error', message: 'no response body', status: 0 });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const lines = createLineSplitter();
      const emit = (line: string) => {
        if (line.trim() === '') return;
        const value = JSON.parse(line) as TaskEvent | { seq?: undefined; error: ErrorBody['error'] };
        // The daemon's last word on a stream it ended (the key was revoked): an error, not an event.
        if (value.seq === undefined && 'error' in value) {
          throw new ApiError({
            code: value.error.code,
            message: value.error.message,
            status: value.error.code === 'unauthorized' ? 401 : 0,
            requestId: value.error.requestId,
          });
        }
        opts.onEvent(value);
      };
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        lines.push(value).forEach(emit);
      }
      lines.end().forEach(emit);
    },
  };
}

export type ApiClient = ReturnType<typeof createApiClient>;

/** Checks a key against the daemon; the error says why it was refused. */
export async function checkKey(key: string, baseUrl = ''): Promise<void> {
  await createApiClient({ key, baseUrl }).listBoxes();
}

export async function health(baseUrl = ''): Promise<{ version: string; uptimeSeconds: number } | undefined> {
  const res = await fetch(`${baseUrl}/health`).catch(() => undefined);
  return res?.ok ? ((await res.json()) as { version: string; uptimeSeconds: number }) : undefined;
}
