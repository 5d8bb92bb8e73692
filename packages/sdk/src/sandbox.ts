import type { Box, CreateBoxRequest, EgressAuditResponseSchema } from '@agentbox/protocol';
import type { z } from 'zod';
// client.ts imports this module too; both only use the other's class inside functions.
import { AgentboxClient } from './client.js';
import { Commands } from './commands.js';
import { Files } from './files.js';
import type { HttpTransport, RequestOpts } from './http.js';
import { Processes } from './processes.js';
import type { BoxTaskRequest, TaskListOpts, TaskRun, Tasks } from './tasks.js';

/** What `Sandbox.create` takes: the box's resources and settings, and which daemon (default: from env). */
export interface SandboxCreateOpts extends CreateBoxRequest, RequestOpts {
  client?: AgentboxClient;
}

export interface ClientOpt {
  client?: AgentboxClient;
}

export type EgressAudit = z.infer<typeof EgressAuditResponseSchema>;

/** `box.tasks`: agent tasks in this box. */
export class BoxTasks {
  constructor(
    private readonly tasks: Tasks,
    private readonly boxId: string,
  ) {}

  /** Queues a task in this box; iterate the run for its events, or await `run.result()`. */
  run(spec: BoxTaskRequest, opts: RequestOpts = {}): Promise<TaskRun> {
    return this.tasks.run({ ...spec, boxId: this.boxId }, opts);
  }

  /** This box's tasks, newest first: one page (`limit`, default 100). */
  list(opts: Omit<TaskListOpts, 'boxId'> = {}) {
    return this.tasks.list({ ...opts, boxId: this.boxId });
  }

  listPage(opts: Omit<TaskListOpts, 'boxId'> = {}) {
    return this.tasks.listPage({ ...opts, boxId: this.boxId });
  }

  /** Every task of this box, newest first, fetched a page at a time. */
  listAll(opts: Omit<TaskListOpts, 'boxId'> = {}) {
    return this.tasks.listAll({ ...opts, boxId: this.boxId });
  }
}

/**
 * One box (a microVM) on the daemon. `Sandbox.create()` boots one; `Sandbox.connect(id)` takes
 * an existing one. Its `commands`, `files`, `processes` and `tasks` act in it.
 */
export class Sandbox {
  readonly commands: Commands;
  readonly files: Files;
  readonly processes: Processes;
  readonly tasks: BoxTasks;
  private box: Box;

  /** Use `Sandbox.create`, `Sandbox.connect` or `client.boxes`. */
  constructor(
    readonly client: AgentboxClient,
    private readonly http: HttpTransport,
    box: Box,
  ) {
    this.box = box;
    this.commands = new Commands(http, box.id);
    this.files = new Files(http, box.id);
    this.processes = new Processes(http, box.id);
    this.tasks = new BoxTasks(client.tasks, box.id);
  }

  /**
   * Boots a new box and returns it running. A timed-out or aborted call leaves no box: see
   * `client.boxes.create`.
   */
  static create(opts: SandboxCreateOpts = {}): Promise<Sandbox> {
    const { client, ...rest } = opts;
    return (client ?? Sandbox.defaultClient()).boxes.create(rest);
  }

  /** An existing box (`BoxNotFoundError` if there is none). */
  static connect(id: string, opts: ClientOpt & RequestOpts = {}): Promise<Sandbox> {
    const { client, ...rest } = opts;
    return (client ?? Sandbox.defaultClient()).boxes.connect(id, rest);
  }

  /** The boxes this key may see, newest first. */
  static list(opts: ClientOpt & RequestOpts = {}): Promise<Box[]> {
    const { client, ...rest } = opts;
    return (client ?? Sandbox.defaultClient()).boxes.list(rest);
  }

  /** A client from AGENTBOX_URL / AGENTBOX_API_KEY; replaced by `opts.client`. */
  private static defaultClient(): AgentboxClient {
    return new AgentboxClient();
  }

  get id(): string {
    return this.box.id;
  }

  /** The box as last seen (after create, connect, refresh or a state change). */
  get info(): Box {
    return this.box;
  }

  get state(): Box['state'] {
    return this.box.state;
  }

  private async act(action: 'pause' | 'resume' | 'hibernate' | 'kill', opts: RequestOpts): Promise<Box> {
    this.box = await this.client.boxes[action](this.id, opts);
    return this.box;
  }

  /** Fetches the box again. */
  async refresh(opts: RequestOpts = {}): Promise<Box> {
    this.box = await this.http.json<Box>({
      method: 'GET',
      path: `/v1/boxes/${encodeURIComponent(this.id)}`,
      ...opts,
    });
    return this.box;
  }

  /** Stops the box's vCPUs (no host CPU used); the next request resumes it. */
  pause(opts: RequestOpts = {}): Promise<Box> {
    return this.act('pause', opts);
  }

  /** Resumes a paused box, or wakes a hibernated one. */
  resume(opts: RequestOpts = {}): Promise<Box> {
    return this.act('resume', opts);
  }

  /** Saves the box's whole state to disk and ends its VM process; the next request wakes it. */
  hibernate(opts: RequestOpts = {}): Promise<Box> {
    return this.act('hibernate', opts);
  }

  /** Kills the VM and deletes everything of the box. */
  kill(opts: RequestOpts = {}): Promise<Box> {
    return this.act('kill', opts);
  }

  /** The box's egress decisions (audit), oldest first; pass `next` as `after` for the next page. */
  egress(opts: RequestOpts & { after?: number; limit?: number } = {}): Promise<EgressAudit> {
    const { after, limit, ...rest } = opts;
    return this.http.json<EgressAudit>({
      method: 'GET',
      path: `/v1/boxes/${encodeURIComponent(this.id)}/egress`,
      query: { after, limit },
      ...rest,
    });
  }
}
