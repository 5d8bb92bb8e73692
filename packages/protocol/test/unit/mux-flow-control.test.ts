import { describe, expect, it } from 'vitest';
import { FrameDecoder, FrameKind, Mux, encodeFrame, type ChannelHandler } from '../../src/wire/index.js';

const settle = () => new Promise((r) => setTimeout(r, 20));
const NULL_TRANSPORT = { write: () => true, drained: async () => undefined };
const ignore: ChannelHandler = { onJson: () => undefined, onData: () => undefined, onEnd: () => undefined };

/** Two muxes wired back to back through an in-memory transport that records every write. */
function pair(windowBytes = 256 * 1024, channels = [1, 2]) {
  const writesAtoB: Buffer[] = [];
  const peers: { b?: Mux } = {};
  const a = new Mux(
    {
      write: (chunks) => {
        const bytes = Buffer.concat(chunks);
        writesAtoB.push(bytes);
        // deliver asynchronously, as a socket would
        setImmediate(() => peers.b!.receive(bytes));
        return true;
      },
      drained: async () => undefined,
    },
    { windowBytes },
  );
  const b = new Mux(
    {
      write: (chunks) => {
        const bytes = Buffer.concat(chunks);
        setImmediate(() => a.receive(bytes));
        return true;
      },
      drained: async () => undefined,
    },
    { windowBytes },
  );
  peers.b = b;
  // The sender side opens its channels, as the host does before a request.
  for (const channel of channels) a.open(channel, ignore);
  return { a, b, writesAtoB };
}

function collector(mux: Mux, channel: number, consume = true) {
  const data: Buffer[] = [];
  const json: unknown[] = [];
  let ended = false;
  const handler: ChannelHandler = {
    onJson: (m) => json.push(m),
    onData: (_s, chunk) => {
      data.push(chunk);
      if (consume) mux.consumed(channel, chunk.length);
    },
    onEnd: () => (ended = true),
  };
  mux.open(channel, handler);
  return {
    data,
    json,
    get ended() {
      return ended;
    },
  };
}

