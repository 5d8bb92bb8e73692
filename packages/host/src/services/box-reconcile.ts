import fs from 'node:fs';
import type { Vm } from '@agentbox/vm';
import type { BoxRecord, BoxStore } from '../store/box-store.js';
import { isStoreError } from '../store/db.js';
import type { BoxSession } from './box-power.js';
import type { BoxLogger, BoxServiceDeps } from './box-service.js';
import { messageOf } from './error-message.js';

export interface ReconcileContext {
  store: BoxStore;
  sessions: Map<string, BoxSession>;
  /** Boxes being re-adopted, by id, while it lasts: a request for one waits for it (see box-leases). */
  reconciling: Map<string, Promise<void>>;
  deps: Pick<BoxServiceDeps, 'backend' | 'probe' | 'templates'>;
  log: BoxLogger;
  clock: () => number;
  destroy: (box: BoxRecord, reason: string) => Promise<BoxRecord>;
  fail: (box: BoxRecord, reason: string) => Promise<BoxRecord>;
  /** A VM found dead or unusable: a user's persistent box keeps its disk (hibernated), others fail. */
  vmLost: (box: BoxRecord, reason: string) => Promise<BoxRecord>;
  watch: (id: string, vm: Vm) => void;
  setUpEgress: (box: BoxRecord, vm: Vm) => Promise<void>;
  newSession: (vm: Vm | undefined, env: Record<string, string>) => BoxSession;
  /** The box's env vars: the host's copy, else (an older box) the guest's. */
  guestEnv: (box: BoxRecord, vm: Vm) => Promise<Record<string, string>>;
  hostEnv: (box: BoxRecord) => Record<string, string> | undefined;
}

export interface ReconcileResult {
  adopted: string[];
  failed: string[];
  deleted: string[];
  hibernated: string[];
}

/** The daemon-start pass that matches the store's live boxes with the VM processes still running. */
export function createReconciler(ctx: ReconcileContext) {
  const {
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
  } = ctx;
  const readHostEnv = ctx.hostEnv;
  const readGuestEnv = ctx.guestEnv;

  /**
   * On daemon start: re-adopts every box the store says is live whose VM process (same pid and start
   * time) still runs and answers (a paused one stays paused); hibernated boxes wait for their next
   * use. A user's persistent box whose VM died (a host reboot) or does not answer keeps its disk and
   * boots from it on its next use; other such boxes are marked failed and their files removed.
   * The daemon serves while this runs: a box is in `reconciling` until its own pass is done, so a
   * guest that answers slowly (or not at all) holds back the requests for its box only.
   */
  return async function reconcile(): Promise<ReconcileResult> {
    const result = {
      adopted: [] as string[],
      failed: [] as string[],
      deleted: [] as string[],
      hibernated: [] as string[],
    };
    const reconcileBox = async (box: BoxRecord) => {
      if (sessions.has(box.id)) return;
      if (box.state === 'stopped') {
        await destroy(box, 'finishing a delete interrupted by a daemon restart');
        result.deleted.push(box.id);
        return;
      }
      if (box.state === 'hibernated') {
        // A hibernate or wake the last daemon did not finish may have left a VM process.
        await deps.probe.killMentioning(box.dir);
        result.hibernated.push(box.id);
        return;
      }
      if (box.state === 'creating') {
        await fail(box, 'the daemon stopped while it booted');
        result.failed.push(box.id);
        return;
      }
      const lost = async (reason: string) => {
        const after = await vmLost(box, reason);
        (after.state === 'hibernated' ? result.hibernated : result.failed).push(box.id);
      };
      const alive =
        box.pid !== null && box.pidStartTime !== null && deps.probe.startTime(box.pid) === box.pidStartTime;
      if (!alive || !deps.backend.adopt) {
        await lost('the VM died');
        return;
      }
      try {
        const vm = await deps.backend.adopt({ id: box.id, pid: box.pid!, startTime: box.pidStartTime! });
        const paused = vm.state === 'paused';
        const session = newSession(vm, paused ? (readHostEnv(box) ?? {}) : await readGuestEnv(box, vm));
        sessions.set(box.id, session);
        if (paused) {
          // Its guest cannot answer until resumed: egress is set up then.
          session.egressPending = true;
          session.pausedAt = clock();
          if (box.state !== 'paused')
            store.transition(box.id, 'paused', { from: [box.state], reason: 'found paused' });
        } else {
          if (box.state !== 'running')
            store.transition(box.id, 'running', { from: [box.state], reason: 'found running' });
          // A new daemon has a new gateway: the box gets a fresh session (and CA) under its policy.
          await setUpEgress(box, vm);
        }
        watch(box.id, vm);
        result.adopted.push(box.id);
        log.info({ boxId: box.id, pid: box.pid, paused }, 'box re-adopted');
      } catch (err) {
        // The store failing to record it (a full disk) says nothing of the VM: the box is kept,
        // and the daemon's start fails with the store's error.
        if (isStoreError(err)) throw err;
        await lost(`could not re-adopt the VM: ${messageOf(err)}`);
      }
    };
    await Promise.all(
      store.live().map((box) => {
        const pass = reconcileBox(box).finally(() => reconciling.delete(box.id));
        // Waiters learn nothing from its failure; the box's state says what became of it.
        reconciling.set(
          box.id,
          pass.catch(() => undefined),
        );
        return pass;
      }),
    );
    // A box's files go when it fails; a daemon that died in between left them (and maybe its VM),
    // and nothing else looks at a failed box again.
    const boxes = store.list({ includeDeleted: false });
    for (const box of boxes)
      if (box.state === 'failed' && fs.existsSync(box.dir)) await fail(box, box.failureReason ?? 'failed');
    const known = new Set(boxes.map((b) => b.id));
    const swept = (await deps.templates?.sweepOrphans(known)) ?? [];
    if (swept.length > 0) log.info({ swept }, 'removed warm-pool clones of an earlier daemon');
    return result;
  };
}
