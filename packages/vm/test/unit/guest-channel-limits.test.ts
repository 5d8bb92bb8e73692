import type { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { GUEST_CHANNEL_BIT } from '@agentbox/protocol';
import { encodeFrame, FrameKind } from '@agentbox/protocol/wire';
import { MAX_QUEUED_CONTROL_BYTES } from '../../src/guest-connection.js';
import {
  MAX_GUEST_CHANNELS,
  MAX_GUEST_INBOUND_BYTES,
  MAX_PENDING_REFUSALS,
} from '../../src/guest-channels.js';

import {
  jsonFrame as json,
  parseJsonFrame as parse,
  scriptedGuest as newScriptedGuest,
  unpaced,
} from '../helpers/scripted-guest.js';

const tick = () => new Promise((r) => setImmediate(r));
const guestChannel = (i: number) => (GUEST_CHANNEL_BIT | i) >>> 0;
// These guests flood on purpose, faster than the host reads a guest (guest-read-pacing.test.ts):
// here the bounds on what the host holds are tested, with reading unpaced.
const scriptedGuest = (options: { reads: boolean }) =>
  newScriptedGuest({ ...options, connection: { vmId: 'box-1', ...unpaced() } });

const exit = { type: 'exit', exitCode: 0, signal: null, timedOut: false, durationMs: 1 };

describe('channels a guest opens', () => {
  it('are capped: past the cap opens are refused, the held ones and a call in flight keep working', async () => {
    const guest = scriptedGuest({ reads: true });
    await guest.conn.waitForHello();
    const streams: Duplex[] = [];
    guest.conn.setEgressHandler((stream) => {
      streams.push(stream);
      stream.on('data', (c: Buffer) => stream.write(Buffer.concat([Buffer.from('echo:'), c])));
    });
    const running = guest.conn.exec({ argv: ['sleep', '1'] });
    await tick();
    const execChannel = guest.request('exec')!.channel;

    // 10,000 opens, about as many per write as fit in one socket read.
    for (let first = 1; first <= 10_000; first += 1000) {
      const opens: Buffer[] = [];
      for (let i = first; i < first + 1000; i++)
        opens.push(json(guestChannel(i), { type: 'egress', clientPort: i }));
      guest.send(...opens);
      await tick();
    }

    expect(streams).toHaveLength(MAX_GUEST_CHANNELS);
    expect(guest.conn.limits).toMatchObject({
      guestChannels: MAX_GUEST_CHANNELS,
      refusedOpens: 10_000 - MAX_GUEST_CHANNELS,
    });
    const resets = guest.received.filter((f) => f.kind === FrameKind.Json && parse(f).type === 'reset');
    expect(resets).toHaveLength(10_000 - MAX_GUEST_CHANNELS);
    expect(parse(resets[0]!)).toEqual({ type: 'reset', reason: 'too many channels' });
    expect(resets[0]!.channel).toBe(guestChannel(MAX_GUEST_CHANNELS + 1));
    // Reported once, not once per refused open.
    expect(guest.notices).toHaveLength(1);
    expect(guest.notices[0]).toMatchObject({ limit: 'guest_channels', vmId: 'box-1' });

    // A held channel still carries bytes both ways.
    guest.send(encodeFrame(FrameKind.Data, guestChannel(7), Buffer.from('ping')));
    await tick();
    const back = guest.received.find((f) => f.kind === FrameKind.Data && f.channel === guestChannel(7));
    expect(back?.payload.toString()).toBe('echo:ping');

    // The exec started before the flood completes.
    guest.send(json(execChannel, exit));
    await expect(running).resolves.toMatchObject({ exitCode: 0 });

    // Channels the guest lets go of make room again.
    guest.send(...[1, 2, 3].map((i) => json(guestChannel(i), { type: 'reset' })));
    await tick();
    expect(guest.conn.limits.guestChannels).toBe(MAX_GUEST_CHANNELS - 3);
    guest.send(json(guestChannel(20_000), { type: 'egress', clientPort: 1 }));
    await tick();
    expect(streams).toHaveLength(MAX_GUEST_CHANNELS + 1);
  });

  it('a guest that never reads cannot make the host queue without bound', async () => {
    const guest = scriptedGuest({ reads: false });
    await guest.conn.waitForHello();
    const answer = Buffer.alloc(1024, 0x61);
    let accepted = 0;
    // Like a gateway refusing each request: a response, then the connection is dropped.
    guest.conn.setEgressHandler((stream) => {
      accepted++;
      stream.write(answer);
      stream.destroy();
    });
    for (let round = 0; round < 10; round++) {
      const frames: Buffer[] = [];
      for (let i = 0; i < 1000; i++) {
        const n = round * 2000 + i * 2 + 1;
        frames.push(json(guestChannel(n), { type: 'egress', clientPort: 1 }));
        frames.push(json(guestChannel(n + 1), { type: 'not-a-kind-we-serve' }));
      }
      guest.send(...frames);
      await tick();
    }
    // 10,000 egress opens and 10,000 bogus ones, and nothing written reached the guest.
    expect(accepted).toBeLessThanOrEqual(MAX_GUEST_CHANNELS);
    expect(guest.conn.limits.guestChannels).toBeLessThanOrEqual(MAX_GUEST_CHANNELS);
    // At most: each held channel's answer and reset, the refusals, and one socket buffer's worth.
    const bound = MAX_GUEST_CHANNELS * 1200 + MAX_PENDING_REFUSALS * 100 + 512 * 1024;
    expect(guest.hostHeldBytes()).toBeLessThan(bound);

    // Once it reads again, what was queued drains, its channels are released, and it is served.
    guest.resumeReading();
    for (let i = 0; i < 50 && guest.conn.limits.guestChannels > 0; i++) await tick();
    expect(guest.conn.limits.guestChannels).toBe(0);
    const before = accepted;
    guest.send(json(guestChannel(1_000_000), { type: 'egress', clientPort: 1 }));
    await tick();
    expect(accepted).toBe(before + 1);
  });

  it('a guest that resets a channel the host closed frees what waited for it there', async () => {
    const guest = scriptedGuest({ reads: false });
    await guest.conn.waitForHello();
    guest.conn.setEgressHandler((stream) => {
      stream.write(Buffer.alloc(32 * 1024));
      stream.destroy();
    });
    const opens: Buffer[] = [];
    for (let i = 1; i <= 10; i++) opens.push(json(guestChannel(i), { type: 'egress', clientPort: i }));
    guest.send(...opens);
    await tick();
    // Closed on the host, but (past what the socket buffered) their answers wait for the guest.
    expect(guest.conn.limits.guestChannels).toBeGreaterThanOrEqual(5);
    const resets: Buffer[] = [];
    for (let i = 1; i <= 10; i++) resets.push(json(guestChannel(i), { type: 'reset' }));
    guest.send(...resets);
    await tick();
    expect(guest.conn.limits.guestChannels).toBe(0);
    // A reset is not an open: it is not answered, nor counted as refused.
    expect(guest.conn.limits.refusedOpens).toBe(0);
  });

  it('past the bound on queued messages, the channel that overflows fails, not the connection', async () => {
    const guest = scriptedGuest({ reads: false });
    await guest.conn.waitForHello();
    const ping = guest.conn.ping();
    let terminal: { resize(rows: number, cols: number): void } | undefined;
    const shell = guest.conn.exec(
      { argv: ['sh'], pty: { rows: 24, cols: 80 } },
      { onPty: (t) => (terminal = t) },
    );
    // A user resizing a terminal whose guest reads nothing: each resize is one more message.
    for (let i = 0; i < 100_000; i++) terminal!.resize(1 + (i % 999), 80);
    await expect(shell).rejects.toMatchObject({ code: 'guest_unreachable' });
    const mux = (guest.conn as unknown as { mux: { queuedControlBytes: number } }).mux;
    expect(mux.queuedControlBytes).toBeLessThanOrEqual(MAX_QUEUED_CONTROL_BYTES);
    expect(guest.conn.limits.overflowedChannels).toBe(1);
    expect(guest.notices.map((n) => n.limit)).toEqual(['queued_messages']);
    expect(guest.conn.activeCalls).toBe(1);

    // The ping queued before is still there: once the guest reads, it is answered.
    guest.resumeReading();
    for (let i = 0; i < 50 && !guest.request('ping'); i++) await tick();
    guest.send(json(guest.request('ping')!.channel, { type: 'result', value: { now: 1 } }));
    await expect(ping).resolves.toEqual({ now: 1 });
  });

  it('what the guest sends to readers that stall is bounded for all its channels together', async () => {
    const guest = scriptedGuest({ reads: true });
    await guest.conn.waitForHello();
    const streams: Duplex[] = [];
    guest.conn.setEgressHandler((stream) => streams.push(stream)); // upstreams that never read
    const channels = 24; // a full 4 MiB window each: 96 MiB, over the shared bound
    guest.send(
      ...Array.from({ length: channels }, (_, i) =>
        json(guestChannel(i + 1), { type: 'egress', clientPort: i }),
      ),
    );
    await tick();
    expect(streams).toHaveLength(channels);
    const chunk = Buffer.alloc(1024 * 1024, 0x62);
    for (let i = 1; i <= channels; i++) {
      for (let j = 0; j < 4; j++) guest.send(encodeFrame(FrameKind.Data, guestChannel(i), chunk));
      await tick();
    }
    // What live streams hold (a reset one is let go of by its reader, as the gateway does).
    const held = streams.filter((s) => !s.destroyed).reduce((sum, s) => sum + s.readableLength, 0);
    expect(held).toBeLessThanOrEqual(MAX_GUEST_INBOUND_BYTES + chunk.length);
    expect(guest.conn.limits.inboundBytes).toBeLessThanOrEqual(MAX_GUEST_INBOUND_BYTES);
    const reset = streams.filter((s) => s.destroyed);
    expect(reset.length).toBeGreaterThan(0);
    expect(guest.conn.limits.inboundResets).toBe(reset.length);
    expect(guest.notices.map((n) => n.limit)).toEqual(['inbound_bytes']);
    const resets = guest.received.filter((f) => f.kind === FrameKind.Json && parse(f).type === 'reset');
    expect(resets.map((f) => f.channel).sort()).toEqual(
      reset.map((s) => (s as unknown as { channel: number }).channel).sort(),
    );

    // A reader that catches up gives the room back, and a channel carries data again.
    const live = streams.find((s) => !s.destroyed)!;
    live.resume();
    await tick();
    expect(guest.conn.limits.inboundBytes).toBeLessThan(held);
    const fresh = streams.length;
    guest.send(json(guestChannel(100), { type: 'egress', clientPort: 100 }));
    await tick();
    const received: Buffer[] = [];
    streams[fresh]!.on('data', (c: Buffer) => received.push(c));
    guest.send(encodeFrame(FrameKind.Data, guestChannel(100), Buffer.from('after')));
    await tick();
    expect(Buffer.concat(received).toString()).toBe('after');
  });

  it('past the inbound bound the channel holding the most is reset, not a small one that stalls', async () => {
    const guest = scriptedGuest({ reads: true });
    await guest.conn.waitForHello();
    const streams: Duplex[] = [];
    guest.conn.setEgressHandler((stream) => streams.push(stream));
    const opens = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) =>
        json(guestChannel(from + i), { type: 'egress', clientPort: from + i }),
      );
    // 16 uploads to upstreams that stall, each at a full 4 MiB window: exactly the bound.
    guest.send(...opens(1, 16));
    await tick();
    const chunk = Buffer.alloc(1024 * 1024, 0x63);
    for (let i = 1; i <= 16; i++)
      for (let j = 0; j < 4; j++) guest.send(encodeFrame(FrameKind.Data, guestChannel(i), chunk));
    await tick();
    expect(guest.conn.limits).toMatchObject({ inboundBytes: MAX_GUEST_INBOUND_BYTES, inboundResets: 0 });
    // An API request whose reader is briefly busy: 64 KiB past the bound.
    guest.send(...opens(17, 1));
    await tick();
    const api = streams[16]!;
    guest.send(encodeFrame(FrameKind.Data, guestChannel(17), Buffer.alloc(64 * 1024, 0x64)));
    await tick();
    expect(api.destroyed).toBe(false);
    expect(streams.filter((s) => s.destroyed)).toHaveLength(1);
    expect(guest.conn.limits.inboundResets).toBe(1);
    expect(guest.conn.limits.inboundBytes).toBeLessThanOrEqual(MAX_GUEST_INBOUND_BYTES);
    const body: Buffer[] = [];
    api.on('data', (c: Buffer) => body.push(c));
    await tick();
    expect(Buffer.concat(body).length).toBe(64 * 1024);
  });

  it('data a guest sends after its End is dropped, and never counts against the bound', async () => {
    const guest = scriptedGuest({ reads: true });
    await guest.conn.waitForHello();
    const streams: Duplex[] = [];
    guest.conn.setEgressHandler((stream) => {
      streams.push(stream);
      stream.on('error', () => undefined);
      stream.resume(); // a reader that keeps up
    });
    const chunk = Buffer.alloc(1024 * 1024, 0x65);
    for (let i = 1; i <= 80; i++) {
      guest.send(
        json(guestChannel(i), { type: 'egress', clientPort: i }),
        encodeFrame(FrameKind.End, guestChannel(i), Buffer.alloc(0)),
        encodeFrame(FrameKind.Data, guestChannel(i), chunk),
      );
      await tick();
    }
    expect(streams).toHaveLength(80);
    expect(guest.conn.limits).toMatchObject({ inboundBytes: 0, inboundResets: 0 });
  });
});
