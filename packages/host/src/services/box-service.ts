import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import {
  AgentboxError,
  EgressPolicySchema,
  type BoxState,
  type EgressPolicyInput,
  type EgressPresetName,
  type Runtime,
} from '@agentbox/protocol';
import type { AdoptSpec, GuestConnection, Image, Vm, VmResources, VmSpec } from '@agentbox/vm';
import type { BoxRecord, BoxStore } from '../store/box-store.js';
import type { Actor } from '../store/key-store.js';
import { WORKSPACE } from './paths.js';

/** Where the box's env vars live inside the guest (VM lifetime), so a restarted daemon finds them. */
export const GUEST_ENV_FILE = '/run/agentbox/env.json';

/** Paths inside a box the host relies on; the fake driver's unit tests give each box its own. */
export interface GuestLayout {
  workspace: string;
  envFile: string;
}

export const GUEST_LAYOUT: GuestLayout = { workspace: WORKSPACE, envFile: GUEST_ENV_FILE };

/** The part of a VM backend the box service uses; `adopt` only where VMs outlive the daemon. */
export interface BoxBackend {
  create(spec: VmSpec): Promise<Vm>;
  adopt?(spec: AdoptSpec): Promise<Vm>;
}

export interface BoxLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** Host-process helpers, injected so unit tests need no real processes. */
export interface ProcessProbe {
  startTime(pid: number): number | undefined;
  /** Live processes that reference a path in their argv (a box's runtime dir). */
  mentioning(text: string): number[];
}

/** Connects boxes to the host's egress gateway (see box-egress.ts); absent: egress disabled. */
export interface BoxEgress {
  /**
   * Opens the box's gateway session and points its guest at it (CA, env, proxy connections).
   * `credentials` are the box's own secrets: the guest only ever sees their placeholders.
   */
  attach(
    boxId: string,
    policy: EgressPolicyInput,
    guest: GuestConnection,
    credentials?: Record<string, string>,
  ): Promise<void>;
  /** Whether an env var is a credential the gateway can inject (it then never enters the box). */
  isCredential(name: string): boolean;
  /** Cuts the box's live connections and forgets its placeholders. */
  detach(boxId: string): Promise<void>;
  /** Applies a changed policy to the box's open session (new connections and requests). */
  updatePolicy(boxId: string, policy: EgressPolicyInput): void;
}

/** What a task needs its box to reach, added to the box's policy. */
export interface EgressWidening {
  presets?: readonly EgressPresetName[];
  repos?: readonly string[];
  domains?: readonly string[];
}

/**
 * The policy with the widening's presets, domains and repositories added (pure). A policy with
 * no `repos` list leaves GitHub ungoverned unless a repository is added: then only the listed ones.
 */
export function widenPolicy(policy: EgressPolicyInput, add: EgressWidening): EgressPolicyInput {
  const union = <T>(a: readonly T[] | undefined, b: readonly T[] | undefined): T[] => [
    ...new Set([...(a ?? []), ...(b ?? [])]),
  ];
  const next: EgressPolicyInput = { ...policy };
  if (add.presets?.length) next.presets = union(policy.presets, add.presets);
  if (add.domains?.length) next.allowDomains = union(policy.allowDomains, add.domains);
  if (add.repos?.length) next.repos = union(policy.repos, add.repos);
  return next;
}

/** A box that asked for no policy gets one by runtime; anything else stays unreachable. */
export function defaultEgressPolicy(runtime: Runtime): EgressPolicyInput {
  return runtime === 'claude-agent' ? { presets: ['anthropic'] } : {};
}

export interface BoxServiceDeps {
  store: BoxStore;
  backend: BoxBackend;
  image: Image;
  /** The runtime dir the backend uses for a box id. */
  boxDir: (id: string) => string;
  limits: { maxBoxes: number; defaults: VmResources; bootTimeoutMs?: number };
  metrics: { observeBoot(seconds: number): void };
  log: BoxLogger;
  probe: ProcessProbe;
  /** Default GUEST_LAYOUT; unit tests (guest agent on the host) use a layout per box. */
  guestLayout?: (boxId: string) => GuestLayout;
  egress?: BoxEgress;
  clock?: () => number;
}

