import { describe, expect, it } from 'vitest';
import {
  ChannelOverflowError,
  FrameDecoder,
  Mux,
  type ChannelHandler,
  type Frame,
} from '../../src/wire/index.js';

const ignore: ChannelHandler = { onJson: () => undefined, onData: () => undefined, onEnd: () => undefined };
const tick = () => new Promise((r) => setImmediate(r));

/** A peer that stops reading: the first write fills the transport; nothing drains until `resume`. */
function stalledPeer() {
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  let release: (() => void) | undefined;
  let reading = false;
  return {
    frames,
    transport: {
      write: (chunks: Buffer[]) => {
        for (const chunk of chunks) frames.push(...decoder.push(chunk));
        return reading;
      },
      drained: () => (reading ? Promise.resolve() : new Promise<void>((r) => (release = r))),
    },
    resume: () => {
      reading = true;
      release?.();
    },
  };
}

describe('mux: bound on queued window-free frames', () => {
  it('closes the channel whose message does not fit, and only that one', async () => {
    const peer = stalledPeer();
    const overflowed: number[] = [];
    const mux = new Mux(peer.transport, {
      maxQueuedControlBytes: 4096,
      onOverflow: (channel) => overflowed.push(channel),
    });
    mux.open(1, ignore);
    mux.open(2, ignore);
    // The first batch goes to the transport, which then reports itself full.
    await mux.sendJson(1, { type: 'first' });
    const waiting = mux.sendJson(2, { type: 'waits for the peer' });
    const spam: Promise<void>[] = [];
    for (let i = 0; i < 500; i++) {
      spam.push(mux.sendJson(1, { type: 'resize', rows: i, cols: i }));
      expect(mux.queuedControlBytes).toBeLessThanOrEqual(4096);
    }
    // Every message of channel 1 failed: the one that did not fit with an overflow, the ones
    // queued before it dropped with the channel, the later ones refused by the closed channel.
    const settled = await Promise.allSettled(spam);
    const reasons = settled.map((s) => (s.status === 'rejected' ? (s.reason as Error) : undefined));
    expect(reasons.every((r) => r !== undefined)).toBe(true);
    expect(reasons.filter((r) => r instanceof ChannelOverflowError)).toHaveLength(1);
    await tick();
    expect(overflowed).toEqual([1]);
    await expect(mux.sendJson(1, { type: 'late' })).rejects.toThrow('channel closed');
    // Channel 2 keeps its message, and can queue more now that channel 1's bytes are gone.
    const more = mux.sendEnd(2);
    peer.resume();
    await Promise.all([waiting, more]);
    const onTwo = peer.frames.filter((f) => f.channel === 2);
    expect(onTwo.map((f) => f.kind)).toEqual([1, 4]);
    expect(mux.queuedControlBytes).toBe(0);
  });

  it('does not count windowed data, and frees the budget as frames are written', async () => {
    const frames: Frame[] = [];
    const decoder = new FrameDecoder();
    const mux = new Mux(
      {
        write: (chunks) => {
          for (const chunk of chunks) frames.push(...decoder.push(chunk));
          return true;
        },
        drained: () => Promise.resolve(),
      },
      { maxQueuedControlBytes: 256, windowBytes: 64 * 1024 * 1024 },
    );
    mux.open(1, ignore);
    await mux.sendData(1, 'data', Buffer.alloc(8 * 1024 * 1024));
    for (let i = 0; i < 2000; i++) await mux.sendJson(1, { i });
    expect(frames.filter((f) => f.kind === 1)).toHaveLength(2000);
    expect(mux.queuedControlBytes).toBe(0);
  });

  it('post() drops a message that does not fit, closing its channel', async () => {
    const peer = stalledPeer();
    const overflowed: number[] = [];
    const mux = new Mux(peer.transport, {
      maxQueuedControlBytes: 1024,
      onOverflow: (channel) => overflowed.push(channel),
    });
    mux.open(1, ignore);
    await mux.sendJson(1, { type: 'first' });
    for (let i = 0; i < 1000; i++) mux.post(1, { type: 'notice', i });
    await tick();
    expect(mux.queuedControlBytes).toBeLessThanOrEqual(1024);
    expect(overflowed).toEqual([1]);
  });
});
