import { describe, expect, it } from 'vitest';
import {
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameError,
  FrameKind,
  MAX_FRAME_PAYLOAD_BYTES,
  encodeFrame,
} from '../../src/wire/index.js';

describe('frame codec', () => {
  it('encodes the header literally: magic, kind, channel, length', () => {
    const frame = encodeFrame(FrameKind.Data, 0x01020304, Buffer.from('hi'));
    expect(frame.toString('hex')).toBe('ab02' + '01020304' + '00000002' + '6869');
  });

  it('decodes frames split at every byte boundary', () => {
    const frames = [
      encodeFrame(FrameKind.Json, 1, Buffer.from('{"a":1}')),
      encodeFrame(FrameKind.Data, 7, Buffer.alloc(1000, 0xee)),
      encodeFrame(FrameKind.End, 7),
    ];
    const stream = Buffer.concat(frames);
    for (let split = 1; split < stream.length; split += 37) {
      const decoder = new FrameDecoder();
      const out = [...decoder.push(stream.subarray(0, split)), ...decoder.push(stream.subarray(split))];
      expect(out.map((f) => [f.kind, f.channel, f.payload.length])).toEqual([
        [FrameKind.Json, 1, 7],
        [FrameKind.Data, 7, 1000],
        [FrameKind.End, 7, 0],
      ]);
    }
  });

  it('decodes byte by byte', () => {
    const stream = Buffer.concat([
      encodeFrame(FrameKind.Stderr, 3, Buffer.from('abc')),
      encodeFrame(FrameKind.Data, 4, Buffer.from('d')),
    ]);
    const decoder = new FrameDecoder();
    const out = [];
    for (const byte of stream) out.push(...decoder.push(Buffer.from([byte])));
    expect(out.map((f) => f.payload.toString())).toEqual(['abc', 'd']);
  });

  it('rejects a bad magic instead of guessing', () => {
    const bad = encodeFrame(FrameKind.Data, 1, Buffer.from('x'));
    bad[0] = 0x00;
    expect(() => new FrameDecoder().push(bad)).toThrow(FrameError);
  });

  it('rejects an unknown kind', () => {
    const bad = encodeFrame(FrameKind.Data, 1, Buffer.from('x'));
    bad[1] = 99;
    expect(() => new FrameDecoder().push(bad)).toThrow(/unknown frame kind 99/);
  });

  it('rejects an oversized length before buffering it (a hostile guest cannot make the host allocate)', () => {
    const header = Buffer.alloc(FRAME_HEADER_BYTES);
    header[0] = 0xab;
    header[1] = FrameKind.Data;
    header.writeUInt32BE(MAX_FRAME_PAYLOAD_BYTES + 1, 6);
    expect(() => new FrameDecoder().push(header)).toThrow(/exceeds the limit/);
  });

  it('seek skips the tail of a frame from a previous connection up to the wanted frame', () => {
    const decoder = new FrameDecoder();
    const stale = encodeFrame(FrameKind.Data, 5, Buffer.alloc(300, 0xab)).subarray(120);
    const hello = encodeFrame(FrameKind.Json, 0, Buffer.from('{"type":"hello"}'));
    decoder.seek(hello.subarray(0, 6));
    const stream = Buffer.concat([stale, hello, encodeFrame(FrameKind.End, 9)]);
    const out = [];
    for (let i = 0; i < stream.length; i += 7) out.push(...decoder.push(stream.subarray(i, i + 7)));
    expect(out.map((f) => [f.kind, f.channel])).toEqual([
      [FrameKind.Json, 0],
      [FrameKind.End, 9],
    ]);
  });

  it('seek finds the frame wherever reads split it, and holds nothing of the junk before it', () => {
    const hello = encodeFrame(FrameKind.Json, 0, Buffer.from('{"type":"hello"}'));
    const prefix = hello.subarray(0, 6);
    // Junk as a hostile guest would send it: frames for other channels, the magic byte everywhere.
    const junk = Buffer.concat(
      Array.from({ length: 5000 }, () => encodeFrame(FrameKind.Data, 7, Buffer.from('x'))),
    );
    for (let split = 0; split < prefix.length; split++) {
      const decoder = new FrameDecoder();
      decoder.seek(prefix);
      const stream = Buffer.concat([junk, hello]);
      const cut = junk.length + split;
      expect(decoder.push(stream.subarray(0, 1000))).toEqual([]);
      expect(decoder.push(stream.subarray(1000, cut))).toEqual([]);
      // What is kept of the junk: at most a partial prefix.
      expect((decoder as unknown as { buffered: number }).buffered).toBeLessThan(prefix.length);
      const frames = decoder.push(stream.subarray(cut));
      expect(frames.map((f) => [f.kind, f.channel, f.payload.toString()])).toEqual([
        [FrameKind.Json, 0, '{"type":"hello"}'],
      ]);
    }
  });

  it('reset drops a partial frame', () => {
    const decoder = new FrameDecoder();
    const frame = encodeFrame(FrameKind.Data, 1, Buffer.from('hello'));
    decoder.push(frame.subarray(0, 12));
    decoder.reset();
    expect(decoder.push(encodeFrame(FrameKind.End, 2))).toEqual([
      { kind: FrameKind.End, channel: 2, payload: Buffer.alloc(0) },
    ]);
  });
});
