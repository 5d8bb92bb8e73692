import fs from 'node:fs';
import path from 'node:path';
import type { Image, TemplateProgress, Vm, VmResources, VmSpec, VmTemplate } from '@agentbox/vm';
import { caInstallArgv } from './box-egress.js';
import type { BoxLogger, ProcessProbe } from './box-service.js';

/** What templates need of the VM backend (the QEMU one has it; the fake has no snapshots). */
export interface TemplateBackend {
  create(spec: VmSpec): Promise<Vm>;
  ensureTemplate(image: Image, resources: VmResources, onProgress?: TemplateProgress): Promise<VmTemplate>;
  discardTemplate(template: VmTemplate): Promise<void>;
  /** Kills the template builds in flight, and waits for them to end. */
  abortTemplateBuilds?(): Promise<void>;
  /** Ends what builds of processes that are gone left (their template VMs); the dirs removed. */
  sweepDeadTemplateBuilds?(): Promise<string[]>;
}

/**
 * A clone made ahead of a request, to become a box (its id is the box's). `paused`: a warm-pool
 * clone, restored, warmed up and paused: resume it. `loaded`: the standby, a VM process with the
 * template's snapshot loaded whose guest has not run yet: start it (the restore proper, on demand).
 */
export interface WarmVm {
  id: string;
  vm: Vm;
  state: 'paused' | 'loaded';
  template: VmTemplate;
}

export interface BoxTemplatesOptions {
  backend: TemplateBackend;
  image: Image;
  /** Resources of the template built at start and of the warm pool. */
  defaults: VmResources;
  /** Paused clones kept ready for `create` (default resources only); 0: none. */
  warmPool: number;
  /**
   * Keep one clone of the default template loaded but not started (a VM process costs ~35 ms to
   * start and load before its guest runs); default true. Needs a backend whose VMs can preload.
   */
  standby?: boolean;
  log: BoxLogger;
  newId: () => string;
  /** The runtime dir of a box id (pool clones live among the boxes until taken). */
  boxDir: (id: string) => string;
  probe: ProcessProbe;
  /** Progress of template builds (the daemon's console shows it). */
  onProgress?: TemplateProgress;
  /** After a failed build, wait this long before trying again (doubles each time, up to 10 min). */
  retryMs?: number;
  /**
   * True while no box may be made (the host under its memory reserve): no clone is made ahead
   * either, until it is false again.
   */
  hostShort?: () => boolean;
}

/**
 * What `create` does to a box once it has a VM (workspace, env file, box CA into the trust store,
 * exec defaults) and a first exec, done once on a pool clone so that TCG has translated those code
 * paths before the clone is handed out: measured ~0.7 s → ~0.35 s for create's guest work.
 */
export async function warmUp(vm: Vm): Promise<void> {
  const guest = vm.guest;
  const scratch = '/run/agentbox/warm-up';
  await guest.mkdir(`${scratch}/workspace`, true);
  await guest.writeFile(`${scratch}/env.json`, Buffer.from('{}'), { mode: 0o600, makeParents: true });
  await guest.writeFile(`${scratch}/ca.pem`, Buffer.from('warm\nup\n'), { mode: 0o644 });
  // The box CA's installation, into a scratch bundle.
  await guest.exec({
    argv: caInstallArgv('warm-up', {
      ca: `${scratch}/ca.pem`,
      bundle: `${scratch}/bundle.pem`,
      mark: `${scratch}/ca-in-bundle`,
    }),
  });
  await guest.configure({});
  await guest.remove(scratch, true);
  for (let i = 0; i < 2; i++) await guest.exec({ argv: ['true'] });
}

/** Marks a runtime dir as a warm-pool clone's, so a daemon that died can tell its orphans. */
const POOL_MARKER = '.warm-pool';

/** After a pool or standby clone could not be made, wait this long before the next try. */
const REFILL_RETRY_MS = 5_000;

const keyOf = (r: VmResources) => `${r.memoryMib}/${r.vcpus}/${r.diskGib}`;

/**
 * Templates per size (built in the background: the default size at start, others the first time a
 * box of that size is asked for, which boots cold meanwhile) and the optional warm pool.
 */
