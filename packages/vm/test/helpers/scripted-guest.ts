import { Duplex } from 'node:stream';
import type net from 'node:net';
import { IMAGE_API_VERSION, PROTOCOL_VERSION } from '@agentbox/protocol';
import { encodeFrame, FrameDecoder, FrameKind, type Frame } from '@agentbox/protocol/wire';
import {
  GuestConnection,
  type GuestConnectionOptions,
  type GuestLimitNotice,
} from '../../src/guest-connection.js';
import { HostReadShare } from '../../src/read-budget.js';

/** A connection that reads its guest as fast as it sends: for tests that flood to reach other bounds. */
export const unpaced = (): GuestConnectionOptions => ({
  framesPerSecond: 1e12,
  readShare: new HostReadShare(1e12),
});

/** One Json frame on `channel`, as the guest would write it. */
export const jsonFrame = (channel: number, message: unknown): Buffer =>
  encodeFrame(FrameKind.Json, channel, Buffer.from(JSON.stringify(message)));

/** The guest agent's hello; a new `agentPid` is an agent that started again. */
export const helloFrame = (agentPid = 1): Buffer =>
  jsonFrame(0, {
    type: 'hello',
    protocolVersion: PROTOCOL_VERSION,
    imageApiVersion: IMAGE_API_VERSION,
    agentVersion: 'x',
    bootId: 'b',
    agentPid,
    egressProxyPort: 3128,
  });

export const parseJsonFrame = (frame: Frame) =>
  JSON.parse(frame.payload.toString()) as Record<string, unknown> & { type?: string; op?: string };

/**
 * A scripted guest on a socket-like stream, attached to a real GuestConnection (which it greets).
 * It records every frame the host writes; while it does not `read`, it holds back the write
 * callbacks, so the host's writes back up as on a real socket whose peer stopped reading. It
 * answers nothing by itself.
 */
export function scriptedGuest(options: { reads?: boolean; connection?: GuestConnectionOptions } = {}) {
  const decoder = new FrameDecoder();
  const received: Frame[] = [];
  let reads = options.reads ?? true;
  const stalled: (() => void)[] = [];
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      received.push(...decoder.push(chunk));
      if (reads) callback();
      else stalled.push(callback);
    },
    writableHighWaterMark: 64 * 1024,
  });
  const notices: GuestLimitNotice[] = [];
  const conn = new GuestConnection({ onLimit: (n) => notices.push(n), ...options.connection });
  conn.attach(socket as unknown as net.Socket);
  const send = (...frames: Buffer[]) => socket.push(Buffer.concat(frames));
  send(helloFrame());
  const jsonFrames = () =>
    received
      .filter((f) => f.kind === FrameKind.Json)
      .map((f) => ({ channel: f.channel, ...parseJsonFrame(f) }));
  return {
    conn,
    socket,
    notices,
    received,
    send,
    jsonFrames,
    /** The host's first request with `op`, and the channel it came on. */
    request: (op: string) => jsonFrames().find((f) => f.op === op),
    /** Bytes the host holds for this guest: frames in the mux's queues and the socket's buffer. */
    hostHeldBytes(): number {
      const queues = (conn as unknown as { mux: { queues: Map<number, { frame: Buffer[] }[]> } }).mux.queues;
      let bytes = socket.writableLength;
      for (const queue of queues.values())
        for (const item of queue) for (const part of item.frame) bytes += part.length;
      return bytes;
    },
    resumeReading() {
      reads = true;
      for (const callback of stalled.splice(0)) callback();
    },
  };
}
