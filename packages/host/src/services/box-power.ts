import { AgentboxError, type BoxStartMode } from '@agentbox/protocol';
import type { Image, Vm, VmResources, VmSpec } from '@agentbox/vm';
import type { BoxRecord, BoxStore } from '../store/box-store.js';
import type { BoxLogger } from './box-service.js';
import { within } from './within.js';
import { messageOf } from './error-message.js';

/** What the daemon knows of a live box beyond its record: its VM (none while hibernated) and use. */
export interface BoxSession {
  vm: Vm | undefined;
  env: Record<string, string>;
  /** Holders of an `acquire` lease: while > 0 the box is never paused or hibernated for idleness. */
  leases: number;
  /** clock() of the last lease release (or other use). */
  lastActive: number;
  pausedAt: number | undefined;
  /** The guest connection is new (adopted while paused, woken) and egress is not set up on it yet. */
  egressPending: boolean;
  /** Lifecycle operations on one box run one after another. */
  chain: Promise<unknown>;
  /** Wakes in a row that failed both ways (snapshot and disk) while the box kept its disk. */
  wakeFailures?: { count: number; since: number };
  /**
   * clock() when the disk guard began to hold it paused (the host short of disk space); it stays
   * paused until the guard releases it.
   */
  diskHeldSince?: number;
  /** How long the disk guard held it in all, earlier holds (ended) only. */
  diskHeldMs?: number;
}

/** The disk guard holds the box's VM (a hold ends with the VM: a box woken or booted again is new). */
export function heldForDisk(session: BoxSession | undefined): boolean {
  return session?.diskHeldSince !== undefined && session.vm !== undefined;
}

/** What a request to a box the disk guard holds is told (a user key learns no host figures). */
function diskHeldError(id: string): AgentboxError {
  return new AgentboxError(
    'capacity_exhausted',
    `box ${id} is paused: this host is short of disk space; it runs again by itself once space is freed`,
    { details: { scope: 'host', resource: 'disk' } },
  );
}

/**
 * A persistent box whose wake fails both ways stays hibernated with its disk (a boot timeout on an
 * overloaded host is not a broken disk). It fails, and its disk goes, only once this many wakes in
 * a row have failed over at least WAKE_GIVE_UP_MS: a client that retries at once cannot use up the
 * tries, and a disk that never boots is not retried forever.
 */
export const MAX_WAKE_FAILURES = 3;
export const WAKE_GIVE_UP_MS = 10 * 60_000;

export interface IdleSettings {
  /** A running box with no lease and no call in flight this long is paused; 0: never. */
  pauseAfterMs: number;
  /** A box paused this long is hibernated (its RAM freed); 0: never. */
  hibernateAfterMs: number;
  /** How often boxes are checked. */
  checkEveryMs?: number;
}

export const DEFAULT_IDLE: IdleSettings = {
  pauseAfterMs: 30_000,
  hibernateAfterMs: 600_000,
  checkEveryMs: 1_000,
};

export interface PowerContext {
  store: BoxStore;
  sessions: Map<string, BoxSession>;
  log: BoxLogger;
  clock: () => number;
  backend: {
    create(spec: VmSpec): Promise<Vm>;
    hibernation?(id: string): unknown;
  };
  /** The image a box's disk belongs to (it may predate the current one). */
  imageOf: (box: BoxRecord) => Image;
  resourcesOf: (box: BoxRecord) => VmResources;
  bootTimeoutMs: number | undefined;
  /** Sets up a freshly started guest (workspace, env file) and its egress; watches the VM. */
  connect: (box: BoxRecord, vm: Vm, session: BoxSession, fresh: boolean) => Promise<void>;
  setUpEgress: (box: BoxRecord, vm: Vm) => Promise<void>;
  watch: (id: string, vm: Vm) => void;
  fail: (box: BoxRecord, reason: string) => Promise<BoxRecord>;
  /** The box's VM died or broke: a persistent box keeps its disk, any other fails. */
  vmLost: (box: BoxRecord, reason: string) => Promise<BoxRecord>;
  /** A persistent box with a disk: losing its VM (or a wake) does not lose its files. */
  keepsDisk: (box: BoxRecord) => boolean;
  /** Kills whatever process still mentions the box's dir (a VM that did not go with its handle). */
  killStray: (box: BoxRecord) => Promise<void>;
  /** Kills what is left of a box's VM and removes its files. */
  cleanup: (box: BoxRecord) => Promise<void>;
  /** A new session for a hibernated box this daemon has not seen yet (it was hibernated by another). */
  hibernatedSession: (box: BoxRecord) => BoxSession;
  pidPatch: (vm: Vm) => { pid: number | null; pidStartTime: number | null };
  metrics: { observeBoot(seconds: number): void };
}

