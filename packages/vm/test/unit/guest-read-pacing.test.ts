import { describe, expect, it, vi } from 'vitest';
import { AgentboxError, GUEST_CHANNEL_BIT } from '@agentbox/protocol';
import { encodeFrame, FrameKind } from '@agentbox/protocol/wire';
import {
  fullReadBudget,
  GUEST_JSON_BYTES_PER_FRAME,
  GUEST_OPEN_FRAME_COST,
  GUEST_SKIPPED_BYTES_PER_FRAME,
  guestReadRate,
  HostReadShare,
  PRESSING_WINDOW_MS,
  spendReadBudget,
} from '../../src/read-budget.js';
import { helloFrame, jsonFrame, scriptedGuest } from '../helpers/scripted-guest.js';

const MIB = 1024 * 1024;
const tick = () => new Promise((r) => setImmediate(r));

describe('the read budget (a token bucket of frames)', () => {
  it('lets a second’s worth through at once, then pauses for what was overspent', () => {
    let budget = fullReadBudget(0, 1000);
    let spent = spendReadBudget(budget, 1000, 0, 1000);
    expect(spent.pauseMs).toBe(0);
    budget = spent.budget;
    spent = spendReadBudget(budget, 500, 0, 1000);
    expect(spent.pauseMs).toBe(500);
    // After the pause the bucket is back at zero: half a second more refills 500.
    spent = spendReadBudget(spent.budget, 0, 500, 1000);
    expect(spent.budget.tokens).toBe(0);
    expect(spendReadBudget(spent.budget, 500, 1000, 1000).pauseMs).toBe(0);
  });

  it('refills to one second’s worth at most, whatever the idle time', () => {
    const idle = spendReadBudget(fullReadBudget(0, 1000), 0, 3_600_000, 1000);
    expect(idle.budget.tokens).toBe(1000);
    expect(spendReadBudget(idle.budget, 1001, 3_600_000, 1000).pauseMs).toBe(1);
  });
});

describe('the host’s read budget, shared by its guests', () => {
  it('gives a guest its own rate, or an equal share among the guests pressing on theirs', () => {
    expect(guestReadRate(50_000, 100_000, 0)).toBe(50_000);
    expect(guestReadRate(50_000, 100_000, 1)).toBe(50_000);
    expect(guestReadRate(50_000, 100_000, 3)).toBe(25_000);
    expect(guestReadRate(1000, 100_000, 7)).toBe(1000);
  });

  it('counts a guest as pressing through its pause and a window after, and not in its own share', () => {
    const share = new HostReadShare(1000);
    const [a, b] = [{}, {}];
    share.pressed(a, 0, 500);
    expect(share.rateFor(a, 1000, 0)).toBe(1000);
    expect(share.rateFor(b, 1000, 0)).toBe(500);
    expect(share.rateFor(b, 1000, 500 + PRESSING_WINDOW_MS - 1)).toBe(500);
    expect(share.rateFor(b, 1000, 500 + PRESSING_WINDOW_MS)).toBe(1000);
    share.pressed(a, 0, 500);
    share.forget(a);
    expect(share.rateFor(b, 1000, 0)).toBe(1000);
  });

  it('reads a second guest at its share while another floods, and at its own rate once they are gone', async () => {
    const share = new HostReadShare(3000);
    const junk = encodeFrame(FrameKind.Data, 7);
    const flooder = scriptedGuest({ connection: { framesPerSecond: 3000, readShare: share } });
    await flooder.conn.waitForHello();
    flooder.send(...Array<Buffer>(4500).fill(junk));
    await tick();
    expect(flooder.conn.limits.readPauses).toBe(1);

    // 1.5 times its share (half the host's), three quarters of its own budget: paused for ~0.5 s.
    const second = scriptedGuest({ connection: { framesPerSecond: 3000, readShare: share } });
    await second.conn.waitForHello();
    second.send(...Array<Buffer>(2250).fill(junk));
    await tick();
    expect(second.conn.limits.readPauses).toBe(1);
    expect(second.notices[0]!.message).toContain('3000 shared by all guests');

    // Their VMs are gone (both pressed): the same burst from a third guest is read at once.
    for (const gone of [flooder, second]) gone.conn.close(new AgentboxError('vm_exited', 'gone'));
    const third = scriptedGuest({ connection: { framesPerSecond: 3000, readShare: share } });
    await third.conn.waitForHello();
    third.send(...Array<Buffer>(2250).fill(junk));
    await tick();
    expect(third.conn.limits.readPauses).toBe(0);
  });
});

