import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  narrowToGrants,
  repoGrantExcess,
  REVOKED_KEY_POLICY,
  userPolicyExcess,
  type OpenBudgetOptions,
  type SpendBudget,
} from '@agentbox/egress';
import {
  AgentboxError,
  EgressPolicySchema,
  repoGranted,
  type BoxStartMode,
  type BoxState,
  type EgressPolicy,
  type EgressPolicyInput,
  type EgressPresetName,
  type Runtime,
} from '@agentbox/protocol';
import type { AdoptSpec, GuestConnection, Image, Vm, VmResources, VmSpec } from '@agentbox/vm';
import type { BoxRecord, BoxStore } from '../store/box-store.js';
import { grantsOf, type Actor, type KeyStore } from '../store/key-store.js';
import { createBoxLeases } from './box-leases.js';
import {
  createBoxPower,
  DEFAULT_IDLE,
  heldForDisk,
  type BoxSession,
  type IdleSettings,
} from './box-power.js';
import { createReconciler } from './box-reconcile.js';
import { diskGuardPass, type GuardedBox } from './disk-guard.js';
import { memoryGuardPass, type MemoryGuardedBox } from './memory-guard.js';
import type { BoxTemplates, WarmVm } from './box-templates.js';
import { WORKSPACE } from './paths.js';
import { within } from './within.js';
import { messageOf } from './error-message.js';

/** Where the box's env vars live inside the guest (VM lifetime), so a restarted daemon finds them. */
export const GUEST_ENV_FILE = '/run/agentbox/env.json';

/** Paths inside a box the host relies on; the fake driver's unit tests give each box its own. */
export interface GuestLayout {
  workspace: string;
  envFile: string;
}

export const GUEST_LAYOUT: GuestLayout = { workspace: WORKSPACE, envFile: GUEST_ENV_FILE };

/**
 * The part of a VM backend the box service uses; `adopt` only where VMs outlive the daemon,
 * `hibernation` (whether a box has a usable snapshot) only where VMs can hibernate.
 */
export interface BoxBackend {
  create(spec: VmSpec): Promise<Vm>;
  /** Rejects resources the image cannot have (invalid_request), before any box exists. */
  checkResources?(image: Image, resources: VmResources): Promise<void>;
  adopt?(spec: AdoptSpec): Promise<Vm>;
  hibernation?(id: string): unknown;
}

export interface BoxLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** Host-process helpers, injected so unit tests need no real processes. */
export interface ProcessProbe {
  startTime(pid: number): number | undefined;
  /** Kills the live processes that reference a path in their argv (a box's runtime dir); resolves once they are gone. */
  killMentioning(text: string): Promise<unknown>;
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
  /**
   * Points a new guest connection of the box (after a wake or a re-adoption) at the box's open
   * session, keeping its CA and placeholders; false when the box has none (then `attach`).
   */
  reattach?(boxId: string, guest: GuestConnection): Promise<boolean>;
  /** Counts (and with a limit, caps) what the box's model calls cost; see EgressGateway.openBudget. */
  openBudget?(boxId: string, options: OpenBudgetOptions): SpendBudget;
}

/** What a task needs its box to reach, added to the box's policy. */
export interface EgressWidening {
  presets?: readonly EgressPresetName[];
  repos?: readonly string[];
  domains?: readonly string[];
}

/**
 * The policy with the widening's presets, domains and repositories added (pure); nothing else of
 * the policy changes (no LAN, host, address or port). A policy with no `repos` list leaves GitHub
 * ungoverned (and without credentials) unless a repository is added: then only the listed ones.
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

/**
 * Refuses (403 forbidden) a policy the key may not ask for. A `user` key: the LAN, the host,
 * non-public `allowIPs`, ports beyond the default, `upstreams` (see userPolicyExcess). Any key:
 * `repos` beyond the repositories granted to it, and GraphQL operations unless it was granted
 * every repository (see repoGrantExcess); admin keys are. Fields are named as in `POST /v1/boxes` (`egress.…`).
 */
export function checkEgressScope(actor: Actor, policy: EgressPolicyInput): void {
  const parsed = EgressPolicySchema.parse(policy);
  const beyondScope = actor.scope === 'admin' ? [] : userPolicyExcess(parsed);
  const beyondGrants = repoGrantExcess(parsed, grantsOf(actor).repos);
  if (beyondScope.length === 0 && beyondGrants.length === 0) return;
  const fields = [...beyondScope, ...beyondGrants].map((e) => `egress.${e.field}`);
  const message = [
    ...beyondScope.map((e) => `egress.${e.field} needs an admin key: ${e.reason}`),
    ...beyondGrants.map(
      (e) =>
        `egress.${e.field}: ${e.reason} (the operator grants it: agentbox keys update ${actor.keyId} --repo …)`,
    ),
  ].join('; ');
  throw new AgentboxError('forbidden', message, { details: { fields } });
}

