import { afterEach, describe, expect, it, vi } from 'vitest';
import { EXEC_CANCEL_GRACE_MS } from '../../src/guest-connection.js';
import { jsonFrame as json, scriptedGuest as silentGuest } from '../helpers/scripted-guest.js';

const tick = () => new Promise((r) => setImmediate(r));

afterEach(() => vi.useRealTimers());

describe('a cancelled exec', () => {
  it('that the guest never answers is failed by the host after the grace, freeing the call', async () => {
    const guest = silentGuest();
    await guest.conn.waitForHello();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const abort = new AbortController();
    const running = guest.conn.exec({ argv: ['sleep', '1000'] }, { signal: abort.signal });
    const outcome = running.then(
      () => 'resolved',
      (err: unknown) => err,
    );
    await tick();
    expect(guest.conn.activeCalls).toBe(1);
    abort.abort();
    await tick();
    expect(guest.jsonFrames().some((f) => f.type === 'cancel')).toBe(true);
    vi.advanceTimersByTime(EXEC_CANCEL_GRACE_MS - 1);
    await tick();
    expect(guest.conn.activeCalls).toBe(1); // still the guest's to answer
    vi.advanceTimersByTime(1);
    expect(await outcome).toMatchObject({ code: 'guest_unreachable' });
    expect(guest.conn.activeCalls).toBe(0);
  });

  it('that the guest answers in time ends with the guest exit, and no timer is left', async () => {
    const guest = silentGuest();
    await guest.conn.waitForHello();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const abort = new AbortController();
    const running = guest.conn.exec({ argv: ['sleep', '1000'] }, { signal: abort.signal });
    await tick();
    const channel = guest.jsonFrames().find((f) => f.op === 'exec')!.channel;
    abort.abort();
    await tick();
    guest.socket.push(
      json(channel, { type: 'exit', exitCode: null, signal: 'SIGKILL', timedOut: false, durationMs: 5 }),
    );
    await expect(running).resolves.toMatchObject({ signal: 'SIGKILL' });
    expect(vi.getTimerCount()).toBe(0);
  });
});
