import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { runnerFor as defaultRunnerFor, type AgentRunner } from '@agentbox/runners';
import type { AgentKind, EgressPolicyInput } from '@agentbox/protocol';
import { createEgressGateway, isInjectableSecret, type EgressGatewayOptions } from '@agentbox/egress';
import { availableMemoryBytes, type Image, type TemplateProgress, type VmResources } from '@agentbox/vm';
import { createApp } from './api/app.js';
import { buildOpenApi } from './api/openapi.js';
import type { RouteDef } from './api/route.js';
import { boxRoutes } from './api/routes/box-routes.js';
import { seedRoutes } from './api/routes/seed-routes.js';
import { taskRoutes } from './api/routes/task-routes.js';
import { keyRoutes } from './api/routes/key-routes.js';
import { systemRoutes } from './api/routes/system-routes.js';
import { DEFAULT_DASHBOARD_DIR, registerDashboard } from './api/static-routes.js';
import { createMetrics } from './metrics.js';
import { attachEgress } from './services/box-egress.js';
import {
  belowReserve,
  createBoxService,
  type BoxBackend,
  type BoxEgress,
  type BoxLogger,
  type GuestLayout,
  type ProcessProbe,
} from './services/box-service.js';
import type { IdleSettings } from './services/box-power.js';
import { forgetDeletedBoxes } from './services/box-retention.js';
import { createBoxTemplates, type TemplateBackend } from './services/box-templates.js';
import { createCommandService } from './services/command-service.js';
import { createExecService } from './services/exec-service.js';
import { createFileService } from './services/file-service.js';
import { createKeyWatch, KEY_CHECK_INTERVAL_MS } from './services/key-watch.js';
import { createLibraryService } from './services/library-service.js';
import { createTaskService, DEFAULT_MAX_CONCURRENT_TASKS } from './services/task-service.js';
import { DEFAULT_TASK_OUTPUT_LIMITS, type TaskOutputLimits } from './services/task-output.js';
import { createSpendAccounts } from './services/spend-accounts.js';
import { createAuditStore } from './store/audit-store.js';
import { createBoxStore } from './store/box-store.js';
import { createCommandStore } from './store/command-store.js';
import { openDatabase } from './store/db.js';
import { createKeyStore } from './store/key-store.js';
import { createTaskStore } from './store/task-store.js';

export const AGENTBOX_VERSION = '0.1.0';
export const DEFAULT_MAX_BOXES = 8;
export const DEFAULT_BOX_RESOURCES: VmResources = { memoryMib: 1024, vcpus: 1, diskGib: 4 };
export const REAP_INTERVAL_MS = 60_000;
export const SHUTDOWN_GRACE_MS = 10_000;
/** What the boxes' filesystem keeps free by default: below it no box is made. */
export const DEFAULT_MIN_FREE_DISK_BYTES = 2 * 1024 ** 3;
/** The host's available memory kept free of boxes (see memory-guard.ts). */
export const DEFAULT_MIN_FREE_MEMORY_BYTES = 1024 ** 3;

/** Bytes an unprivileged writer may still use on the filesystem of `dir`; undefined if unreadable. */
function freeBytesOf(dir: string): number | undefined {
  try {
    const stats = fs.statfsSync(dir);
    return stats.bavail * stats.bsize;
  } catch {
    return undefined;
  }
}