export interface CreateBoxOptions {
  actor: Actor;
  userId?: string | undefined;
  runtime: Runtime;
  resources?: Partial<VmResources>;
  ttlSeconds?: number | undefined;
  labels?: Record<string, string>;
  env?: Record<string, string>;
  /** Default: defaultEgressPolicy(runtime). */
  egressPolicy?: EgressPolicyInput;
}

interface LiveBox {
  vm: Vm;
  env: Record<string, string>;
}

export type ReapReason = 'ttl_expired' | 'vm_died';

function newBoxId(): string {
  return `box-${randomBytes(5).toString('hex')}`;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The box lifecycle: creating → running → stopped → deleted, or failed. Every transition is
 * committed to the store before it is acted on, so a daemon that dies at any point leaves a record
 * the reconciler can finish.
 */
export function createBoxService(deps: BoxServiceDeps) {
  const { store, log } = deps;
  const clock = deps.clock ?? Date.now;
  const live = new Map<string, LiveBox>();
  const deleting = new Map<string, Promise<BoxRecord>>();
  const layoutOf = deps.guestLayout ?? (() => GUEST_LAYOUT);

  const visible = (actor: Actor, box: BoxRecord | undefined): box is BoxRecord =>
    box !== undefined && (actor.scope === 'admin' || box.ownerKeyId === actor.keyId);

  function get(options: { actor: Actor; id: string }): BoxRecord {
    const box = store.get(options.id);
    if (!visible(options.actor, box)) throw new AgentboxError('box_not_found', `no box ${options.id}`);
    return box;
  }

  /** Kills whatever is left of a box's VM and removes its runtime dir. */
  async function cleanup(box: BoxRecord): Promise<void> {
    const handle = live.get(box.id);
    live.delete(box.id);
    await deps.egress?.detach(box.id).catch(() => undefined);
    if (handle) await handle.vm.destroy().catch(() => undefined);
    for (const pid of deps.probe.mentioning(box.dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await fsp.rm(box.dir, { recursive: true, force: true });
  }

  async function fail(box: BoxRecord, reason: string): Promise<BoxRecord> {
    let failed = box;
    if (box.state !== 'failed') {
      failed = store.transition(box.id, 'failed', {
        from: ['creating', 'running', 'stopped'],
        patch: { failureReason: reason, pid: null },
        reason,
      });
      log.warn({ boxId: box.id, reason }, 'box failed');
    }
    await cleanup(failed);
    return failed;
  }

  /** A running VM that exits without being asked to is a failed box; its files go at once. */
  function watch(id: string, vm: Vm): void {
    void vm.exited
      .then(async () => {
        if (live.get(id)?.vm !== vm || deleting.has(id)) return;
        const box = store.get(id);
        if (box?.state === 'running') await fail(box, 'the VM exited');
      })
      .catch((err: unknown) => log.warn({ boxId: id, err: messageOf(err) }, 'could not record a VM exit'));
  }

  async function prepareGuest(id: string, vm: Vm, env: Record<string, string>): Promise<void> {
    const layout = layoutOf(id);
    await vm.guest.mkdir(layout.workspace, true);
    await vm.guest.writeFile(layout.envFile, Buffer.from(JSON.stringify(env)), {
      mode: 0o600,
      makeParents: true,
    });
  }

  async function create(options: CreateBoxOptions): Promise<BoxRecord> {
    const id = newBoxId();
    const resources: VmResources = { ...deps.limits.defaults, ...options.resources };
    const box = store.insert(
      {
        id,
        ownerKeyId: options.actor.keyId,
        userId: options.userId ?? null,
        runtime: options.runtime,
        memoryMib: resources.memoryMib,
        vcpus: resources.vcpus,
        diskGib: resources.diskGib,
        ttlSeconds: options.ttlSeconds ?? null,
        labels: options.labels ?? {},
        dir: deps.boxDir(id),
        egressPolicy: deps.egress
          ? EgressPolicySchema.parse(options.egressPolicy ?? defaultEgressPolicy(options.runtime))
          : null,
      },
      { maxLive: deps.limits.maxBoxes },
    );
    // Credentials among the env vars stay on the host; the box gets placeholders for them.
    const env: Record<string, string> = {};
    const credentials: Record<string, string> = {};
    for (const [name, value] of Object.entries(options.env ?? {})) {
      if (deps.egress?.isCredential(name)) credentials[name] = value;
      else env[name] = value;
    }
    const started = clock();
    let vm: Vm | undefined;
    try {
      vm = await deps.backend.create({
        id,
        image: deps.image,
        resources,
        ...(deps.limits.bootTimeoutMs ? { bootTimeoutMs: deps.limits.bootTimeoutMs } : {}),
      });
      live.set(id, { vm, env });
      await vm.start();
      await prepareGuest(id, vm, env);
      if (deps.egress && box.egressPolicy)
        await deps.egress.attach(id, box.egressPolicy, vm.guest, credentials);
    } catch (err) {
      await fail(box, `boot failed: ${messageOf(err)}`).catch(() => undefined);
      if (err instanceof AgentboxError && err.code !== 'internal') throw err;
      throw new AgentboxError('boot_failed', `box ${id} did not boot: ${messageOf(err)}`, { cause: err });
    }
    const bootMs = clock() - started;
    deps.metrics.observeBoot(bootMs / 1000);
    const pid = vm.pid ?? null;
    const running = store.transition(id, 'running', {
      from: ['creating'],
      patch: { pid, pidStartTime: pid === null ? null : (deps.probe.startTime(pid) ?? null), bootMs },
    });
    watch(id, vm);
    log.info({ boxId: id, bootMs, pid }, 'box running');
    return running;
  }

  /** Seed semantics: one persistent box per user id; a second call returns the live one. */
  async function createForUser(
    options: CreateBoxOptions & { userId: string },
  ): Promise<{ status: 'created' | 'exists'; box: BoxRecord }> {
    const existing = store.findLiveByUser(options.userId);
    if (existing) {
      if (!visible(options.actor, existing)) {
        throw new AgentboxError(
          'forbidden',
          `user ${options.userId} has a box that belongs to another API key`,
        );
      }
      return { status: 'exists', box: existing };
    }
    return { status: 'created', box: await create(options) };
  }

  function getByUser(options: { actor: Actor; userId: string }): BoxRecord {
    const box = store.findLiveByUser(options.userId);
    if (!visible(options.actor, box))
      throw new AgentboxError('box_not_found', `no box for user ${options.userId}`);
    return box;
  }

  async function destroy(box: BoxRecord, reason: string): Promise<BoxRecord> {
    const pending = deleting.get(box.id);
    if (pending) return pending;
    const run = (async () => {
      let current = box;
      if (current.state === 'running' || current.state === 'creating') {
        current = store.transition(box.id, 'stopped', { from: ['running', 'creating'], reason });
      }
      await cleanup(current);
      return store.transition(box.id, 'deleted', {
        from: ['stopped', 'failed'],
        patch: { pid: null },
        reason,
      });
    })();
    deleting.set(box.id, run);
    try {
      return await run;
    } finally {
      deleting.delete(box.id);
    }
  }

  function remove(options: { actor: Actor; id: string }): Promise<BoxRecord> {
    const box = get(options);
    if (box.state === 'deleted') throw new AgentboxError('box_not_found', `box ${box.id} is already deleted`);
    if (box.state === 'creating' && live.has(box.id)) {
      throw new AgentboxError('invalid_state', `box ${box.id} is still booting; delete it once it runs`);
    }
    return destroy(box, 'deleted by request');
  }

  /** The guest channel of a running box the actor may use. */
  function guestOf(options: { actor: Actor; id: string }): {
    guest: GuestConnection;
    env: Record<string, string>;
    workspace: string;
  } {
    const box = get(options);
    if (box.state !== 'running') {
      throw new AgentboxError('invalid_state', `box ${box.id} is ${box.state}, not running`, {
        details: { state: box.state },
      });
    }
    const handle = live.get(box.id);
    if (!handle || handle.vm.state !== 'running') {
      throw new AgentboxError(
        'guest_unreachable',
        `box ${box.id} has no live VM; the reaper will clean it up`,
      );
    }
    return { guest: handle.vm.guest, env: handle.env, workspace: layoutOf(box.id).workspace };
  }

  /** Boxes past their TTL, and boxes whose VM is gone, are deleted / failed and cleaned. */
  async function reap(): Promise<{ checked: number; reaped: { boxId: string; reason: ReapReason }[] }> {
    const now = clock();
    const boxes = store.live();
    const reaped: { boxId: string; reason: ReapReason }[] = [];
    for (const box of boxes) {
      if (deleting.has(box.id) || (box.state === 'creating' && live.has(box.id))) continue;
      try {
        if (box.expiresAt !== null && box.expiresAt <= now) {
          await destroy(box, 'ttl expired');
          reaped.push({ boxId: box.id, reason: 'ttl_expired' });
        } else if (box.state === 'stopped') {
          await destroy(box, 'finishing an interrupted delete');
        } else if (live.get(box.id)?.vm.state !== 'running') {
          await fail(box, 'the VM is gone');
          reaped.push({ boxId: box.id, reason: 'vm_died' });
        }
      } catch (err) {
        log.warn({ boxId: box.id, err: messageOf(err) }, 'reaper could not clean a box');
      }
    }
    return { checked: boxes.length, reaped };
  }

  async function readGuestEnv(id: string, vm: Vm): Promise<Record<string, string>> {
    try {
      const parsed: unknown = JSON.parse(
        (await vm.guest.readFileBuffer(layoutOf(id).envFile)).toString('utf8'),
      );
      if (parsed && typeof parsed === 'object' && Object.values(parsed).every((v) => typeof v === 'string')) {
        return parsed as Record<string, string>;
      }
    } catch {
      // no env file: no env vars
    }
    return {};
  }

  /**
   * On daemon start: re-adopts every box the store says is live whose VM process (same pid and start
   * time) still runs and answers; the others are marked failed and their files removed.
   */
  async function reconcile(): Promise<{ adopted: string[]; failed: string[]; deleted: string[] }> {
    const result = { adopted: [] as string[], failed: [] as string[], deleted: [] as string[] };
    await Promise.all(
      store.live().map(async (box) => {
        if (live.has(box.id)) return;
        if (box.state === 'stopped') {
          await destroy(box, 'finishing a delete interrupted by a daemon restart');
          result.deleted.push(box.id);
          return;
        }
        const alive =
          box.pid !== null && box.pidStartTime !== null && deps.probe.startTime(box.pid) === box.pidStartTime;
        if (box.state !== 'running' || !alive || !deps.backend.adopt) {
          await fail(box, box.state === 'creating' ? 'the daemon stopped while it booted' : 'the VM died');
          result.failed.push(box.id);
          return;
        }
        try {
          const vm = await deps.backend.adopt({ id: box.id, pid: box.pid!, startTime: box.pidStartTime! });
          live.set(box.id, { vm, env: await readGuestEnv(box.id, vm) });
          // A new daemon has a new gateway: the box gets a fresh session (and CA) under its policy.
          if (deps.egress && box.egressPolicy) await deps.egress.attach(box.id, box.egressPolicy, vm.guest);
          watch(box.id, vm);
          result.adopted.push(box.id);
          log.info({ boxId: box.id, pid: box.pid }, 'box re-adopted');
        } catch (err) {
          await fail(box, `could not re-adopt the VM: ${messageOf(err)}`);
          result.failed.push(box.id);
        }
      }),
    );
    return result;
  }

  /** Lets a running box reach what a task needs (its agent's API, its repository). */
  function widenEgress(options: { actor: Actor; id: string } & EgressWidening): Promise<void> {
    const box = get(options);
    if (!deps.egress || !box.egressPolicy) return Promise.resolve();
    const next = EgressPolicySchema.parse(widenPolicy(box.egressPolicy, options));
    if (JSON.stringify(next) === JSON.stringify(EgressPolicySchema.parse(box.egressPolicy)))
      return Promise.resolve();
    store.setEgressPolicy(box.id, next);
    deps.egress.updatePolicy(box.id, next);
    log.info({ boxId: box.id, presets: next.presets, repos: next.repos }, 'egress policy widened for a task');
    return Promise.resolve();
  }

  function countByState(): Record<BoxState, number> {
    return store.countByState();
  }

  return {
    create,
    createForUser,
    get,
    getByUser,
    list: (options: { actor: Actor }) =>
      store.list(options.actor.scope === 'admin' ? {} : { ownerKeyId: options.actor.keyId }),
    remove,
    guestOf,
    reap,
    reconcile,
    countByState,
    widenEgress,
    /** Whether an env var is a credential the egress gateway holds for the box (never plain env). */
    isCredential: (name: string) => deps.egress?.isCredential(name) ?? false,
    /** Whether the VM of a box is alive right now (for /status). */
    isAlive: (id: string) => live.get(id)?.vm.state === 'running',
    limit: () => deps.limits.maxBoxes,
  };
}

export type BoxService = ReturnType<typeof createBoxService>;
