import { encodeFrame, FrameKind } from '@agentbox/protocol/wire';
import { describe, expect, it } from 'vitest';
import { helloFrame, jsonFrame as json, scriptedGuest } from '../helpers/scripted-guest.js';

const DEADLINE_MS = 100;
const tick = () => new Promise((r) => setImmediate(r));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A guest that greets and then answers only what a test makes it answer. */
async function silentGuest() {
  const guest = scriptedGuest({ connection: { callTimeoutMs: DEADLINE_MS } });
  await guest.conn.waitForHello();
  return guest;
}

const cancels = (guest: Awaited<ReturnType<typeof silentGuest>>, channel: number) =>
  guest.jsonFrames().filter((f) => f.channel === channel && f.type === 'cancel').length;

/*
 * A guest that answers nothing, or answers wrong, must not hold a host caller (an API request, a
 * task's queue slot, the daemon's start) forever, and must not make the host do unbounded work.
 */
describe('calls to a guest that does not answer', () => {
  it('fail after the deadline, are cancelled in the guest and hold nothing', async () => {
    const guest = await silentGuest();
    const outcome = guest.conn.stat('/workspace').catch((err: unknown) => err);
    await tick();
    expect(guest.conn.activeCalls).toBe(1);
    expect(await outcome).toMatchObject({
      code: 'guest_unreachable',
      message: expect.stringMatching(/file\.stat/),
    });
    expect(guest.conn.activeCalls).toBe(0);
    expect(cancels(guest, guest.request('file.stat')!.channel)).toBe(1);
  });

  it('end at once when the caller aborts, with the caller’s reason', async () => {
    const guest = await silentGuest();
    const abort = new AbortController();
    const outcome = guest.conn
      .list('/workspace', { signal: abort.signal, timeoutMs: 60_000 })
      .catch((err: unknown) => err);
    await tick();
    abort.abort(new Error('client went away'));
    expect(await outcome).toMatchObject({ message: 'client went away' });
    expect(guest.conn.activeCalls).toBe(0);
    expect(cancels(guest, guest.request('file.list')!.channel)).toBe(1);
  });

  it('start the clock for an upload once it is all sent', async () => {
    const guest = await silentGuest();
    const { PassThrough } = await import('node:stream');
    const source = new PassThrough();
    const outcome = guest.conn.writeFile('/workspace/a', source).catch((err: unknown) => err);
    source.write('slow client, ');
    await sleep(3 * DEADLINE_MS);
    // Still sending: not the guest's fault yet.
    expect(guest.conn.activeCalls).toBe(1);
    source.end('done');
    expect(await outcome).toMatchObject({ code: 'guest_unreachable' });
  });

  it('a file read fails when the guest stops sending, not while the host reader is slow', async () => {
    const guest = await silentGuest();
    const chunks: Buffer[] = [];
    let releaseSink: () => void = () => undefined;
    const outcome = guest.conn
      .readFile('/workspace/big', async (chunk) => {
        chunks.push(chunk);
        // The first chunk's reader takes three deadlines (a slow HTTP client).
        if (chunks.length === 1) await new Promise<void>((r) => (releaseSink = r));
      })
      .catch((err: unknown) => err);
    await tick();
    const channel = guest.request('file.read')!.channel;
    guest.send(
      json(channel, { type: 'file', size: 10 }),
      encodeFrame(FrameKind.Data, channel, Buffer.from('01234')),
    );
    await sleep(3 * DEADLINE_MS);
    expect(guest.conn.activeCalls).toBe(1);
    releaseSink();
    // Then the guest says nothing more.
    expect(await outcome).toMatchObject({ code: 'guest_unreachable' });
    expect(guest.conn.activeCalls).toBe(0);
  });
});

describe('an exec whose guest misbehaves', () => {
  it('fails on a second `started`, which would queue work outside the output flow control', async () => {
    const guest = await silentGuest();
    const pids: number[] = [];
    const outcome = guest.conn
      .exec({ argv: ['true'] }, { onStarted: (pid) => pids.push(pid) })
      .catch((e: unknown) => e);
    await tick();
    const channel = guest.request('exec')!.channel;
    guest.send(...Array.from({ length: 1000 }, (_, i) => json(channel, { type: 'started', pid: 100 + i })));
    expect(await outcome).toMatchObject({ code: 'guest_error' });
    expect(pids).toEqual([100]);
    expect(guest.conn.activeCalls).toBe(0);
  });

  it('fails, and ends the process, when its output sink throws (no unhandled rejection)', async () => {
    const guest = await silentGuest();
    const unhandled: unknown[] = [];
    const onUnhandled = (err: unknown) => unhandled.push(err);
    process.on('unhandledRejection', onUnhandled);
    try {
      const outcome = guest.conn
        .exec(
          { argv: ['agent'] },
          {
            onStdout: () => {
              throw new RangeError('Maximum call stack size exceeded');
            },
          },
        )
        .catch((err: unknown) => err);
      await tick();
      const channel = guest.request('exec')!.channel;
      guest.send(
        json(channel, { type: 'started', pid: 7 }),
        encodeFrame(FrameKind.Data, channel, Buffer.from('{"deep":1}\n')),
        encodeFrame(FrameKind.Data, channel, Buffer.from('more\n')),
      );
      expect(await outcome).toBeInstanceOf(RangeError);
      expect(cancels(guest, channel)).toBe(1);
      expect(guest.conn.activeCalls).toBe(0);
      await sleep(20);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});

describe('a hello with another protocol version', () => {
  it('fails the calls and closes their channels: nothing sent on them later reaches a sink', async () => {
    const guest = await silentGuest();
    const out: string[] = [];
    const outcome = guest.conn
      .exec({ argv: ['cat'] }, { onStdout: (c) => void out.push(c.toString()) })
      .catch((e: unknown) => e);
    await tick();
    const channel = guest.request('exec')!.channel;
    const wrong = JSON.parse(helloFrame(2).subarray(10).toString()) as Record<string, unknown>;
    guest.send(json(0, { ...wrong, protocolVersion: 999 }));
    expect(await outcome).toMatchObject({ code: 'version_mismatch' });
    guest.send(encodeFrame(FrameKind.Data, channel, Buffer.from('after-the-call-failed')));
    await sleep(20);
    expect(out).toEqual([]);
  });
});