export function createBoxTemplates(options: BoxTemplatesOptions) {
  const { backend, log } = options;
  const ready = new Map<string, VmTemplate>();
  const building = new Map<string, Promise<VmTemplate | undefined>>();
  const retryAt = new Map<string, { at: number; delayMs: number }>();
  const pool: WarmVm[] = [];
  let filling = 0;
  let standby: WarmVm | undefined;
  /** The id of the standby being made (its dir is marked already; a sweep must spare it). */
  let standbyFilling: string | undefined;
  let standbyRetryAt = 0;
  let standbyEnabled = options.standby !== false;
  let closed = false;
  /** A refill put off while the host is short (see hostShort). */
  let fillLater: NodeJS.Timeout | undefined;
  /** Clones being made or destroyed: close() waits for them, or a QEMU would outlive the daemon. */
  const inFlight = new Set<Promise<unknown>>();
  function track<T>(work: Promise<T>): Promise<T> {
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work)).catch(() => undefined);
    return work;
  }

  function build(resources: VmResources): Promise<VmTemplate | undefined> {
    const key = keyOf(resources);
    const pending = building.get(key);
    if (pending) return pending;
    const retry = retryAt.get(key);
    if (retry && Date.now() < retry.at) return Promise.resolve(undefined);
    const started = Date.now();
    const run = backend
      .ensureTemplate(options.image, resources, options.onProgress)
      .then(
        (template) => {
          ready.set(key, template);
          retryAt.delete(key);
          if (key === keyOf(options.defaults)) void fillStandby();
          log.info({ template: template.id, resources, ms: Date.now() - started }, 'template ready');
          return template;
        },
        (err: unknown) => {
          if (closed) return undefined;
          const delayMs = Math.min((retry?.delayMs ?? (options.retryMs ?? 30_000) / 2) * 2, 600_000);
          retryAt.set(key, { at: Date.now() + delayMs, delayMs });
          log.warn({ resources, err: (err as Error).message, retryInMs: delayMs }, 'template build failed');
          return undefined;
        },
      )
      .finally(() => building.delete(key));
    building.set(key, run);
    return run;
  }

  /** The VM of a clone made ahead of a request (pool or standby), its runtime dir marked so. */
  async function markedClone(id: string, template: VmTemplate): Promise<Vm> {
    const vm = await backend.create({
      id,
      image: options.image,
      resources: options.defaults,
      restoreFrom: { kind: 'template', template },
    });
    fs.writeFileSync(path.join(options.boxDir(id), POOL_MARKER), '');
    return vm;
  }

  async function fillOne(): Promise<void> {
    const template = ready.get(keyOf(options.defaults)) ?? (await build(options.defaults));
    if (!template || closed) return;
    const id = options.newId();
    let vm: Vm | undefined;
    try {
      vm = await markedClone(id, template);
      await vm.start();
      await warmUp(vm);
      await vm.pause();
      if (closed) throw new Error('closed');
      pool.push({ id, vm, state: 'paused', template });
    } catch (err) {
      await vm?.destroy().catch(() => undefined);
      if (!closed) log.warn({ err: (err as Error).message }, 'could not add a clone to the warm pool');
      throw err;
    }
  }

  function fill(): void {
    if (closed || fillLater) return;
    if (pool.length + filling < options.warmPool && options.hostShort?.()) {
      fillLater = setTimeout(() => {
        fillLater = undefined;
        fill();
      }, REFILL_RETRY_MS);
      fillLater.unref();
      return;
    }
    while (pool.length + filling < options.warmPool) {
      filling++;
      void track(fillOne())
        .catch(() => new Promise((r) => setTimeout(r, REFILL_RETRY_MS)))
        .finally(() => {
          filling--;
          if (pool.length + filling < options.warmPool) fill();
        });
      // One at a time: each restore costs a core for a moment.
      break;
    }
  }

  /** The standby: a clone of the default template, its snapshot loaded, its guest not yet run. */
  function fillStandby(): Promise<void> {
    if (closed || standby || standbyFilling || !standbyEnabled || Date.now() < standbyRetryAt)
      return Promise.resolve();
    // Made by the next create that is done once the host has room again.
    if (options.hostShort?.()) return Promise.resolve();
    return track(makeStandby());
  }

  async function makeStandby(): Promise<void> {
    const template = ready.get(keyOf(options.defaults));
    if (!template) return;
    const id = options.newId();
    standbyFilling = id;
    let vm: Vm | undefined;
    try {
      vm = await markedClone(id, template);
      if (!vm.preload) {
        // This backend cannot preload (the fake): no standby, ever.
        standbyEnabled = false;
        await vm.destroy();
        return;
      }
      await vm.preload();
      if (closed) throw new Error('closed');
      // One was given back meanwhile (returnWarm): it stays, this one goes.
      if (standby) {
        await vm.destroy();
        return;
      }
      const entry: WarmVm = { id, vm, state: 'loaded', template };
      standby = entry;
      void vm.exited.then(() => {
        if (standby !== entry) return;
        standby = undefined;
        log.warn({ boxId: id }, 'the standby clone exited');
        standbyRetryAt = Date.now() + REFILL_RETRY_MS;
      });
    } catch (err) {
      await vm?.destroy().catch(() => undefined);
      if (!closed) {
        log.warn({ err: (err as Error).message }, 'could not prepare a standby clone');
        standbyRetryAt = Date.now() + REFILL_RETRY_MS;
      }
    } finally {
      standbyFilling = undefined;
    }
  }

  function dropStandby(): void {
    const entry = standby;
    standby = undefined;
    if (entry) void track(entry.vm.destroy().catch(() => undefined));
  }

  return {
    /** Builds the default template (then fills the pool and the standby) in the background. */
    start(): void {
      void backend
        .sweepDeadTemplateBuilds?.()
        .then((swept) => {
          if (swept.length > 0) log.warn({ swept }, 'ended template builds a stopped daemon left running');
        })
        .catch((err: unknown) =>
          log.warn({ err: (err as Error).message }, 'could not sweep old template builds'),
        );
      void build(options.defaults).then(() => fill());
    },

    /** A ready template for this size; when there is none, one is built in the background. */
    template(resources: VmResources): VmTemplate | undefined {
      const template = ready.get(keyOf(resources));
      if (!template) void build(resources);
      return template;
    },

    /** Waits for the template of this size (a build if needed); undefined if it cannot be built. */
    async ensure(resources: VmResources): Promise<VmTemplate | undefined> {
      return ready.get(keyOf(resources)) ?? build(resources);
    },

    /** A template that did not restore is dropped and rebuilt. */
    failed(template: VmTemplate, err: unknown): void {
      log.warn(
        { template: template.id, err: (err as Error).message },
        'template restore failed; rebuilding it',
      );
      const key = keyOf(template.resources);
      if (ready.get(key)?.id === template.id) ready.delete(key);
      if (standby?.template.id === template.id) dropStandby();
      void backend.discardTemplate(template).then(() => build(template.resources));
    },

    /**
     * A clone made ahead for the default size: a warm one if the pool has one, else the standby
     * (both refill in the background).
     */
    takeWarm(resources: VmResources): WarmVm | undefined {
      const key = keyOf(resources);
      if (key !== keyOf(options.defaults)) return undefined;
      let warm = pool.shift();
      if (!warm && standby) {
        // A standby of a template since replaced would restore the old one: drop it.
        if (ready.get(key)?.id === standby.template.id && standby.vm.state === 'created') {
          warm = standby;
          standby = undefined;
        } else dropStandby();
      }
      if (warm) fs.rmSync(path.join(options.boxDir(warm.id), POOL_MARKER), { force: true });
      fill();
      // A standby taken is replaced once the create that took it is done (standbyDone): a QEMU
      // starting beside the box being set up slows it on a small host.
      if (warm?.state !== 'loaded') void fillStandby();
      return warm;
    },

    /** The create that took the standby is done (its box set up, or failed): make the next one. */
    standbyDone(): void {
      void fillStandby();
    },

    /** Gives back a warm clone that could not be used (e.g. the host was full). */
    returnWarm(warm: WarmVm): void {
      const usable = warm.state === 'paused' ? warm.vm.state === 'paused' : warm.vm.state === 'created';
      if (closed || !usable || (warm.state === 'loaded' && standby)) {
        void track(warm.vm.destroy().catch(() => undefined));
        return;
      }
      fs.writeFileSync(path.join(options.boxDir(warm.id), POOL_MARKER), '');
      if (warm.state === 'paused') pool.unshift(warm);
      else standby = warm;
    },

    /** Clones ready for a create now: paused in the warm pool, and the standby (0 or 1). */
    readyClones: () => ({ pool: pool.length, standby: standby ? 1 : 0 }),

    /** Pool clones a daemon that died left behind: killed, their dirs removed. */
    async sweepOrphans(knownIds: ReadonlySet<string>): Promise<string[]> {
      const root = path.dirname(options.boxDir('x'));
      let entries: string[] = [];
      try {
        entries = fs.readdirSync(root);
      } catch {
        return [];
      }
      const swept: string[] = [];
      for (const id of entries) {
        const dir = path.join(root, id);
        if (
          knownIds.has(id) ||
          pool.some((w) => w.id === id) ||
          standby?.id === id ||
          standbyFilling === id ||
          !fs.existsSync(path.join(dir, POOL_MARKER))
        )
          continue;
        await options.probe.killMentioning(dir);
        fs.rmSync(dir, { recursive: true, force: true });
        swept.push(id);
      }
      return swept;
    },

    async close(): Promise<void> {
      closed = true;
      clearTimeout(fillLater);
      await backend.abortTemplateBuilds?.();
      // A fill in flight sees `closed` when its step ends and destroys its clone.
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
      const standbyVm = standby?.vm;
      standby = undefined;
      await Promise.all(
        [...pool.splice(0).map((w) => w.vm), ...(standbyVm ? [standbyVm] : [])].map((vm) =>
          vm.destroy().catch(() => undefined),
        ),
      );
    },
  };
}

export type BoxTemplates = ReturnType<typeof createBoxTemplates>;