/**
 * Pause, resume, hibernate, wake and the idle policy. Every transition is written to the store
 * before it is acted on; an action that fails puts the record back (or fails the box).
 */
export function createBoxPower(ctx: PowerContext) {
  const { store, sessions, log, clock } = ctx;

  /**
   * The session of a hibernated box. After a daemon restart it has none (no VM to adopt): it gets
   * one here, before anything waits on it or wakes it.
   */
  function hibernatedSessionOf(box: BoxRecord): BoxSession {
    let session = sessions.get(box.id);
    if (!session) {
      session = ctx.hibernatedSession(box);
      sessions.set(box.id, session);
    }
    return session;
  }

  /** The box's session, made first for a hibernated box that has none (see hibernatedSessionOf). */
  function sessionOf(box: BoxRecord): BoxSession | undefined {
    return box.state === 'hibernated' ? hibernatedSessionOf(box) : sessions.get(box.id);
  }

  /**
   * Runs `fn` after every earlier lifecycle operation on the box; with `waitMs`, after at most that
   * long (a delete must not hang behind an operation that never ends).
   */
  function serialize<T>(id: string, fn: () => Promise<T>, options: { waitMs?: number } = {}): Promise<T> {
    const box = store.get(id);
    const session = box && sessionOf(box);
    if (!session) return fn();
    const before = options.waitMs === undefined ? session.chain : within(session.chain, options.waitMs);
    const run = before.then(fn, fn);
    session.chain = run.catch(() => undefined);
    return run;
  }

  function sessionWithVm(box: BoxRecord): BoxSession & { vm: Vm } {
    const session = sessions.get(box.id);
    if (!session?.vm) {
      throw new AgentboxError(
        'guest_unreachable',
        `box ${box.id} has no live VM; the reaper will clean it up`,
      );
    }
    return session as BoxSession & { vm: Vm };
  }

  function pause(id: string, reason: string): Promise<BoxRecord> {
    return serialize(id, async () => {
      const box = store.get(id)!;
      if (box.state === 'paused') return box;
      if (box.state !== 'running')
        throw new AgentboxError('invalid_state', `box ${id} is ${box.state}, not running`, {
          details: { state: box.state },
        });
      const session = sessionWithVm(box);
      const paused = store.transition(id, 'paused', { from: ['running'], reason });
      try {
        await session.vm.pause();
      } catch (err) {
        store.transition(id, 'running', { from: ['paused'], reason: `pause failed: ${messageOf(err)}` });
        throw err;
      }
      session.pausedAt = clock();
      log.info({ boxId: id, reason }, 'box paused');
      return paused;
    });
  }

  /**
   * paused → running, or hibernated → running (woken from its snapshot, or booted from its disk).
   * Refused while the disk guard holds the box, unless it is the guard releasing it.
   */
  function resume(id: string, reason: string, options: { diskRelease?: boolean } = {}): Promise<BoxRecord> {
    return serialize(id, async () => {
      const box = store.get(id)!;
      if (heldForDisk(sessions.get(id)) && !options.diskRelease) throw diskHeldError(id);
      if (box.state === 'running') return box;
      if (box.state === 'hibernated') return wake(box, reason);
      if (box.state !== 'paused')
        throw new AgentboxError('invalid_state', `box ${id} is ${box.state}, not paused or hibernated`, {
          details: { state: box.state },
        });
      const session = sessionWithVm(box);
      const running = store.transition(id, 'running', { from: ['paused'], reason });
      try {
        await session.vm.resume();
        if (session.egressPending) await ctx.setUpEgress(running, session.vm);
        session.egressPending = false;
      } catch (err) {
        await ctx.vmLost(running, `could not resume: ${messageOf(err)}`);
        throw err;
      }
      session.pausedAt = undefined;
      session.lastActive = clock();
      log.info({ boxId: id, reason }, 'box resumed');
      return running;
    });
  }

  function hibernate(id: string, reason: string, options: { idle?: boolean } = {}): Promise<BoxRecord> {
    return serialize(id, async () => {
      const box = store.get(id)!;
      if (box.state === 'hibernated') return box;
      if (box.state !== 'running' && box.state !== 'paused')
        throw new AgentboxError('invalid_state', `box ${id} is ${box.state}, not running or paused`, {
          details: { state: box.state },
        });
      const session = sessionWithVm(box);
      // A snapshot resumes the guest first and is written to the disk that is short.
      if (heldForDisk(session)) throw diskHeldError(id);
      const busy = session.leases + session.vm.guest.activeCalls;
      if (busy > 0 && !options.idle)
        throw new AgentboxError('invalid_state', `box ${id} is in use (${busy} calls or streams open)`);
      if (busy > 0) return box;
      const from = box.state;
      const hibernated = store.transition(id, 'hibernated', { from: [from], reason });
      const started = clock();
      try {
        const saved = await session.vm.hibernate();
        log.info(
          { boxId: id, reason, stateBytes: saved.stateBytes, ms: Math.round(saved.ms) },
          'box hibernated',
        );
      } catch (err) {
        // The VM gave itself back running (or is gone: the reaper fails the box).
        store.transition(id, 'running', {
          from: ['hibernated'],
          reason: `hibernate failed: ${messageOf(err)}`,
        });
        session.pausedAt = undefined;
        session.lastActive = clock();
        throw err;
      }
      const ended: BoxSession = session;
      ended.vm = undefined;
      ended.pausedAt = undefined;
      log.info({ boxId: id, ms: clock() - started }, 'box VM process ended');
      return store.update(id, { pid: null, pidStartTime: null }) ?? hibernated;
    });
  }

  /** hibernated → running: its own snapshot when it has one, else a cold boot of its disk. */
  async function wake(box: BoxRecord, reason: string): Promise<BoxRecord> {
    const session = hibernatedSessionOf(box);
    endDiskHold(session); // a hold was on the VM that is gone
    const spec = { id: box.id, image: ctx.imageOf(box), resources: ctx.resourcesOf(box) };
    const started = clock();
    let vm: Vm | undefined;
    let mode: BoxStartMode = 'wake';
    let bootMs: number;
    let running: BoxRecord;
    if (ctx.backend.hibernation?.(box.id)) {
      try {
        vm = await ctx.backend.create({ ...spec, restoreFrom: { kind: 'hibernation' } });
        session.vm = vm;
        await vm.start();
        // A woken guest kept its files and env.
        await ctx.connect(box, vm, session, false);
      } catch (err) {
        log.warn({ boxId: box.id, err: messageOf(err) }, 'hibernation snapshot unusable; booting the disk');
        await vm?.kill().catch(() => undefined);
        vm = undefined;
      }
    }
    try {
      if (!vm) {
        const now = store.get(box.id)?.state;
        if (now === 'stopped' || now === 'deleted') throw new Error('deleted while it was being woken');
        mode = 'disk';
        vm = await ctx.backend.create({
          ...spec,
          restoreFrom: { kind: 'disk' },
          ...(ctx.bootTimeoutMs ? { bootTimeoutMs: ctx.bootTimeoutMs } : {}),
        });
        session.vm = vm;
        await vm.start();
        // A disk boot lost /run (the env file) and the agent's state.
        await ctx.connect(box, vm, session, true);
      }
      bootMs = clock() - started;
      running = store.transition(box.id, 'running', {
        from: ['hibernated'],
        patch: { ...ctx.pidPatch(vm), bootMs, startMode: mode },
        reason,
      });
    } catch (err) {
      const now = store.get(box.id)?.state;
      if (now === 'stopped' || now === 'deleted') {
        // Deleted meanwhile: the delete marked it stopped and waits for this wake (only so long), so
        // the VM started here, and whatever it set up, is ours to end.
        await vm?.destroy().catch(() => undefined);
        await ctx.cleanup(box);
        throw new AgentboxError('invalid_state', `box ${box.id} was deleted while it was being woken`, {
          details: { state: now },
        });
      }
      const failures = {
        count: (session.wakeFailures?.count ?? 0) + 1,
        since: session.wakeFailures?.since ?? clock(),
      };
      const givingUp = failures.count >= MAX_WAKE_FAILURES && clock() - failures.since >= WAKE_GIVE_UP_MS;
      if (ctx.keepsDisk(box) && !givingUp) {
        session.wakeFailures = failures;
        session.vm = undefined;
        await vm?.kill().catch(() => undefined);
        await ctx.killStray(box).catch(() => undefined);
        log.warn(
          { boxId: box.id, failures: failures.count, err: messageOf(err) },
          'could not wake the box; its disk is kept',
        );
        throw new AgentboxError(
          'boot_failed',
          `box ${box.id} could not be woken (failure ${failures.count} in a row): ${messageOf(err)}; its disk is kept and the next request tries again`,
          { cause: err },
        );
      }
      await ctx.fail(box, `could not wake: ${messageOf(err)}`);
      throw new AgentboxError('boot_failed', `box ${box.id} could not be woken: ${messageOf(err)}`, {
        cause: err,
      });
    }
    session.wakeFailures = undefined;
    ctx.metrics.observeBoot(bootMs / 1000);
    session.lastActive = clock();
    session.egressPending = false;
    ctx.watch(box.id, vm);
    log.info({ boxId: box.id, mode, bootMs }, 'box woken');
    return running;
  }

  /** The box running, whatever it was (paused, hibernated); for a lease. */
  function awake(id: string): Promise<BoxRecord> {
    const box = store.get(id);
    const session = sessions.get(id);
    if (heldForDisk(session)) return Promise.reject(diskHeldError(id));
    if (box?.state === 'running' && !session?.egressPending) return Promise.resolve(box);
    return resume(id, 'used');
  }

  /**
   * The disk guard's hold: the box is paused (its guest writes no more to the host's disk) and
   * requests to it are refused until `releaseDisk`. Held at once, so a request racing the pause
   * cannot resume it.
   */
  async function holdForDisk(id: string, reason: string): Promise<void> {
    const session = sessions.get(id);
    const state = store.get(id)?.state;
    if (!session?.vm || heldForDisk(session) || (state !== 'running' && state !== 'paused')) return;
    session.diskHeldSince = clock();
    log.warn({ boxId: id, reason }, 'box held by the disk guard');
    if (state === 'running') await pause(id, reason);
  }

  async function releaseDisk(id: string, reason: string): Promise<void> {
    const session = sessions.get(id);
    if (session?.diskHeldSince === undefined) return;
    const vm = session.vm;
    if (store.get(id)?.state === 'paused') {
      await resume(id, reason, { diskRelease: true });
    } else if (vm?.state === 'running' && vm.diskUse?.()?.stalled) {
      // QEMU stopped it by itself and the hold's pause never went through: `cont` retries its write.
      await vm.pause();
      await vm.resume();
    }
    endDiskHold(session);
    log.info({ boxId: id, reason }, 'box released by the disk guard');
  }

  function endDiskHold(session: BoxSession): void {
    if (session.diskHeldSince === undefined) return;
    session.diskHeldMs = (session.diskHeldMs ?? 0) + clock() - session.diskHeldSince;
    session.diskHeldSince = undefined;
  }

  /** How long the disk guard has held the box paused in all, the hold going on included. */
  function diskHeldMs(id: string): number {
    const session = sessions.get(id);
    if (!session) return 0;
    const current = session.diskHeldSince === undefined ? 0 : clock() - session.diskHeldSince;
    return (session.diskHeldMs ?? 0) + current;
  }

  /**
   * One pass of the idle policy: pauses running boxes nobody uses (no lease, no call in flight)
   * and hibernates boxes paused for long enough.
   */
  function checkIdle(settings: IdleSettings, canHibernate: boolean): void {
    const now = clock();
    const nowPerf = performance.now();
    for (const [id, session] of sessions) {
      const vm = session.vm;
      if (!vm || session.leases > 0 || heldForDisk(session)) continue;
      if (vm.state === 'running' && settings.pauseAfterMs > 0) {
        const idle =
          vm.guest.activeCalls === 0 &&
          now - session.lastActive >= settings.pauseAfterMs &&
          nowPerf - vm.guest.lastActivityAt >= settings.pauseAfterMs;
        if (idle && store.get(id)?.state === 'running')
          void pause(id, 'idle').catch((err: unknown) =>
            log.warn({ boxId: id, err: messageOf(err) }, 'could not pause an idle box'),
          );
      } else if (
        vm.state === 'paused' &&
        canHibernate &&
        settings.hibernateAfterMs > 0 &&
        session.pausedAt !== undefined &&
        now - session.pausedAt >= settings.hibernateAfterMs &&
        store.get(id)?.state === 'paused'
      ) {
        void hibernate(id, 'idle', { idle: true }).catch((err: unknown) =>
          log.warn({ boxId: id, err: messageOf(err) }, 'could not hibernate an idle box'),
        );
      }
    }
  }

  return {
    pause,
    resume,
    hibernate,
    awake,
    holdForDisk,
    releaseDisk,
    diskHeldMs,
    checkIdle,
    serialize,
    sessionOf,
  };
}

export type BoxPower = ReturnType<typeof createBoxPower>;
