import { describe, expect, it } from 'vitest';
import { TaskEventSchema } from '@agentbox/protocol';
import {
  boundResult,
  createOutputBudget,
  cutContent,
  cutEvent,
  cutUtf8,
  MAX_EVENT_FIELD_BYTES,
  OUTPUT_RESERVE,
  outputLimitMessage,
} from '../../src/services/task-output.js';

const bytes = (s: string) => Buffer.byteLength(s, 'utf8');
const jsonBytes = (v: unknown) => bytes(JSON.stringify(v));
const MiB = 1024 * 1024;

/** The policy pieces of task output limits, apart from the plumbing: cutting events, counting them. */
describe('cutUtf8', () => {
  it('keeps text that fits, whole', () => {
    expect(cutUtf8('hello', 5)).toBe('hello');
    expect(cutUtf8('héllo', 6)).toBe('héllo');
    expect(cutUtf8('', 0)).toBe('');
  });

  it('cuts at a character boundary: never more bytes than asked, never a broken character', () => {
    const text = 'aé€😀'.repeat(1000); // 1, 2, 3 and 4 bytes per character
    for (let max = 0; max < 40; max++) {
      const cut = cutUtf8(text, max);
      expect(bytes(cut), `max ${max}`).toBeLessThanOrEqual(max);
      expect(text.startsWith(cut), `max ${max}`).toBe(true);
      expect(cut).not.toContain('\uFFFD');
      // Only a character that would not fit was dropped.
      expect(max - bytes(cut), `max ${max}`).toBeLessThan(4);
    }
  });

  it('does not keep half a surrogate pair', () => {
    const cut = cutUtf8(`${'a'.repeat(9)}😀`, 10);
    expect(cut).toBe('a'.repeat(9));
  });
});

describe('cutEvent', () => {
  it('leaves an ordinary event as it was, unmarked', () => {
    const draft = { type: 'text' as const, content: 'hello', raw: 'hello' };
    const { event, bytes: size } = cutEvent(draft);
    expect(event).toEqual(draft);
    expect(size).toBe(jsonBytes('hello') + bytes('hello'));
  });

  it('cuts an 8 MiB line to 256 KiB of raw and of content, marked truncated, its start kept', () => {
    const line = `start ${'x'.repeat(8 * MiB)}`;
    const { event, bytes: size } = cutEvent({ type: 'text', content: line, raw: line });
    expect(event.truncated).toBe(true);
    expect(bytes(event.raw!)).toBe(MAX_EVENT_FIELD_BYTES);
    expect(line.startsWith(event.raw!)).toBe(true);
    const content = event.content as string;
    expect(jsonBytes(content)).toBeLessThanOrEqual(MAX_EVENT_FIELD_BYTES);
    // Nearly all of the limit is kept, not a small fraction of it.
    expect(bytes(content)).toBeGreaterThan(MAX_EVENT_FIELD_BYTES - 2048);
    expect(content.startsWith('start xxx')).toBe(true);
    expect(size).toBe(jsonBytes(content) + MAX_EVENT_FIELD_BYTES);
    expect(TaskEventSchema.safeParse({ ...event, seq: 1, ts: 'now' }).success).toBe(true);
  });

  it('marks an event whose raw alone was cut', () => {
    const { event } = cutEvent({ type: 'status', content: { state: 'unparsed' }, raw: 'y'.repeat(MiB) });
    expect(event).toMatchObject({ content: { state: 'unparsed' }, truncated: true });
    expect(event.raw).toHaveLength(MAX_EVENT_FIELD_BYTES);
  });

  it('keeps the shape of structured content while cutting its long string', () => {
    const content = { toolUseId: 'toolu_1', content: 'r'.repeat(3 * MiB), isError: false };
    const { event } = cutEvent({ type: 'tool_result', content });
    expect(event.truncated).toBe(true);
    const cut = event.content as typeof content;
    expect(cut.toolUseId).toBe('toolu_1');
    expect(cut.isError).toBe(false);
    expect(cut.content.length).toBeGreaterThan(MAX_EVENT_FIELD_BYTES - 2048);
    expect(jsonBytes(cut)).toBeLessThanOrEqual(MAX_EVENT_FIELD_BYTES);
  });
});