/** A box that asked for no policy gets one by runtime; anything else stays unreachable. */
export function defaultEgressPolicy(runtime: Runtime): EgressPolicyInput {
  return runtime === 'claude-agent' ? { presets: ['anthropic'] } : {};
}

/**
 * What `read` gives (free disk, available memory) when it is under `reserve`; undefined when it is
 * not, when it cannot be read, or with no reserve (0).
 */
export function belowReserve(
  read: (() => number | undefined) | undefined,
  reserve: number,
): number | undefined {
  const value = reserve > 0 ? read?.() : undefined;
  return value !== undefined && value < reserve ? value : undefined;
}

export interface BoxServiceDeps {
  store: BoxStore;
  backend: BoxBackend;
  image: Image;
  /** The image of an id, for boxes whose disk belongs to an older image; default: only `image`. */
  images?: (id: string) => Image | undefined;
  /** The runtime dir the backend uses for a box id. */
  boxDir: (id: string) => string;
  limits: {
    maxBoxes: number;
    defaults: VmResources;
    bootTimeoutMs?: number;
    /** No box is made while the boxes' filesystem has less free than this; absent or 0: no check. */
    minFreeDiskBytes?: number;
    /** No box is made, and idle boxes are hibernated, while the host has less memory available; absent or 0: no check. */
    minFreeMemoryBytes?: number;
  };
  /** Bytes free on the filesystem the boxes' disks live on; undefined when it cannot be read. */
  freeDiskBytes?: () => number | undefined;
  /** The host's available memory (MemAvailable) in bytes; undefined when it cannot be read. */
  availableMemoryBytes?: () => number | undefined;
  metrics: { observeBoot(seconds: number): void };
  log: BoxLogger;
  probe: ProcessProbe;
  /** Default GUEST_LAYOUT; unit tests (guest agent on the host) use a layout per box. */
  guestLayout?: (boxId: string) => GuestLayout;
  egress?: BoxEgress;
  /** Templates and warm pool (QEMU); absent: every box boots cold. */
  templates?: Pick<
    BoxTemplates,
    'template' | 'failed' | 'takeWarm' | 'returnWarm' | 'standbyDone' | 'sweepOrphans' | 'close'
  >;
  /** Idle pause / hibernate; default DEFAULT_IDLE. */
  idle?: Partial<IdleSettings>;
  /**
   * How long a delete waits for a lifecycle operation in flight on the box (a wake, a hibernate)
   * before it kills the VM anyway; default DELETE_WAIT_MS.
   */
  deleteWaitMs?: number;
  /**
   * The keys boxes belong to: a box's egress is held to its key's grants as they stand, and cut
   * once the key is revoked (see startEgressKeyCheck). Absent: each box keeps its stored policy.
   */
  keys?: Pick<KeyStore, 'isActive' | 'grantsFor'>;
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

/** A box held awake for a caller: never paused or hibernated for idleness until released. */
export interface BoxLease {
  guest: GuestConnection;
  env: Record<string, string>;
  workspace: string;
  release(): void;
}

export type ReapReason = 'ttl_expired' | 'vm_died';

/** The box's env vars on the host (0600, in its runtime dir): a disk boot loses the guest's copy. */
export const HOST_ENV_FILE = 'env.json';
/** A box's env file read back at a re-adoption: how long to wait for it, and how big it may be. */
const GUEST_ENV_WAIT_MS = 5_000;
const GUEST_ENV_MAX_BYTES = 1024 * 1024;

/** See BoxServiceDeps.deleteWaitMs: long enough for a wake or a hibernate, short enough for a client. */
const DELETE_WAIT_MS = 10_000;

function newBoxId(): string {
  return `box-${randomBytes(5).toString('hex')}`;
}

function isEnv(value: unknown): value is Record<string, string> {
  return !!value && typeof value === 'object' && Object.values(value).every((v) => typeof v === 'string');
}

/**
 * The box lifecycle: creating → running ⇄ paused / hibernated → stopped → deleted, or failed. Every
 * transition is committed to the store before it is acted on, so a daemon that dies at any point
 * leaves a record the reconciler can finish.
 */
export function createBoxService(deps: BoxServiceDeps) {
  const { store, log } = deps;
  const clock = deps.clock ?? Date.now;
  const sessions = new Map<string, BoxSession>();
  const deleting = new Map<string, Promise<BoxRecord>>();
  const creating = new Map<string, Promise<BoxRecord>>();
  const reconciling = new Map<string, Promise<void>>();
  const layoutOf = deps.guestLayout ?? (() => GUEST_LAYOUT);
  const idle: IdleSettings = { ...DEFAULT_IDLE, ...deps.idle };
  const canHibernate = typeof deps.backend.hibernation === 'function';
  const deleteWaitMs = deps.deleteWaitMs ?? DELETE_WAIT_MS;
  let idleTimer: NodeJS.Timeout | undefined;
  let keyCheckTimer: NodeJS.Timeout | undefined;
  let hostGuardTimer: NodeJS.Timeout | undefined;
  /** The policy each box's gateway session was last given (JSON), so a sweep changes only what moved. */
  const enforced = new Map<string, string>();

  const visible = (actor: Actor, box: BoxRecord | undefined): box is BoxRecord =>
    box !== undefined && (actor.scope === 'admin' || box.ownerKeyId === actor.keyId);

  function get(options: { actor: Actor; id: string }): BoxRecord {
    const box = store.get(options.id);
    if (!visible(options.actor, box)) throw new AgentboxError('box_not_found', `no box ${options.id}`);
    return box;
  }

  function newSession(vm: Vm | undefined, env: Record<string, string>): BoxSession {
    return {
      vm,
      env,
      leases: 0,
      lastActive: clock(),
      pausedAt: undefined,
      egressPending: false,
      chain: Promise.resolve(),
    };
  }

  const pidPatch = (vm: Vm) => {
    const pid = vm.pid ?? null;
    return { pid, pidStartTime: pid === null ? null : (deps.probe.startTime(pid) ?? null) };
  };

  /** Kills whatever is left of a box's VM and removes its runtime dir. */
  async function cleanup(box: BoxRecord): Promise<void> {
    const handle = sessions.get(box.id);
    sessions.delete(box.id);
    enforced.delete(box.id);
    await deps.egress?.detach(box.id).catch(() => undefined);
    if (handle?.vm) await handle.vm.destroy().catch(() => undefined);
    await deps.probe.killMentioning(box.dir);
    await fsp.rm(box.dir, { recursive: true, force: true });
  }

  /**
   * A user's persistent box whose VM is gone (or would not wake) keeps its disk (README: it
   * survives a host reboot).
   */
  function keepsDisk(box: BoxRecord): boolean {
    return (
      (box.state === 'running' || box.state === 'paused' || box.state === 'hibernated') &&
      box.userId !== null &&
      canHibernate &&
      fs.existsSync(path.join(box.dir, 'disk.qcow2'))
    );
  }

  /**
   * The box's VM died or broke (or was found dead). A persistent box keeps its disk: its VM is
   * killed and it is hibernated without a snapshot, to boot from its disk on its next use. Any other
   * box fails and its files go.
   */
  async function vmLost(box: BoxRecord, reason: string): Promise<BoxRecord> {
    const current = store.get(box.id) ?? box;
    // Already kept: the watcher and a failed resume can both see the same death.
    if (current.state === 'hibernated') return current;
    if (!keepsDisk(current)) return fail(current, reason);
    const kept = store.transition(box.id, 'hibernated', {
      from: [current.state],
      patch: { pid: null, pidStartTime: null },
      reason: `${reason}; the persistent box boots from its disk on its next use`,
    });
    log.warn({ boxId: box.id, reason }, 'box VM lost; its disk is kept');
    // The session (env, leases) stays for the next boot; its egress session too, as for a hibernate.
    const session = sessions.get(box.id);
    const vm = session?.vm;
    if (session) {
      session.vm = undefined;
      session.pausedAt = undefined;
      session.egressPending = false;
    }
    await vm?.kill().catch(() => undefined);
    await deps.probe.killMentioning(box.dir);
    return kept;
  }

  async function fail(box: BoxRecord, reason: string): Promise<BoxRecord> {
    let failed = store.get(box.id) ?? box;
    if (failed.state !== 'failed') {
      failed = store.transition(box.id, 'failed', {
        from: ['creating', 'running', 'paused', 'hibernated', 'stopped'],
        patch: { failureReason: reason, pid: null },
        reason,
      });
      log.warn({ boxId: box.id, reason }, 'box failed');
    }
    await cleanup(failed);
    return failed;
  }

  /** A VM that exits without being asked to is lost (see vmLost): a failed box, or a kept disk. */
  function watch(id: string, vm: Vm): void {
    void vm.exited
      .then(async () => {
        if (sessions.get(id)?.vm !== vm || deleting.has(id)) return;
        const box = store.get(id);
        if (box?.state === 'running' || box?.state === 'paused') await vmLost(box, 'the VM exited');
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

  function writeHostEnv(box: BoxRecord, env: Record<string, string>): void {
    try {
      fs.writeFileSync(path.join(box.dir, HOST_ENV_FILE), JSON.stringify(env), { mode: 0o600 });
    } catch (err) {
      log.warn({ boxId: box.id, err: messageOf(err) }, 'could not keep the env vars on the host');
    }
  }

  function readHostEnv(box: BoxRecord): Record<string, string> | undefined {
    try {
      const parsed: unknown = JSON.parse(fs.readFileSync(path.join(box.dir, HOST_ENV_FILE), 'utf8'));
      return isEnv(parsed) ? parsed : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * The policy a box's egress is held to: nothing once its key is revoked, else its stored policy
   * cut to the repositories its key is granted now (an operator may take a grant back).
   */
  function enforcedPolicy(box: BoxRecord, stored: EgressPolicyInput): EgressPolicy {
    const policy = EgressPolicySchema.parse(stored);
    if (!deps.keys) return policy;
    if (!deps.keys.isActive(box.ownerKeyId)) return REVOKED_KEY_POLICY;
    return narrowToGrants(policy, deps.keys.grantsFor(box.ownerKeyId).repos);
  }

  /** Gives the box's gateway session the policy it is held to, if that changed since last given. */
  function enforceEgress(box: BoxRecord, stored: EgressPolicyInput | null = box.egressPolicy): void {
    if (!deps.egress || !stored) return;
    const policy = enforcedPolicy(box, stored);
    const json = JSON.stringify(policy);
    const before = enforced.get(box.id);
    if (before === json) return;
    enforced.set(box.id, json);
    deps.egress.updatePolicy(box.id, policy);
    if (before !== undefined) {
      const revoked = policy === REVOKED_KEY_POLICY;
      log.info(
        { boxId: box.id, keyId: box.ownerKeyId, repos: policy.repos },
        revoked ? "egress cut: the box's key was revoked" : "egress follows the key's grants",
      );
    }
  }

  /** Egress for a guest connection: the box's open gateway session if it has one, else a new one. */
  async function setUpEgress(box: BoxRecord, vm: Vm, credentials?: Record<string, string>): Promise<void> {
    if (!deps.egress || !box.egressPolicy) return;
    if (!credentials && (await deps.egress.reattach?.(box.id, vm.guest))) return enforceEgress(box);
    const policy = enforcedPolicy(box, box.egressPolicy);
    await deps.egress.attach(box.id, policy, vm.guest, credentials);
    enforced.set(box.id, JSON.stringify(policy));
  }

  const power = createBoxPower({
    store,
    sessions,
    log,
    clock,
    backend: deps.backend,
    imageOf: (box) => (box.imageId ? deps.images?.(box.imageId) : undefined) ?? deps.image,
    resourcesOf: (box) => ({ memoryMib: box.memoryMib, vcpus: box.vcpus, diskGib: box.diskGib }),
    bootTimeoutMs: deps.limits.bootTimeoutMs,
    connect: async (box, vm, session, fresh) => {
      if (fresh) await prepareGuest(box.id, vm, session.env);
      await setUpEgress(box, vm);
    },
    setUpEgress: (box, vm) => setUpEgress(box, vm),
    watch,
    fail,
    vmLost,
    keepsDisk,
    killStray: async (box) => void (await deps.probe.killMentioning(box.dir)),
    cleanup,
    hibernatedSession: (box) => newSession(undefined, readHostEnv(box) ?? {}),
    pidPatch,
    metrics: deps.metrics,
  });

  /** Starts the VM of a new box: a warm clone, else a clone of the template, else a cold boot. */
  async function startVm(
    id: string,
    resources: VmResources,
    session: BoxSession,
  ): Promise<{ vm: Vm; mode: BoxStartMode }> {
    const base = {
      id,
      image: deps.image,
      resources,
      ...(deps.limits.bootTimeoutMs ? { bootTimeoutMs: deps.limits.bootTimeoutMs } : {}),
    };
    const template = deps.templates?.template(resources);
    if (template) {
      let vm: Vm | undefined;
      try {
        vm = await deps.backend.create({ ...base, restoreFrom: { kind: 'template', template } });
        session.vm = vm;
        await vm.start();
        return { vm, mode: 'clone' };
      } catch (err) {
        deps.templates?.failed(template, err);
        await vm?.destroy().catch(() => undefined);
        session.vm = undefined;
      }
    }
    const vm = await deps.backend.create(base);
    session.vm = vm;
    await vm.start();
    return { vm, mode: 'cold' };
  }

  /** Starts the standby clone (its snapshot is loaded); if it fails, as startVm() would have. */
  async function startStandby(
    warm: WarmVm,
    resources: VmResources,
    session: BoxSession,
  ): Promise<{ vm: Vm; mode: BoxStartMode }> {
    try {
      await warm.vm.start();
      return { vm: warm.vm, mode: 'clone' };
    } catch (err) {
      deps.templates?.failed(warm.template, err);
      await warm.vm.destroy().catch(() => undefined);
      session.vm = undefined;
      return startVm(warm.id, resources, session);
    }
  }

  /** What the boxes' filesystem keeps free (serve --min-free-disk-gib); 0: no reserve. */
  const diskReserve = deps.limits.minFreeDiskBytes ?? 0;

  /** The free bytes of the boxes' filesystem when under its reserve; undefined: room (or unknown). */
  const diskShort = () => belowReserve(deps.freeDiskBytes, diskReserve);

  /** A hibernation writes the guest's RAM to the disk: not while it is short (the box stays paused). */
  const idlePass = () => power.checkIdle(idle, canHibernate && diskShort() === undefined);

  /** Each live box's disk file size at the disk guard's last pass. */
  const diskSizes = new Map<string, number>();

  /** One pass of the disk guard (see disk-guard.ts). */
  function diskGuard(): void {
    const boxes: GuardedBox[] = [];
    for (const [id, session] of sessions) {
      const disk = session.vm?.diskUse?.();
      if (disk === undefined || reconciling.has(id)) continue;
      boxes.push({
        id,
        state: store.get(id)?.state ?? 'deleted',
        held: session.diskHeldSince !== undefined,
        disk,
        lastAllocatedBytes: diskSizes.get(id),
      });
    }
    diskSizes.clear();
    for (const box of boxes) diskSizes.set(box.id, box.disk!.allocatedBytes);
    const { hold, release } = diskGuardPass({
      freeBytes: deps.freeDiskBytes?.(),
      reserveBytes: diskReserve,
      boxes,
    });
    for (const id of hold)
      void power
        .holdForDisk(id, 'the host is short of disk space')
        .catch((err: unknown) =>
          log.warn({ boxId: id, err: messageOf(err) }, 'could not hold a box for disk'),
        );
    for (const id of release)
      void power
        .releaseDisk(id, 'host disk space freed')
        .catch((err: unknown) =>
          log.warn({ boxId: id, err: messageOf(err) }, 'could not release a box held for disk'),
        );
  }

  /** What the host keeps of its memory available (serve --min-free-memory-mib); 0: no reserve. */
  const memoryReserve = deps.limits.minFreeMemoryBytes ?? 0;

  /** The host's available memory when under its reserve; undefined: room (or unknown). */
  const memoryShort = () => belowReserve(deps.availableMemoryBytes, memoryReserve);

  /** Boxes the memory guard is hibernating, with what each is to give back. */
  const freeing = new Map<string, number>();

  /** One pass of the memory guard (see memory-guard.ts). */
  function memoryGuard(): void {
    // A hibernation writes the guest's RAM to the disk: not while that is short too.
    if (!canHibernate || diskShort() !== undefined) return;
    // Each box's use is read only when the host is short (a /proc read per box).
    const available = memoryShort();
    if (available === undefined) return;
    const boxes: MemoryGuardedBox[] = [];
    for (const [id, session] of sessions) {
      const vm = session.vm;
      if (!vm || freeing.has(id) || reconciling.has(id)) continue;
      boxes.push({
        id,
        idle:
          vm.state === 'paused' &&
          store.get(id)?.state === 'paused' &&
          session.leases === 0 &&
          vm.guest.activeCalls === 0 &&
          !heldForDisk(session),
        privateBytes: vm.memoryUse?.()?.privateBytes,
      });
    }
    const chosen = memoryGuardPass({
      availableBytes: available,
      reserveBytes: memoryReserve,
      pendingBytes: [...freeing.values()].reduce((sum, bytes) => sum + bytes, 0),
      boxes,
    });
    for (const id of chosen) {
      freeing.set(id, boxes.find((box) => box.id === id)?.privateBytes ?? 0);
      log.warn({ boxId: id }, 'hibernating an idle box: the host is short of memory');
      void power
        .hibernate(id, 'the host is short of memory', { idle: true })
        .catch((err: unknown) =>
          log.warn({ boxId: id, err: messageOf(err) }, 'could not hibernate a box for memory'),
        )
        .finally(() => freeing.delete(id));
    }
  }

  /**
   * Below a host reserve no box is made. A box writes to the host's disk as its guest fills its
   * own, and a full host disk stops every box (QEMU pauses a VM on ENOSPC) and the store; a host
   * out of memory ends boxes (the memory guard meanwhile hibernates idle ones).
   */
  function checkHostReserves(actor: Actor): void {
    const free = diskShort();
    const available = free === undefined ? memoryShort() : undefined;
    if (free === undefined && available === undefined) return;
    // A user key learns that the host is short, not its figures (as with the box count).
    if (actor.scope !== 'admin')
      throw new AgentboxError(
        'capacity_exhausted',
        `this host is short of ${free !== undefined ? 'disk space' : 'memory'} for another box; retry later`,
      );
    if (free !== undefined) {
      const gib = (bytes: number) => (bytes / 1024 ** 3).toFixed(1);
      throw new AgentboxError(
        'capacity_exhausted',
        `this host has ${gib(free)} GiB of disk free, under the ${gib(diskReserve)} GiB it keeps free ` +
          '(serve --min-free-disk-gib); delete boxes or free disk space',
        { details: { scope: 'host', resource: 'disk', freeBytes: free, minFreeBytes: diskReserve } },
      );
    }
    const mib = (bytes: number) => Math.floor(bytes / 1024 ** 2);
    throw new AgentboxError(
      'capacity_exhausted',
      `this host has ${mib(available!)} MiB of memory available, under the ${mib(memoryReserve)} MiB it ` +
        'keeps free (serve --min-free-memory-mib); delete or hibernate boxes',
      {
        details: {
          scope: 'host',
          resource: 'memory',
          availableBytes: available,
          minAvailableBytes: memoryReserve,
        },
      },
    );
  }

  async function create(options: CreateBoxOptions): Promise<BoxRecord> {
    // Whether or not this host has egress on: the key may not ask for it either way.
    if (options.egressPolicy) checkEgressScope(options.actor, options.egressPolicy);
    const resources: VmResources = { ...deps.limits.defaults, ...options.resources };
    await deps.backend.checkResources?.(deps.image, resources);
    // Checked again with the insert; first here, so a refused create takes no ready clone.
    const grants = grantsOf(options.actor);
    const room = {
      maxLive: deps.limits.maxBoxes,
      maxLiveOfOwner: grants.maxBoxes,
      maxMemoryOfOwner: grants.maxMemoryMib,
      maxDiskOfOwner: grants.maxDiskGib,
      size: { memoryMib: resources.memoryMib, diskGib: resources.diskGib },
      hostCounts: options.actor.scope === 'admin',
    };
    store.checkRoom(options.actor.keyId, room);
    checkHostReserves(options.actor);
    const warm = deps.templates?.takeWarm(resources);
    const id = warm?.id ?? newBoxId();
    let box: BoxRecord;
    try {
      box = store.insert(
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
          imageId: deps.image.manifest?.id ?? null,
        },
        room,
      );
    } catch (err) {
      if (warm) deps.templates?.returnWarm(warm);
      throw err;
    }
    const run = (async () => {
      // Credentials among the env vars stay on the host; the box gets placeholders for them.
      const env: Record<string, string> = {};
      const credentials: Record<string, string> = {};
      for (const [name, value] of Object.entries(options.env ?? {})) {
        if (deps.egress?.isCredential(name)) credentials[name] = value;
        else env[name] = value;
      }
      const session = newSession(warm?.vm, env);
      sessions.set(id, session);
      const started = clock();
      let vm: Vm;
      let mode: BoxStartMode;
      try {
        if (warm?.state === 'paused') {
          await warm.vm.resume();
          ({ vm, mode } = { vm: warm.vm, mode: 'pool' });
        } else if (warm) {
          ({ vm, mode } = await startStandby(warm, resources, session));
        } else {
          ({ vm, mode } = await startVm(id, resources, session));
        }
        await prepareGuest(id, vm, env);
        writeHostEnv(box, env);
        await setUpEgress(box, vm, credentials);
      } catch (err) {
        await fail(box, `boot failed: ${messageOf(err)}`).catch(() => undefined);
        if (err instanceof AgentboxError && err.code !== 'internal') throw err;
        throw new AgentboxError('boot_failed', `box ${id} did not boot: ${messageOf(err)}`, { cause: err });
      } finally {
        if (warm?.state === 'loaded') deps.templates?.standbyDone();
      }
      const bootMs = clock() - started;
      deps.metrics.observeBoot(bootMs / 1000);
      session.lastActive = clock();
      const running = store.transition(id, 'running', {
        from: ['creating'],
        patch: { ...pidPatch(vm), bootMs, startMode: mode },
      });
      watch(id, vm);
      log.info({ boxId: id, bootMs, mode, pid: running.pid }, 'box running');
      return running;
    })();
    creating.set(id, run);
    try {
      return await run;
    } finally {
      creating.delete(id);
    }
  }

  /**
   * Seed semantics: one persistent box per user id; a second call returns the live one. User ids
   * are per API key: two keys' "alice" are two boxes, and neither key learns of the other's.
   */
  async function createForUser(
    options: CreateBoxOptions & { userId: string },
  ): Promise<{ status: 'created' | 'exists'; box: BoxRecord }> {
    const { keyId } = options.actor;
    const existing = store.findLiveByUser(keyId, options.userId);
    if (existing) return { status: 'exists', box: existing };
    try {
      return { status: 'created', box: await create(options) };
    } catch (err) {
      // A parallel call made the user's box after our lookup (create awaits before its insert):
      // the store then refused ours as a second box of the user, or as one past a limit.
      const raced = store.findLiveByUser(keyId, options.userId);
      if (raced) return { status: 'exists', box: raced };
      throw err;
    }
  }

  /**
   * The live box of a user id: the key's own. An admin key's lookup falls back to the user id
   * under any key when it has none of its own, and refuses to guess between several.
   */
  function getByUser(options: { actor: Actor; userId: string }): BoxRecord {
    const { actor, userId } = options;
    const own = store.findLiveByUser(actor.keyId, userId);
    if (own) return own;
    const others = actor.scope === 'admin' ? store.findLiveByUserOfAnyKey(userId) : [];
    if (others.length > 1) {
      throw new AgentboxError(
        'invalid_state',
        `user ${userId} has live boxes under ${others.length} API keys (${others.map((b) => b.id).join(', ')}); ` +
          'name the box by id (/v1/boxes/{id}) or use the key that made it',
        { details: { userId, boxIds: others.map((b) => b.id) } },
      );
    }
    const box = others[0];
    if (!box) throw new AgentboxError('box_not_found', `no box for user ${userId}`);
    return box;
  }

  async function destroy(box: BoxRecord, reason: string): Promise<BoxRecord> {
    const pending = deleting.get(box.id);
    if (pending) return pending;
    const run = (async () => {
      let current = store.get(box.id) ?? box;
      if (['running', 'creating', 'paused', 'hibernated'].includes(current.state)) {
        current = store.transition(box.id, 'stopped', {
          from: ['running', 'creating', 'paused', 'hibernated'],
          reason,
        });
      }
      // After the operation in flight on the box: a wake finishes, finds the box stopped and ends
      // its new VM. One that does not end in time is not waited for: cleanup kills its VM, and
      // whatever it starts later it ends itself (see wake).
      const stopped = current;
      await power.serialize(box.id, () => cleanup(stopped), { waitMs: deleteWaitMs });
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

  async function remove(options: { actor: Actor; id: string }): Promise<BoxRecord> {
    const box = await adopted(options);
    if (box.state === 'deleted') throw new AgentboxError('box_not_found', `box ${box.id} is already deleted`);
    if (box.state === 'creating' && creating.has(box.id)) {
      throw new AgentboxError('invalid_state', `box ${box.id} is still booting; delete it once it runs`);
    }
    return destroy(box, 'deleted by request');
  }

  const leases = createBoxLeases({ adopted, creating, power, layoutOf, clock });

  /**
   * A lifecycle request waits for the box's re-adoption by a starting daemon: until then the box
   * has no session, and acting on it would race the reconciler's own outcome for it.
   */
  async function adopted(options: { actor: Actor; id: string }): Promise<BoxRecord> {
    const box = get(options);
    const pending = reconciling.get(box.id);
    if (!pending) return box;
    await pending;
    return get(options);
  }

  /** Boxes past their TTL, and boxes whose VM is gone, are deleted / failed and cleaned. */
  async function reap(): Promise<{ checked: number; reaped: { boxId: string; reason: ReapReason }[] }> {
    const now = clock();
    const boxes = store.live();
    const reaped: { boxId: string; reason: ReapReason }[] = [];
    for (const box of boxes) {
      if (
        deleting.has(box.id) ||
        reconciling.has(box.id) ||
        (box.state === 'creating' && creating.has(box.id))
      )
        continue;
      try {
        if (box.expiresAt !== null && box.expiresAt <= now) {
          await destroy(box, 'ttl expired');
          reaped.push({ boxId: box.id, reason: 'ttl_expired' });
        } else if (box.state === 'stopped') {
          await destroy(box, 'finishing an interrupted delete');
        } else if (box.state === 'hibernated') {
          // No VM by design: woken on its next use.
        } else {
          const vmState = sessions.get(box.id)?.vm?.state;
          if (vmState !== 'running' && vmState !== 'paused' && vmState !== 'starting') {
            // A persistent box keeps its disk: not cleaned up, so not reaped.
            if ((await vmLost(box, 'the VM is gone')).state === 'failed')
              reaped.push({ boxId: box.id, reason: 'vm_died' });
          }
        }
      } catch (err) {
        log.warn({ boxId: box.id, err: messageOf(err) }, 'reaper could not clean a box');
      }
    }
    return { checked: boxes.length, reaped };
  }

  const reconcile = createReconciler({
    store,
    sessions,
    reconciling,
    deps,
    log,
    clock,
    destroy,
    fail,
    vmLost,
    watch,
    setUpEgress,
    newSession,
    guestEnv: async (box, vm) => {
      // The host's copy first: the guest may have rewritten its own. Boxes made before the host
      // kept one have only the guest's.
      const kept = readHostEnv(box);
      if (kept) return kept;
      try {
        // The guest is not trusted to answer, or to answer briefly: a daemon's start waits on this.
        const read = vm.guest.readFileBuffer(layoutOf(box.id).envFile, { maxBytes: GUEST_ENV_MAX_BYTES });
        read.catch(() => undefined);
        const data = await within(read, GUEST_ENV_WAIT_MS);
        if (data instanceof Buffer) {
          const parsed: unknown = JSON.parse(data.toString('utf8'));
          if (isEnv(parsed)) return parsed;
        }
      } catch {
        // no env file in the guest
      }
      return {};
    },
    hostEnv: readHostEnv,
  });

  /**
   * Lets a running box reach what a task needs (its agent's API, its repository). A repository not
   * granted to the key is not added to `repos`: no token is injected for it, and the box reaches it
   * as the public does (if its policy lists no `repos`; else GitHub refuses it).
   */
  function widenEgress(options: { actor: Actor; id: string } & EgressWidening): Promise<void> {
    const box = get(options);
    if (!deps.egress || !box.egressPolicy) return Promise.resolve();
    const granted = grantsOf(options.actor).repos;
    const repos = (options.repos ?? []).filter((repo) => repoGranted(granted, repo));
    const next = EgressPolicySchema.parse(widenPolicy(box.egressPolicy, { ...options, repos }));
    if (JSON.stringify(next) === JSON.stringify(EgressPolicySchema.parse(box.egressPolicy)))
      return Promise.resolve();
    store.setEgressPolicy(box.id, next);
    enforceEgress(box, next);
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
    acquire: leases.acquire,
    withBox: leases.withBox,
    /** running → paused: the vCPUs stop; calls in flight wait; the next use resumes it. */
    pause: async (options: { actor: Actor; id: string }) =>
      power.pause((await adopted(options)).id, 'paused by request'),
    /** paused|hibernated → running. */
    resume: async (options: { actor: Actor; id: string }) =>
      power.resume((await adopted(options)).id, 'resumed by request'),
    /** running|paused → hibernated: saved to disk, VM process ended; the next use wakes it. */
    hibernate: async (options: { actor: Actor; id: string }) => {
      const box = await adopted(options);
      if (!canHibernate) throw new AgentboxError('snapshot_failed', 'this VM backend cannot hibernate boxes');
      return power.hibernate(box.id, 'hibernated by request');
    },
    reap,
    reconcile,
    countByState,
    widenEgress,
    /** Whether an env var is a credential the egress gateway holds for the box (never plain env). */
    isCredential: (name: string) => deps.egress?.isCredential(name) ?? false,
    /**
     * Counts what a box's model calls cost until closed, with a limit past which they are refused;
     * undefined without egress (a box without it reaches no model API).
     */
    openSpendBudget: (id: string, options: OpenBudgetOptions): SpendBudget | undefined =>
      deps.egress?.openBudget?.(id, options),
    /** Whether the VM of a box is alive right now (for /status): running or paused. */
    isAlive: (id: string) => {
      const state = sessions.get(id)?.vm?.state;
      return state === 'running' || state === 'paused';
    },
    limit: () => deps.limits.maxBoxes,
    /** Starts the idle policy (pause, then hibernate, boxes nobody uses). */
    startIdlePolicy(): void {
      if (idleTimer || (idle.pauseAfterMs <= 0 && idle.hibernateAfterMs <= 0)) return;
      idleTimer = setInterval(idlePass, idle.checkEveryMs ?? 1_000);
      idleTimer.unref();
    },
    /** One pass of the idle policy now (tests). */
    checkIdle: idlePass,
    /** How long the disk guard has held a box paused in all (a task's run time leaves it out). */
    heldMs: (id: string): number => power.diskHeldMs(id),
    /** Why the daemon holds a box paused, if it does (the API's `heldFor`). */
    heldFor: (id: string): 'disk' | null => (heldForDisk(sessions.get(id)) ? 'disk' : null),
    /** One pass of the disk guard now (tests). */
    checkDisk: diskGuard,
    /** One pass of the memory guard now (tests). */
    checkMemory: memoryGuard,
    /**
     * Starts the host guards: boxes filling the host's disk reserve are paused until space is
     * freed; idle boxes are hibernated while the host is under its memory reserve.
     */
    startHostGuards(everyMs = 1_000): void {
      if (hostGuardTimer) return;
      hostGuardTimer = setInterval(() => {
        diskGuard();
        memoryGuard();
      }, everyMs);
      hostGuardTimer.unref();
    },
    /**
     * Holds every live box's egress to its key every `intervalMs`: a grant taken back (`agentbox
     * keys update`, another process) or a key revoked reaches the boxes' open connections too.
     */
    startEgressKeyCheck(intervalMs: number): void {
      if (keyCheckTimer || !deps.egress || !deps.keys) return;
      keyCheckTimer = setInterval(() => {
        for (const box of store.live()) {
          try {
            enforceEgress(box);
          } catch (err) {
            log.warn({ boxId: box.id, err: messageOf(err) }, 'could not hold egress to its key');
          }
        }
      }, intervalMs);
      keyCheckTimer.unref();
    },
    /** Stops the idle policy, the key check and the warm pool; boxes keep running for the next daemon. */
    async close(): Promise<void> {
      clearInterval(idleTimer);
      idleTimer = undefined;
      clearInterval(keyCheckTimer);
      keyCheckTimer = undefined;
      clearInterval(hostGuardTimer);
      hostGuardTimer = undefined;
      await deps.templates?.close();
    },
  };
}

export type BoxService = ReturnType<typeof createBoxService>;
