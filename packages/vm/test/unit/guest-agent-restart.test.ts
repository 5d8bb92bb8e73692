import { describe, expect, it } from 'vitest';
import { qmpEventTime } from '../../src/qemu/qmp.js';
import { helloFrame, jsonFrame, scriptedGuest } from '../helpers/scripted-guest.js';

const tick = () => new Promise((r) => setImmediate(r));

/**
 * QEMU reports the guest closing its port on the QMP socket; the agent's hello comes on the guest
 * channel. The two are read in either order.
 */
describe('the guest agent restarting', () => {
  it('fails the calls in flight when its port closes after its hello was read', async () => {
    const guest = scriptedGuest();
    await guest.conn.waitForHello();
    const ping = guest.conn.ping();
    await tick();
    guest.conn.agentRestarted(Date.now() + 1);
    await expect(ping).rejects.toMatchObject({ code: 'guest_agent_restarted' });
    expect(guest.conn.info).toBeUndefined();
  });

  it('ignores a port close stamped before the current agent’s hello was read: its predecessor’s', async () => {
    const guest = scriptedGuest();
    await guest.conn.waitForHello();
    const diedAt = Date.now() - 1;
    // The next agent's hello is read first; the old one's close after it.
    guest.send(helloFrame(2));
    await tick();
    expect(guest.conn.info?.agentPid).toBe(2);
    const ping = guest.conn.ping();
    await tick();
    guest.conn.agentRestarted(diedAt);
    expect(guest.conn.info?.agentPid).toBe(2);
    guest.send(jsonFrame(guest.request('ping')!.channel, { type: 'result', value: { now: 5 } }));
    await expect(ping).resolves.toEqual({ now: 5 });
    // Without a time (a driver that cannot tell), a close always counts.
    const next = guest.conn.ping();
    await tick();
    guest.conn.agentRestarted();
    await expect(next).rejects.toMatchObject({ code: 'guest_agent_restarted' });
  });

  it('reads QMP’s event timestamp as wall-clock ms', () => {
    expect(qmpEventTime({ seconds: 1_796_000_000, microseconds: 250_000 })).toBe(1_796_000_000_250);
    expect(qmpEventTime(undefined)).toBeUndefined();
    expect(qmpEventTime({ seconds: '1' })).toBeUndefined();
    // QEMU's "could not read the clock".
    expect(qmpEventTime({ seconds: -1, microseconds: -1 })).toBeUndefined();
  });
});
