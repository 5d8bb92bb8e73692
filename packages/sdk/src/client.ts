import type { Box, HealthResponseSchema } from '@agentbox/protocol';
import type { z } from 'zod';
import { HttpTransport, type RequestOpts } from './http.js';
import { Keys } from './keys.js';
import { Library } from './library.js';
import { Sandbox, type SandboxCreateOpts } from './sandbox.js';
import { Tasks } from './tasks.js';

export const DEFAULT_URL = 'http://127.0.0.1:8080';

export interface ClientOpts {
  /** The daemon; default AGENTBOX_URL, else http://127.0.0.1:8080. */
  url?: string;
  /** An API key (`agentbox keys create`); default AGENTBOX_API_KEY. */
  apiKey?: string;
  /** The fetch to use; default the global one. */
  fetch?: typeof fetch;
}

export type Health = z.infer<typeof HealthResponseSchema>;

const processEnv = (): Record<string, string | undefined> =>
  (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {};

/** `client.boxes`: create, find and list boxes. */
export class Boxes {
  constructor(
    private readonly client: AgentboxClient,
    private readonly http: HttpTransport,
  ) {}

  /**
   * Boots a new box and returns it running. When the call times out or is aborted, the daemon
   * deletes the box it was booting once it is up (nobody learned its id). A connection lost for
   * another reason may leave it running: give boxes `labels` to find them in `list()`.
   */
  async create(opts: Omit<SandboxCreateOpts, 'client'> = {}): Promise<Sandbox> {
    const { timeoutMs, signal, ...request } = opts;
    const box = await this.http.json<Box>({
      method: 'POST',
      path: '/v1/boxes',
      json: request,
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      ...(signal ? { signal } : {}),
    });
    return new Sandbox(this.client, this.http, box);
  }

  /** An existing box (`BoxNotFoundError` if there is none). */
  async connect(id: string, opts: RequestOpts = {}): Promise<Sandbox> {
    return new Sandbox(this.client, this.http, await this.get(id, opts));
  }

  get(id: string, opts: RequestOpts = {}): Promise<Box> {
    return this.http.json<Box>({ method: 'GET', path: `/v1/boxes/${encodeURIComponent(id)}`, ...opts });
  }

  /** The boxes this key may see (all for an admin key), newest first. */
  async list(opts: RequestOpts = {}): Promise<Box[]> {
    return (await this.http.json<{ boxes: Box[] }>({ method: 'GET', path: '/v1/boxes', ...opts })).boxes;
  }

  /** Pauses a box by id (see `Sandbox.pause`); returns it. */
  pause(id: string, opts: RequestOpts = {}): Promise<Box> {
    return this.act(id, 'pause', opts);
  }

  /** Resumes a paused box or wakes a hibernated one, by id; returns it. */
  resume(id: string, opts: RequestOpts = {}): Promise<Box> {
    return this.act(id, 'resume', opts);
  }

  /** Hibernates a box by id; returns it. */
  hibernate(id: string, opts: RequestOpts = {}): Promise<Box> {
    return this.act(id, 'hibernate', opts);
  }

  /** Kills a box by id and deletes everything of it; returns it (state `deleted`). */
  kill(id: string, opts: RequestOpts = {}): Promise<Box> {
    return this.http.json<Box>({ method: 'DELETE', path: `/v1/boxes/${encodeURIComponent(id)}`, ...opts });
  }

  private act(id: string, action: 'pause' | 'resume' | 'hibernate', opts: RequestOpts): Promise<Box> {
    return this.http.json<Box>({
      method: 'POST',
      path: `/v1/boxes/${encodeURIComponent(id)}/${action}`,
      ...opts,
    });
  }
}

/** A connection to one agentbox daemon: its boxes, tasks, library and (admin) API keys. */
export class AgentboxClient {
  readonly url: string;
  readonly boxes: Boxes;
  readonly tasks: Tasks;
  readonly library: Library;
  readonly keys: Keys;
  private readonly http: HttpTransport;

  /** `env`: where AGENTBOX_URL / AGENTBOX_API_KEY are read (default `process.env`, none in a browser). */
  constructor(opts: ClientOpts = {}, env: Record<string, string | undefined> = processEnv()) {
    this.url = (opts.url ?? (env.AGENTBOX_URL || DEFAULT_URL)).replace(/\/+$/, '');
    this.http = new HttpTransport({
      url: this.url,
      apiKey: opts.apiKey ?? (env.AGENTBOX_API_KEY || undefined),
      fetch: opts.fetch ?? ((input, init) => fetch(input, init)),
    });
    this.boxes = new Boxes(this, this.http);
    this.tasks = new Tasks(this.http);
    this.library = new Library(this.http);
    this.keys = new Keys(this.http);
  }

  /** `GET /health` (no key needed): the daemon's version and uptime. */
  health(opts: RequestOpts = {}): Promise<Health> {
    return this.http.json<Health>({ method: 'GET', path: '/health', anonymous: true, ...opts });
  }
}