describe('cutContent', () => {
  const limit = 64 * 1024;
  // Shapes a hostile agent could print as one JSON line: each must come out under the limit.
  const hostile: [string, unknown][] = [
    ['many long strings', { parts: Array.from({ length: 50 }, () => 'p'.repeat(100_000)) }],
    ['a huge array of numbers', Array.from({ length: 500_000 }, (_, i) => i)],
    ['a huge object', Object.fromEntries(Array.from({ length: 200_000 }, (_, i) => [`k${i}`, i]))],
    ['a huge key', { ['k'.repeat(MiB)]: 1 }],
    ['escapes that grow 6× in JSON', '\u0001'.repeat(MiB)],
    ['quotes that grow 2× in JSON', '"'.repeat(MiB)],
    [
      'wide and deep',
      { a: Array.from({ length: 20 }, () => ({ b: Array.from({ length: 20 }, () => 'z'.repeat(5000)) })) },
    ],
  ];
  for (const [name, content] of hostile) {
    it(`brings ${name} under the limit`, () => {
      const out = cutContent(content, limit);
      expect(out.cut).toBe(true);
      expect(out.bytes).toBe(jsonBytes(out.content));
      expect(out.bytes).toBeLessThanOrEqual(limit);
    });
  }

  it('cuts an object of many keys to its first ones', () => {
    const wide: Record<string, number> = {};
    for (let i = 0; i < 300_000; i++) wide[`k${i}`] = i;
    const out = cutContent({ input: wide }, limit);
    expect(out.bytes).toBeLessThanOrEqual(limit);
    expect(Object.keys((out.content as { input: object }).input).length).toBeLessThanOrEqual(10_000);
  });

  it('copes with nesting too deep to be written as JSON', () => {
    let deep: unknown = 'bottom';
    for (let i = 0; i < 200_000; i++) deep = [deep];
    expect(() => JSON.stringify(deep)).toThrow(RangeError);
    const out = cutContent(deep, limit);
    expect(out.cut).toBe(true);
    expect(out.bytes).toBeLessThanOrEqual(limit);
  });

  it('leaves content that fits untouched (the same object)', () => {
    const content = { id: 'x', name: 'Read', input: { path: 'a.txt' } };
    const out = cutContent(content, limit);
    expect(out).toEqual({ content, bytes: jsonBytes(content), cut: false });
    expect(out.content).toBe(content);
  });
});

describe('createOutputBudget', () => {
  const limits = { maxBytes: 1 * MiB, maxEvents: 100 };

  it('admits events until the byte cap less the reserve, then none, saying which cap', () => {
    const budget = createOutputBudget(limits, { bytes: 100, events: 1 });
    const size = 100 * 1024;
    let admitted = 0;
    while (budget.admit(size)) admitted++;
    expect(budget.exceeded).toBe('bytes');
    expect(budget.used.bytes).toBeLessThanOrEqual(limits.maxBytes - OUTPUT_RESERVE.maxBytes);
    expect(budget.used.bytes + size).toBeGreaterThan(limits.maxBytes - OUTPUT_RESERVE.maxBytes);
    expect(admitted).toBe(9);
    // Closed for good: not even a small event gets in after.
    expect(budget.admit(1)).toBe(false);
  });

  it('admits events until the event cap less the reserve, counting what was stored before', () => {
    const budget = createOutputBudget(limits, { bytes: 0, events: 4 });
    let admitted = 0;
    while (budget.admit(10)) admitted++;
    expect(admitted).toBe(limits.maxEvents - OUTPUT_RESERVE.maxEvents - 4);
    expect(budget.exceeded).toBe('events');
  });

  it('stops reading past four times the byte cap, whatever was stored of it', () => {
    const budget = createOutputBudget(limits, { bytes: 0, events: 0 });
    expect(budget.read(4 * limits.maxBytes)).toBe(true);
    expect(budget.read(1)).toBe(false);
    expect(budget.exceeded).toBe('read');
    expect(budget.admit(1)).toBe(false);
    expect(outputLimitMessage(limits, 'read')).toContain('4 MiB printed');
  });

  it('says which cap in the message', () => {
    expect(outputLimitMessage({ maxBytes: 64 * MiB, maxEvents: 100_000 }, 'bytes')).toContain('64 MiB');
    expect(outputLimitMessage({ maxBytes: 64 * MiB, maxEvents: 100_000 }, 'events')).toContain(
      '100000 events',
    );
  });
});

describe('boundResult', () => {
  const base = { numTurns: 1, costUsd: 0.1, exitCode: 0 };

  it('keeps an ordinary result as it was', () => {
    const result = { ...base, sessionId: 's-1', usage: { input_tokens: 3 }, text: 'done' };
    expect(boundResult(result)).toEqual(result);
  });

  it('drops turns and cost the contract cannot hold (the agent printed them)', () => {
    for (const [numTurns, costUsd] of [
      [-1, -0.5],
      [1.5, Number.NaN],
      [2 ** 60, Number.POSITIVE_INFINITY],
    ] as const)
      expect(
        boundResult({ ...base, numTurns, costUsd, sessionId: null, usage: null, text: null }),
      ).toMatchObject({ numTurns: null, costUsd: null });
  });

  it('cuts a huge final text and drops a usage or session id no agent would print', () => {
    const out = boundResult({
      ...base,
      sessionId: 's'.repeat(5000),
      usage: { junk: 'u'.repeat(MiB) },
      text: 't'.repeat(8 * MiB),
    });
    expect(out).toMatchObject({ ...base, sessionId: null, usage: null });
    expect(out.text).toHaveLength(MAX_EVENT_FIELD_BYTES);
  });
});
