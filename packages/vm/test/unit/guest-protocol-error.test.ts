import { PassThrough } from 'node:stream';
import type net from 'node:net';
import { describe, expect, it } from 'vitest';
import { IMAGE_API_VERSION, PROTOCOL_VERSION } from '@agentbox/protocol';
import { encodeFrame, FrameKind } from '@agentbox/protocol/wire';
import { GuestConnection } from '../../src/guest-connection.js';

/** A hostile guest's side of the channel: whatever it writes, the host reads. */
function hostileGuest() {
  const toHost = new PassThrough();
  const fromHost = new PassThrough();
  // The host writes into `fromHost` (nobody reads it: a guest that never answers) and reads `toHost`.
  const socket = Object.assign(toHost, {
    write: fromHost.write.bind(fromHost),
    destroy: () => toHost,
  }) as unknown as net.Socket;
  const conn = new GuestConnection();
  conn.attach(socket);
  const hello = (agentPid: number) =>
    encodeFrame(
      FrameKind.Json,
      0,
      Buffer.from(
        JSON.stringify({
          type: 'hello',
          protocolVersion: PROTOCOL_VERSION,
          imageApiVersion: IMAGE_API_VERSION,
          agentVersion: 'x',
          bootId: 'b',
          agentPid,
          egressProxyPort: 3128,
        }),
      ),
    );
  // push, not write: write is the host's way out (replaced above).
  return { conn, send: (b: Buffer) => toHost.push(b), hello };
}

const buffered = (conn: GuestConnection) =>
  (conn as unknown as { mux: { decoder: { buffered: number } } }).mux.decoder.buffered;

describe('a guest that breaks the channel protocol', () => {
  it('fails the calls in flight, holds none of the garbage it streams, and resyncs on its next hello', async () => {
    const { conn, send, hello } = hostileGuest();
    send(hello(1));
    await conn.waitForHello();
    const call = conn.ping();
    // A header that is not a frame's (bad magic), then 32 MiB more.
    send(Buffer.alloc(16));
    await expect(call).rejects.toMatchObject({ code: 'guest_error' });
    const junk = Buffer.alloc(1024 * 1024, 0x11);
    for (let i = 0; i < 32; i++) send(junk);
    await new Promise((r) => setImmediate(r));
    expect(buffered(conn)).toBeLessThan(64);
    // A new hello (an agent that started again) makes the channel usable once more.
    send(hello(2));
    await new Promise((r) => setImmediate(r));
    expect(conn.info?.agentPid).toBe(2);
  });
});
