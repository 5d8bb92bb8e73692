import { Duplex } from 'node:stream';
import type net from 'node:net';
import { describe, expect, it } from 'vitest';
import { AgentboxError } from '@agentbox/protocol';
import { FrameDecoder, FrameKind } from '@agentbox/protocol/wire';
import { GuestConnection, HELLO_RETRY_FIRST_MS } from '../../src/guest-connection.js';
import { helloFrame, parseJsonFrame } from '../helpers/scripted-guest.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A socket whose far end is a guest that answers nothing unless told to; it records what comes. */
function quietGuestSocket() {
  const decoder = new FrameDecoder();
  const ops: string[] = [];
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      for (const frame of decoder.push(chunk))
        if (frame.kind === FrameKind.Json)
          ops.push(String(parseJsonFrame(frame).op ?? parseJsonFrame(frame).type));
      callback();
    },
  });
  return { socket: socket as unknown as net.Socket, ops, greet: () => socket.push(helloFrame()) };
}

/*
 * While no host is attached the guest agent reopens its port in a loop; a hello request that
 * reaches the port as the agent closes it is discarded by the kernel, and a host that asked once
 * would wait for an answer forever (a daemon restart then fails to re-adopt a live box).
 */
describe('the hello handshake on a new socket', () => {
  it('is asked again until the guest answers, and never once anything else was sent', async () => {
    const conn = new GuestConnection({ callTimeoutMs: 5_000 });
    const guest = quietGuestSocket();
    conn.attach(guest.socket);
    // Nobody waits yet (a standby clone, stopped until it is taken): asked once.
    await sleep(HELLO_RETRY_FIRST_MS + 100);
    expect(guest.ops).toEqual(['hello']);
    const answered = conn.waitForHello();
    // The first request was lost: a second follows, then a third, further apart.
    await sleep(HELLO_RETRY_FIRST_MS + 100);
    expect(guest.ops).toEqual(['hello', 'hello']);
    await sleep(2 * HELLO_RETRY_FIRST_MS + 100);
    expect(guest.ops).toEqual(['hello', 'hello', 'hello']);

    guest.greet();
    await answered;
    const call = conn.stat('/workspace').catch(() => undefined);
    await sleep(8 * HELLO_RETRY_FIRST_MS);
    expect(guest.ops).toEqual(['hello', 'hello', 'hello', 'file.stat']);
    conn.close(new AgentboxError('vm_exited', 'done'));
    await call;
  });

  it('is asked once on a re-attach, whose callers do not wait for the answer', async () => {
    const conn = new GuestConnection({ callTimeoutMs: 5_000 });
    const first = quietGuestSocket();
    conn.attach(first.socket);
    first.greet();
    await conn.waitForHello();

    const second = quietGuestSocket();
    conn.attach(second.socket);
    await sleep(3 * HELLO_RETRY_FIRST_MS);
    expect(second.ops).toEqual(['hello']);
  });
});