export interface HostOptions {
  /** SQLite database lives here. */
  dataDir: string;
  backend: BoxBackend;
  image: Image;
  /** Runtime dir of a box (the backend's; removed when the box is cleaned up). */
  boxDir: (id: string) => string;
  probe: ProcessProbe;
  /** Unit tests only: where each box's workspace and env file live (the fake guest runs on the host). */
  guestLayout?: (boxId: string) => GuestLayout;
  maxBoxes?: number;
  /** No box is made while `dataDir`'s filesystem has less free (default 2 GiB; 0: no check). */
  minFreeDiskBytes?: number;
  /** Tests only: what that filesystem has free (default: statfs of `dataDir`). */
  freeDiskBytes?: () => number | undefined;
  /**
   * No box is made, and idle boxes are hibernated, while the host has less memory available
   * (default 1 GiB; 0: no check).
   */
  minFreeMemoryBytes?: number;
  /** Tests only: the host's available memory (default: MemAvailable of /proc/meminfo). */
  availableMemoryBytes?: () => number | undefined;
  defaults?: VmResources;
  bootTimeoutMs?: number;
  bodyLimitBytes?: number;
  logger?: FastifyBaseLogger | false;
  validateResponses?: boolean;
  reapIntervalMs?: number;
  /** Ended tasks (with their events) are deleted this long after they ended; absent: kept. */
  taskRetentionMs?: number;
  /**
   * Deleted boxes (their record, state history and egress audit) are forgotten this long after
   * they were deleted; absent: kept.
   */
  boxRetentionMs?: number;
  /**
   * The egress gateway's options; boxes then get a policy, a CA and placeholders. Absent: egress
   * disabled (every connection from a box gets 403 egress_disabled). The fake driver's unit tests
   * leave it off: their "guest" is this host, whose trust store must not be touched.
   */
  egress?: Omit<EgressGatewayOptions, 'audit'>;
  /**
   * Tests only (needs `egress.allowUpstreamMap`): host name → IP:PORT added to every box's policy,
   * so boxes the daemon makes itself (a user's box, a task's box) reach fake upstreams too.
   */
  egressTestUpstreams?: Record<string, string>;
  /** Tasks running at once on this host; the rest wait in FIFO order. */
  maxConcurrentTasks?: number;
  /**
   * Caps on each task's stored events (default 256 MiB, 100,000 events): a task whose agent prints
   * more is stopped and fails `output_limit`.
   */
  taskOutputLimits?: Partial<TaskOutputLimits>;
  /** The library root (`$AGENTBOX_HOME/library`); default `<dataDir>/library`. */
  libraryDir?: string;
  /** Env every agent process gets (below the task's own), e.g. tuning for an emulated CPU. */
  agentEnv?: Record<string, string>;
  /** The agent adapters; unit tests may stand in a scripted one. */
  runnerFor?: (kind: AgentKind) => AgentRunner;
  /**
   * Boxes start as clones of a template (one per image + size, built in the background at start
   * for the default size), with `warmPool` paused clones kept ready; absent: every box boots cold.
   */
  templates?: {
    backend: TemplateBackend;
    warmPool?: number;
    /** One clone kept loaded but not started (default true); see BoxTemplatesOptions.standby. */
    standby?: boolean;
    onProgress?: TemplateProgress;
  };
  /** Images by id, for boxes whose disk belongs to an older image than `image`. */
  images?: (id: string) => Image | undefined;
  /** Idle pause / hibernate settings (default: pause after 30 s, hibernate after 10 min paused). */
  idle?: Partial<IdleSettings>;
  clock?: () => number;
  /** The built web dashboard served at `/` (default `packages/dashboard/dist`). */
  dashboardDir?: string;
  /**
   * How often open streams, queued or running tasks and boxes' egress re-check their key (default
   * 5 s): a key revoked meanwhile, also by another process, ends them and cuts the egress; a grant
   * taken back narrows the egress.
   */
  keyCheckIntervalMs?: number;
}

const silentLog: BoxLogger = { info: () => undefined, warn: () => undefined };

