import { AgentboxError } from '@agentbox/protocol';
import type { GuestConnection } from '@agentbox/vm';
import type { BoxRecord } from '../store/box-store.js';
import type { Actor } from '../store/key-store.js';
import type { BoxPower, BoxSession } from './box-power.js';
import type { BoxLease, BoxLogger, GuestLayout } from './box-service.js';

export interface LeaseContext {
  get: (options: { actor: Actor; id: string }) => BoxRecord;
  sessions: Map<string, BoxSession>;
  /** Boxes being created, by id: a lease on one waits for it. */
  creating: Map<string, Promise<BoxRecord>>;
  power: Pick<BoxPower, 'awake' | 'sessionOf'>;
  layoutOf: (boxId: string) => GuestLayout;
  clock: () => number;
  log: BoxLogger;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * How other services reach a box's guest: `acquire` (async: waits for a box being created, wakes a
 * paused or hibernated one, and holds it awake until released) and the older synchronous `guestOf`.
 */
export function createBoxLeases(ctx: LeaseContext) {
  const { get, sessions, creating, power, layoutOf, clock, log } = ctx;

  /**
   * The guest channel of a box the actor may use, at once. A paused box is resumed in the
   * background (calls made meanwhile wait in the channel); a hibernated one must be woken first:
   * use `acquire`, which also keeps the box from idling while it is held.
   */
  function guestOf(options: { actor: Actor; id: string }): {
    guest: GuestConnection;
    env: Record<string, string>;
    workspace: string;
  } {
    const box = get(options);
    const session = sessions.get(box.id);
    if (box.state === 'hibernated' || box.state === 'paused') {
      void power
        .awake(box.id)
        .catch((err: unknown) => log.warn({ boxId: box.id, err: messageOf(err) }, 'could not wake a box'));
    }
    if (box.state !== 'running' && box.state !== 'paused') {
      throw new AgentboxError(
        'invalid_state',
        box.state === 'hibernated'
          ? `box ${box.id} is hibernated and is being woken; retry in a moment`
          : `box ${box.id} is ${box.state}, not running`,
        { details: { state: box.state } },
      );
    }
    if (!session?.vm || (session.vm.state !== 'running' && session.vm.state !== 'paused')) {
      throw new AgentboxError(
        'guest_unreachable',
        `box ${box.id} has no live VM; the reaper will clean it up`,
      );
    }
    session.lastActive = clock();
    return { guest: session.vm.guest, env: session.env, workspace: layoutOf(box.id).workspace };
  }

  /**
   * Holds a box for a caller: waits for a box being created, wakes a paused or hibernated one, and
   * keeps it from being paused for idleness until `release()`.
   */
  async function acquire(options: { actor: Actor; id: string }): Promise<BoxLease> {
    let box = get(options);
    if (box.state === 'creating') {
      const pending = creating.get(box.id);
      if (!pending) throw new AgentboxError('invalid_state', `box ${box.id} is still being created`);
      box = await pending;
    }
    if (box.state !== 'running' && box.state !== 'paused' && box.state !== 'hibernated') {
      throw new AgentboxError('invalid_state', `box ${box.id} is ${box.state}, not running`, {
        details: { state: box.state },
      });
    }
    const session = power.sessionOf(box);
    if (!session) {
      throw new AgentboxError(
        'guest_unreachable',
        `box ${box.id} has no live VM; the reaper will clean it up`,
      );
    }
    const held = session;
    held.leases++;
    try {
      await power.awake(box.id);
    } catch (err) {
      held.leases--;
      throw err;
    }
    const vm = held.vm;
    if (!vm) {
      held.leases--;
      throw new AgentboxError('guest_unreachable', `box ${box.id} has no live VM`);
    }
    let released = false;
    return {
      guest: vm.guest,
      env: held.env,
      workspace: layoutOf(box.id).workspace,
      release: () => {
        if (released) return;
        released = true;
        held.leases--;
        held.lastActive = clock();
      },
    };
  }

  /** Runs `fn` with the box held (see `acquire`). */
  async function withBox<T>(
    options: { actor: Actor; id: string },
    fn: (lease: BoxLease) => Promise<T>,
  ): Promise<T> {
    const lease = await acquire(options);
    try {
      return await fn(lease);
    } finally {
      lease.release();
    }
  }

  return { guestOf, acquire, withBox };
}
