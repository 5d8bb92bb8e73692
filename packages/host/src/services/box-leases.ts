import { AgentboxError } from '@agentbox/protocol';
import type { BoxRecord } from '../store/box-store.js';
import type { Actor } from '../store/key-store.js';
import type { BoxPower } from './box-power.js';
import type { BoxLease, GuestLayout } from './box-service.js';

export interface LeaseContext {
  /** The box the actor may use, once a starting daemon's re-adoption of it is done. */
  adopted: (options: { actor: Actor; id: string }) => Promise<BoxRecord>;
  /** Boxes being created, by id: a lease on one waits for it. */
  creating: Map<string, Promise<BoxRecord>>;
  power: Pick<BoxPower, 'awake' | 'sessionOf'>;
  layoutOf: (boxId: string) => GuestLayout;
  clock: () => number;
}

/**
 * How other services reach a box's guest: `acquire` waits for a box being created or re-adopted,
 * wakes a paused or hibernated one, and holds it awake until released.
 */
export function createBoxLeases(ctx: LeaseContext) {
  const { adopted, creating, power, layoutOf, clock } = ctx;

  /**
   * Holds a box for a caller: waits for a box being created or re-adopted, wakes a paused or
   * hibernated one, and keeps it from being paused for idleness until `release()`.
   */
  async function acquire(options: { actor: Actor; id: string }): Promise<BoxLease> {
    let box = await adopted(options);
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

  return { acquire, withBox };
}