describe('mux', () => {
  it('keeps the order of one channel: data before the message that follows it', async () => {
    const { a, b } = pair();
    const sink = collector(b, 1);
    const order: string[] = [];
    b.open(1, {
      onJson: () => order.push('json'),
      onData: (_s, c) => (order.push('data'), b.consumed(1, c.length)),
      onEnd: () => order.push('end'),
    });
    void a.sendData(1, 'data', Buffer.alloc(200_000));
    void a.sendEnd(1);
    await a.sendJson(1, { type: 'exit' });
    await settle();
    expect(order.at(-1)).toBe('json');
    expect(order.at(-2)).toBe('end');
    expect(sink).toBeDefined();
  });

  it('interleaves a small message of another channel with a bulk transfer (no starvation)', async () => {
    const { a, b, writesAtoB } = pair(64 * 1024 * 1024);
    collector(b, 1);
    const control = collector(b, 2);
    const bulk = a.sendData(1, 'data', Buffer.alloc(8 * 1024 * 1024));
    const ping = a.sendJson(2, { type: 'ping' });
    await Promise.all([bulk, ping]);
    await settle();
    // The ping went out in one of the first writes, not after 8 MiB.
    const decoder = new FrameDecoder();
    let bytesBefore = 0;
    outer: for (const write of writesAtoB) {
      for (const frame of decoder.push(write)) {
        if (frame.channel === 2) break outer;
        bytesBefore += frame.payload.length;
      }
    }
    expect(control.json).toEqual([{ type: 'ping' }]);
    expect(bytesBefore).toBeLessThan(1024 * 1024);
  });

  it('stops sending when the window is used up and resumes on credit', async () => {
    const window = 128 * 1024;
    const { a, b } = pair(window);
    const slow = collector(b, 1, false);
    let done = false;
    const sending = a.sendData(1, 'data', Buffer.alloc(window * 3)).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    const received = () => slow.data.reduce((n, c) => n + c.length, 0);
    expect(received()).toBe(window);
    expect(done).toBe(false);
    b.consumed(1, received());
    await new Promise((r) => setTimeout(r, 20));
    expect(received()).toBe(window * 2);
    b.consumed(1, window);
    await new Promise((r) => setTimeout(r, 20));
    b.consumed(1, window);
    await sending;
    expect(received()).toBe(window * 3);
  });

  it('treats a peer that overruns the window as a protocol error', () => {
    const errors: Error[] = [];
    const mux = new Mux(NULL_TRANSPORT, { windowBytes: 1024, onProtocolError: (e) => errors.push(e) });
    mux.open(5, { onJson: () => undefined, onData: () => undefined, onEnd: () => undefined });
    mux.receive(encodeFrame(FrameKind.Data, 5, Buffer.alloc(1024)));
    expect(errors).toEqual([]);
    mux.receive(encodeFrame(FrameKind.Data, 5, Buffer.alloc(1)));
    expect(errors[0]?.message).toMatch(/overran the flow-control window/);
  });

  it('reports invalid JSON and bad frames as protocol errors instead of throwing into the socket', () => {
    const errors: Error[] = [];
    const mux = new Mux(NULL_TRANSPORT, { onProtocolError: (e) => errors.push(e) });
    mux.receive(encodeFrame(FrameKind.Json, 1, Buffer.from('{not json')));
    mux.receive(Buffer.from('garbage!!!!!'));
    expect(errors.map((e) => e.message)).toEqual([
      expect.stringMatching(/invalid JSON/),
      expect.stringMatching(/bad frame magic/),
    ]);
  });

  it('refuses to send on a channel that is not open (closed channels never reopen)', async () => {
    const mux = new Mux(NULL_TRANSPORT);
    await expect(mux.sendJson(3, {})).rejects.toThrow('channel closed');
    mux.open(3, ignore);
    await mux.sendJson(3, {});
    mux.close(3);
    await expect(mux.sendData(3, 'data', Buffer.from('x'))).rejects.toThrow('channel closed');
  });

  it('hands messages on unknown channels to onUnknownChannel', () => {
    const seen: [number, unknown][] = [];
    const mux = new Mux(NULL_TRANSPORT, { onUnknownChannel: (c, m) => seen.push([c, m]) });
    mux.receive(encodeFrame(FrameKind.Json, 9, Buffer.from('{"op":"ping"}')));
    expect(seen).toEqual([[9, { op: 'ping' }]]);
  });

  it('rejects sends after the transport failed', async () => {
    const mux = new Mux({
      write: () => {
        throw new Error('gone');
      },
      drained: async () => undefined,
    });
    mux.open(1, ignore);
    mux.open(2, ignore);
    await expect(mux.sendJson(1, {})).rejects.toThrow('gone');
    await expect(mux.sendJson(2, {})).rejects.toThrow('gone');
  });

  it('posts replies without a promise, drops them on a closed channel, and closes after when asked', async () => {
    const writes: Buffer[] = [];
    const mux = new Mux({
      write: (c) => (writes.push(Buffer.concat(c)), true),
      drained: async () => undefined,
    });
    mux.post(4, { late: true }); // never opened: dropped
    mux.open(4, ignore);
    mux.post(4, { type: 'result' }, true);
    mux.post(4, { again: true }); // closed by the first post: dropped
    await settle();
    const frames = new FrameDecoder().push(Buffer.concat(writes));
    expect(frames.map((f) => [f.kind, f.channel, JSON.parse(f.payload.toString()) as unknown])).toEqual([
      [FrameKind.Json, 4, { type: 'result' }],
    ]);
    await expect(mux.sendJson(4, {})).rejects.toThrow('channel closed');
  });

  it('sends the replies made while receiving a batch in one write, before receive returns', () => {
    const writes: Buffer[] = [];
    const mux = new Mux(
      { write: (c) => (writes.push(Buffer.concat(c)), true), drained: async () => undefined },
      { onUnknownChannel: (channel, m) => (mux.open(channel, ignore), mux.post(channel, { echo: m }, true)) },
    );
    mux.receive(
      Buffer.concat([1, 2, 3].map((c) => encodeFrame(FrameKind.Json, c, Buffer.from(`{"n":${c}}`)))),
    );
    expect(writes).toHaveLength(1);
    expect(new FrameDecoder().push(writes[0]!).map((f) => f.channel)).toEqual([1, 2, 3]);
  });

  it('keeps fd frames in their channel order and retries one the transport could not take yet', async () => {
    const log: string[] = [];
    let busy = true;
    let flushed: () => void = () => undefined;
    const mux = new Mux({
      write: (chunks) => {
        for (const f of new FrameDecoder().push(Buffer.concat(chunks)))
          log.push(`json:${f.payload.toString()}`);
        return true;
      },
      drained: async () => undefined,
      writeFrom: (_header, source, bytes) => {
        if (busy) return undefined; // earlier bytes still queued in the transport
        log.push(`fd:${source.fd}:${bytes}`);
        return bytes;
      },
      flushed: () => new Promise<void>((resolve) => (flushed = resolve)),
    });
    mux.open(1, ignore);
    const first = mux.sendDataFrom(1, 'data', { fd: 7, offset: -1 }, 100);
    const second = mux.sendDataFrom(1, 'stderr', { fd: 8, offset: 0 }, 50);
    const after = mux.sendJson(1, { type: 'exit' });
    await settle();
    expect(log).toEqual([]); // nothing overtakes the fd frame that waits
    busy = false;
    flushed();
    expect(await first).toBe(100);
    expect(await second).toBe(50);
    await after;
    expect(log).toEqual(['fd:7:100', 'fd:8:50', 'json:{"type":"exit"}']);
    await expect(mux.sendDataFrom(1, 'data', { fd: 7, offset: -1 }, 0)).rejects.toThrow(RangeError);
  });
});
