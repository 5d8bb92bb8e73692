import { Duplex } from 'node:stream';
import type net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { IMAGE_API_VERSION, PROTOCOL_VERSION } from '@agentbox/protocol';
import { encodeFrame, FrameDecoder, FrameKind, type Frame } from '@agentbox/protocol/wire';
import { EXEC_CANCEL_GRACE_MS, GuestConnection } from '../../src/guest-connection.js';

const tick = () => new Promise((r) => setImmediate(r));
const json = (channel: number, message: unknown) =>
  encodeFrame(FrameKind.Json, channel, Buffer.from(JSON.stringify(message)));
const parse = (frame: Frame) => JSON.parse(frame.payload.toString()) as { type?: string; op?: string };

/** A guest that says hello, then takes requests and answers nothing it is not told to. */
function silentGuest() {
  const decoder = new FrameDecoder();
  const received: Frame[] = [];
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      received.push(...decoder.push(chunk));
      callback();
    },
  });
  const conn = new GuestConnection();
  conn.attach(socket as unknown as net.Socket);
  socket.push(
    json(0, {
      type: 'hello',
      protocolVersion: PROTOCOL_VERSION,
      imageApiVersion: IMAGE_API_VERSION,
      agentVersion: 'x',
      bootId: 'b',
      agentPid: 1,
      egressProxyPort: 3128,
    }),
  );
  const jsonFrames = () =>
    received.filter((f) => f.kind === FrameKind.Json).map((f) => ({ channel: f.channel, ...parse(f) }));
  return { conn, socket, jsonFrames };
}

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
