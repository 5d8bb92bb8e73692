import { describe, expect, it } from 'vitest';
import type { GuestConnection } from '../../src/guest-connection.js';
import { helloFrame, scriptedGuest, unpaced } from '../helpers/scripted-guest.js';

/**
 * A hostile guest's side of the channel that never reads what the host writes. Read unpaced: how
 * the host paces a guest that sends junk is tested in guest-read-pacing.test.ts.
 */
function hostileGuest() {
  const guest = scriptedGuest({ reads: false, connection: unpaced() });
  return { conn: guest.conn, send: (b: Buffer) => guest.send(b), hello: helloFrame };
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
