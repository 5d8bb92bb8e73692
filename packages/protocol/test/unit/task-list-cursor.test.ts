import { describe, expect, it } from 'vitest';
import {
  decodeTaskCursor,
  encodeTaskCursor,
  TaskListQuerySchema,
  TaskListResponseSchema,
} from '../../src/index.js';

const b64 = (text: string) => Buffer.from(text).toString('base64url');

describe('task list cursor', () => {
  it('round-trips a sort key through an opaque, URL-safe string', () => {
    for (const cursor of [
      { createdAt: 0, id: 't' },
      { createdAt: 1_767_225_600_123, id: 'task-0123456789ab' },
      { createdAt: Number.MAX_SAFE_INTEGER, id: 'x'.repeat(64) },
      { createdAt: 5, id: 'Task_with-odd_CASE' },
    ]) {
      const text = encodeTaskCursor(cursor);
      expect(text).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(decodeTaskCursor(text)).toEqual(cursor);
    }
  });

  it('refuses anything it did not make', () => {
    const good = encodeTaskCursor({ createdAt: 1000, id: 'task-a' });
    for (const bad of [
      '',
      'not a cursor',
      `${good}x`,
      `${good}=`,
      good.slice(0, -2),
      b64('{"createdAt":1,"id":"a"}'),
      b64('[1]'),
      b64('[1,"a",2]'),
      b64('[-1,"a"]'),
      b64('[1.5,"a"]'),
      b64('["1","a"]'),
      b64('[1,""]'),
      b64(`[1,"${'x'.repeat(65)}"]`),
      b64('[1,2]'),
      b64('[9007199254740993,"a"]'),
      b64('[1, "a"]'), // not the canonical encoding
      // Not a task id; wider than Latin-1, it would make the re-encoding (btoa) throw: a 500.
      b64(String.raw`[1,"\u0100"]`),
      Buffer.from('[1,"Ā"]').toString('base64url'),
      b64('[1,"a b"]'),
    ]) {
      expect(decodeTaskCursor(bad), bad).toBeUndefined();
    }
  });

  it('the list query decodes a cursor and names `cursor` when it is bad', () => {
    const cursor = encodeTaskCursor({ createdAt: 42, id: 'task-b' });
    expect(TaskListQuerySchema.parse({ cursor })).toEqual({
      limit: 100,
      cursor: { createdAt: 42, id: 'task-b' },
    });
    expect(TaskListQuerySchema.parse({})).toEqual({ limit: 100 });
    const bad = TaskListQuerySchema.safeParse({ cursor: 'garbage!' });
    expect(bad.success).toBe(false);
    expect(bad.error!.issues).toEqual([expect.objectContaining({ path: ['cursor'] })]);
    expect(TaskListQuerySchema.safeParse({ cursor: 'a'.repeat(513) }).success).toBe(false);
  });

  it('a response always says whether another page follows', () => {
    expect(TaskListResponseSchema.safeParse({ tasks: [], nextCursor: null }).success).toBe(true);
    expect(TaskListResponseSchema.safeParse({ tasks: [] }).success).toBe(false);
  });
});