describe('a guest that floods its channel with frames', () => {
  it('is read at the budget’s rate: the host stops reading it, then serves it again', async () => {
    const guest = scriptedGuest({ connection: { vmId: 'box-1', framesPerSecond: 20_000 } });
    await guest.conn.waitForHello();
    // Empty frames for a channel no one has: each is dropped, yet each had to be decoded.
    const junk = encodeFrame(FrameKind.Data, 7);
    guest.send(...Array<Buffer>(30_000).fill(junk));
    await tick();
    expect(guest.conn.limits.readPauses).toBe(1);
    expect(guest.notices).toMatchObject([{ limit: 'frame_rate', vmId: 'box-1' }]);

    // Paused: a reply sent now waits until the budget is back (~0.5 s), then gets through.
    const ping = guest.conn.ping();
    await tick();
    guest.send(jsonFrame(guest.request('ping')!.channel, { type: 'result', value: { now: 1 } }));
    await expect(ping).resolves.toEqual({ now: 1 });
    // Noticed once, however long it goes on.
    guest.send(...Array<Buffer>(30_000).fill(junk));
    await tick();
    expect(guest.conn.limits.readPauses).toBe(2);
    expect(guest.notices).toHaveLength(1);
  });

  it('counts junk the host skips while seeking its next hello, one frame per GUEST_SKIPPED_BYTES_PER_FRAME', async () => {
    const guest = scriptedGuest({ connection: { framesPerSecond: 1000 } });
    await guest.conn.waitForHello();
    // A byte that is no frame: the host seeks the guest's next hello from there.
    guest.send(Buffer.from([0]));
    await tick();
    const junk = Buffer.concat(
      Array.from({ length: 1000 }, () => encodeFrame(FrameKind.Data, 7, Buffer.from('x'))),
    );
    const budgetBytes = 1000 * GUEST_SKIPPED_BYTES_PER_FRAME;
    for (let sent = 0; sent < budgetBytes - junk.length; sent += junk.length) guest.send(junk);
    await tick();
    expect(guest.conn.limits.readPauses).toBe(0);
    // Far past it (~0.4 s of refill), so no slow tick between the two sends can hide it.
    guest.send(...Array<Buffer>(10).fill(junk));
    await tick();
    expect(guest.conn.limits.readPauses).toBe(1);
    // Its next hello is read once the pause is over, and the guest is served again.
    guest.send(helloFrame(2));
    await vi.waitFor(() => expect(guest.conn.info?.agentPid).toBe(2), { timeout: 5_000 });
    const ping = guest.conn.ping();
    await vi.waitFor(() => expect(guest.request('ping')).toBeDefined(), { timeout: 5_000 });
    guest.send(jsonFrame(guest.request('ping')!.channel, { type: 'result', value: { now: 2 } }));
    await expect(ping).resolves.toEqual({ now: 2 });
  });

  it('counts a JSON frame one frame more per GUEST_JSON_BYTES_PER_FRAME bytes: each is parsed', async () => {
    const guest = scriptedGuest({ connection: { framesPerSecond: 1000 } });
    await guest.conn.waitForHello();
    // Valid JSON for a channel no one has: parsed all the same, then dropped.
    const big = jsonFrame(9, Array<number>(GUEST_JSON_BYTES_PER_FRAME * 200).fill(0));
    guest.send(big);
    await tick();
    expect(guest.conn.limits.readPauses).toBe(0);
    guest.send(big, big, big, big);
    await tick();
    expect(guest.conn.limits.readPauses).toBe(1);
  });

  it('counts each channel it opens as GUEST_OPEN_FRAME_COST frames', async () => {
    const rate = 100 * GUEST_OPEN_FRAME_COST;
    const guest = scriptedGuest({ connection: { framesPerSecond: rate } });
    await guest.conn.waitForHello();
    guest.conn.setEgressHandler((stream) => stream.destroy());
    const open = (i: number) => jsonFrame((GUEST_CHANNEL_BIT | i) >>> 0, { type: 'egress', clientPort: i });
    guest.send(...Array.from({ length: 99 }, (_, i) => open(i + 1)));
    await tick();
    expect(guest.conn.limits.readPauses).toBe(0);
    // Half a second's worth more: past the budget however long the tick between took.
    guest.send(...Array.from({ length: 50 }, (_, i) => open(100 + i)));
    await tick();
    expect(guest.conn.limits.readPauses).toBe(1);
  });

  it('bulk data in full frames stays far under the default budget', async () => {
    const guest = scriptedGuest();
    await guest.conn.waitForHello();
    let got = 0;
    const download = guest.conn.readFile('/big', (c) => void (got += c.length));
    await tick();
    const channel = guest.request('file.read')!.channel;
    guest.send(jsonFrame(channel, { type: 'file', size: 256 * MIB }));
    const frame = encodeFrame(FrameKind.Data, channel, Buffer.alloc(128 * 1024, 0x61));
    const credited = () =>
      guest.received
        .filter((f) => f.kind === FrameKind.Credit && f.channel === channel)
        .reduce((sum, f) => sum + f.payload.readUInt32BE(0), 0);
    // 256 MiB as fast as the host takes it (far faster than a guest sends it under TCG), 3 MiB at a
    // time within the flow-control window.
    for (let sent = 0; sent < 256 * MIB; sent += 3 * MIB) {
      while (sent - credited() >= MIB) await tick();
      guest.send(...Array<Buffer>(24).fill(frame));
    }
    guest.send(encodeFrame(FrameKind.End, channel), jsonFrame(channel, { type: 'result', value: {} }));
    await download;
    expect(got).toBeGreaterThanOrEqual(256 * MIB);
    expect(guest.conn.limits.readPauses).toBe(0);
  });
});