/** Store + services + HTTP app of one daemon, wired; `start` reconciles and starts the reaper. */
export function createHost(options: HostOptions) {
  const clock = options.clock ?? Date.now;
  const db = openDatabase(options.dataDir);
  const keys = createKeyStore(db, clock);
  const store = createBoxStore(db, clock);
  const startedAt = clock();
  let closing = false;
  let reaper: NodeJS.Timeout | undefined;
  const log: BoxLogger = options.logger
    ? {
        info: (o, m) => options.logger && options.logger.info(o, m),
        warn: (o, m) => options.logger && options.logger.warn(o, m),
      }
    : silentLog;

  const keyWatch = createKeyWatch({
    isActive: (keyId) => keys.isActive(keyId),
    ...(options.keyCheckIntervalMs ? { intervalMs: options.keyCheckIntervalMs } : {}),
    log,
  });
  const audit = createAuditStore(db);
  const spendAccounts = createSpendAccounts({ keys, ownerOf: (boxId) => store.get(boxId)?.ownerKeyId });
  const gateway = options.egress
    ? createEgressGateway({ ...options.egress, audit, spendAccount: (boxId) => spendAccounts.forBox(boxId) })
    : undefined;
  const testUpstreams = options.egressTestUpstreams;
  const withTestUpstreams = (policy: EgressPolicyInput): EgressPolicyInput =>
    testUpstreams ? { ...policy, upstreams: { ...testUpstreams, ...policy.upstreams } } : policy;
  const egress: BoxEgress | undefined = gateway && {
    async attach(boxId, policy, guest, credentials) {
      await gateway.box(boxId)?.close();
      const secretValues =
        credentials && Object.keys(credentials).length > 0 ? { secretValues: credentials } : {};
      // The CA and placeholders an earlier daemon gave the box: what runs in it started with them.
      const identity = store.egressIdentity(boxId);
      const session = await gateway.openBox({
        boxId,
        policy: withTestUpstreams(policy),
        ...secretValues,
        ...(identity ? { identity } : {}),
      });
      store.setEgressIdentity(boxId, session.identity);
      await attachEgress(guest, session);
    },
    isCredential: (name) => isInjectableSecret(name),
    detach: async (boxId) => gateway.box(boxId)?.close(),
    updatePolicy: (boxId, policy) => gateway.box(boxId)?.updatePolicy(withTestUpstreams(policy)),
    async reattach(boxId, guest) {
      const session = gateway.box(boxId);
      if (!session) return false;
      await attachEgress(guest, session);
      return true;
    },
    openBudget: (boxId, budget) => gateway.openBudget(boxId, budget),
  };

  const metrics = createMetrics({
    boxesByState: () => store.countByState(),
    // Read at scrape time, once `templates` exists.
    readyClones: () => templates?.readyClones() ?? { pool: 0, standby: 0 },
  });
  const defaults = options.defaults ?? DEFAULT_BOX_RESOURCES;
  const memoryReserve = options.minFreeMemoryBytes ?? DEFAULT_MIN_FREE_MEMORY_BYTES;
  const availableMemory = options.availableMemoryBytes ?? availableMemoryBytes;
  /** Under the memory reserve: no box is made, nor a clone ahead of one. */
  const memoryShort = (): boolean => belowReserve(availableMemory, memoryReserve) !== undefined;
  const templates =
    options.templates &&
    createBoxTemplates({
      backend: options.templates.backend,
      image: options.image,
      defaults,
      warmPool: options.templates.warmPool ?? 0,
      ...(options.templates.standby !== undefined ? { standby: options.templates.standby } : {}),
      ...(options.templates.onProgress ? { onProgress: options.templates.onProgress } : {}),
      log,
      newId: () => `box-${randomBytes(5).toString('hex')}`,
      boxDir: options.boxDir,
      probe: options.probe,
      hostShort: memoryShort,
    });
  const boxes = createBoxService({
    store,
    backend: options.backend,
    image: options.image,
    boxDir: options.boxDir,
    limits: {
      maxBoxes: options.maxBoxes ?? DEFAULT_MAX_BOXES,
      defaults,
      ...(options.bootTimeoutMs ? { bootTimeoutMs: options.bootTimeoutMs } : {}),
      minFreeDiskBytes: options.minFreeDiskBytes ?? DEFAULT_MIN_FREE_DISK_BYTES,
      minFreeMemoryBytes: memoryReserve,
    },
    freeDiskBytes: options.freeDiskBytes ?? (() => freeBytesOf(options.dataDir)),
    availableMemoryBytes: availableMemory,
    ...(templates ? { templates } : {}),
    ...(options.images ? { images: options.images } : {}),
    ...(options.idle ? { idle: options.idle } : {}),
    metrics,
    log,
    probe: options.probe,
    ...(options.guestLayout ? { guestLayout: options.guestLayout } : {}),
    ...(egress ? { egress } : {}),
    keys: { isActive: (keyId) => keys.isActive(keyId), grantsFor: (keyId) => keys.grantsFor(keyId) },
    clock,
  });
  const exec = createExecService({ boxes, metrics });
  const commands = createCommandService({ store: createCommandStore(db, clock), boxes, log });
  const files = createFileService({ boxes });
  const taskStore = createTaskStore(db, clock);
  const library = createLibraryService({ root: options.libraryDir ?? path.join(options.dataDir, 'library') });
  const tasks = createTaskService({
    store: taskStore,
    boxes,
    library,
    keys: {
      isActive: (keyId) => keyWatch.isActive(keyId),
      watch: (keyId, onRevoked) => keyWatch.watch(keyId, onRevoked),
      grantsFor: (keyId) => keys.grantsFor(keyId),
    },
    runnerFor: options.runnerFor ?? defaultRunnerFor,
    maxConcurrent: options.maxConcurrentTasks ?? DEFAULT_MAX_CONCURRENT_TASKS,
    outputLimits: {
      maxBytes: options.taskOutputLimits?.maxBytes ?? DEFAULT_TASK_OUTPUT_LIMITS.maxBytes,
      maxEvents: options.taskOutputLimits?.maxEvents ?? DEFAULT_TASK_OUTPUT_LIMITS.maxEvents,
    },
    log,
    ...(options.agentEnv ? { agentEnv: options.agentEnv } : {}),
  });

  const routes: RouteDef[] = [];
  const openapi = () => buildOpenApi(routes, { version: AGENTBOX_VERSION });
  routes.push(
    ...seedRoutes({ boxes, files, tasks, version: AGENTBOX_VERSION, startedAt, clock }),
    ...boxRoutes({ boxes, exec, commands, files, audit }),
    ...taskRoutes({ tasks, library, eventCount: (id) => taskStore.eventCount(id) }),
    ...keyRoutes({ keys, spendReset: (id) => spendAccounts.reset(id) }),
    ...systemRoutes({ metrics, openapi }),
  );
  const app: FastifyInstance = createApp({
    routes,
    authenticate: (secret) => keys.authenticate(secret),
    watchKey: (keyId, onRevoked) => keyWatch.watch(keyId, onRevoked),
    logger: options.logger ?? false,
    validateResponses: options.validateResponses ?? false,
    closing: () => closing,
    observeHttp: metrics.observeHttp,
    ...(options.bodyLimitBytes ? { bodyLimitBytes: options.bodyLimitBytes } : {}),
  });
  registerDashboard(app, { dir: options.dashboardDir ?? DEFAULT_DASHBOARD_DIR });

  async function reapNow() {
    const result = await boxes.reap();
    if (result.reaped.length > 0) log.info({ reaped: result.reaped }, 'reaper cleaned up boxes');
    // Events of tasks deleted before a daemon stopped, then the retention sweeps.
    await tasks.removeDeletedEvents();
    if (options.taskRetentionMs !== undefined) await tasks.prune(options.taskRetentionMs);
    if (options.boxRetentionMs !== undefined)
      await forgetDeletedBoxes({ store, audit, log }, options.boxRetentionMs, clock());
    return result;
  }

  return {
    app,
    keys,
    store,
    audit,
    gateway,
    boxes,
    tasks,
    commands,
    taskStore,
    library,
    routes,
    openapi,
    metrics,

    /**
     * Re-adopts (or fails) the boxes and recovers the tasks an earlier daemon left, then starts the
     * periodic reaper. The API may listen as soon
     * as this is called (not awaited): a request for a box waits for that box's re-adoption only,
     * and tasks are started once the last daemon's are back in the queue.
     */
    async start() {
      // Before anything awaits, so before any request: what was left is told apart from what comes.
      const leftTasks = tasks.holdForRecovery();
      const reconciled = await boxes.reconcile();
      log.info(reconciled, 'reconciled boxes with live VMs');
      templates?.start();
      boxes.startIdlePolicy();
      boxes.startHostGuards();
      boxes.startEgressKeyCheck(options.keyCheckIntervalMs ?? KEY_CHECK_INTERVAL_MS);
      const watched = commands.recover();
      if (watched > 0) log.info({ commands: watched }, 'watching the background commands left running');
      const recovered = await tasks.recover(leftTasks);
      if (recovered.resumed.length + recovered.failed.length + recovered.requeued.length > 0)
        log.info(recovered, 'recovered tasks');
      reaper = setInterval(
        () => void reapNow().catch(() => undefined),
        options.reapIntervalMs ?? REAP_INTERVAL_MS,
      );
      reaper.unref();
      return reconciled;
    },

    /**
     * Stops accepting requests, lets running ones (streams) finish for up to `graceMs`, then cuts
     * them; boxes stay recorded and their VMs keep running for the next daemon to re-adopt, and
     * so do journaled agents, for the next daemon to take up their tasks.
     */
    async close(graceMs = SHUTDOWN_GRACE_MS) {
      closing = true;
      clearInterval(reaper);
      await boxes.close();
      commands.stopAll();
      const detached = await tasks.stopAll();
      if (detached.length > 0)
        log.info({ tasks: detached }, 'tasks left running in their boxes for the next daemon to take up');
      const cut = setTimeout(() => app.server.closeAllConnections(), graceMs);
      try {
        await app.close();
      } finally {
        clearTimeout(cut);
        keyWatch.close();
        await gateway?.close();
        spendAccounts.flush();
        db.close();
      }
    },
  };
}

export type Host = ReturnType<typeof createHost>;
