import { describe, expect, it } from 'vitest';
import type { Task, TaskEvent } from '@agentbox/protocol';
import { ApiError } from '../../src/api-client.js';
import { followTask, type StreamState } from '../../src/follow-task.js';
import { age, bytes } from '../../src/format.js';
import { createLineSplitter } from '../../src/ndjson.js';
import { parseRoute } from '../../src/routes.js';

const event = (seq: number, content = `line ${seq}`): TaskEvent => ({
  seq,
  ts: new Date(0).toISOString(),
  type: 'text',
  content,
});

/** The dashboard's logic that needs no browser: stream parsing, reconnects, routes, formatting. */
describe('dashboard logic', () => {
  it('splits streamed NDJSON into lines wherever the chunks are cut', () => {
    const text = '{"seq":1}\n{"seq":2}\n{"seq":3}';
    for (let cut = 0; cut <= text.length; cut++) {
      const lines = createLineSplitter();
      const out = [...lines.push(text.slice(0, cut)), ...lines.push(text.slice(cut)), ...lines.end()];
      expect(out, `cut at ${cut}`).toEqual(['{"seq":1}', '{"seq":2}', '{"seq":3}']);
    }
    const lines = createLineSplitter();
    expect(lines.push('a\n')).toEqual(['a']);
    expect(lines.end()).toEqual([]);
  });

  it('follows a task across a dropped connection: resumes after the last seq, no loss, no repeats', async () => {
    const log = [1, 2, 3, 4, 5].map((n) => event(n));
    const calls: number[] = [];
    let state: Task['state'] = 'running';
    const api = {
      // First connection: 1..3 then cut; the second replays 3 (a server at-least-once) then ends.
      async followEvents(
        _id: string,
        opts: { after: number; onEvent: (e: TaskEvent) => void; onOpen?: () => void },
      ) {
        calls.push(opts.after);
        opts.onOpen?.();
        if (calls.length === 1) {
          log.slice(0, 3).forEach(opts.onEvent);
          throw new ApiError({ code: 'network_error', message: 'connection reset', status: 0 });
        }
        log.slice(2).forEach(opts.onEvent);
        state = 'succeeded';
      },
      getTask: async () => ({ state }) as Task,
    };
    const seen: number[] = [];
    const states: StreamState[] = [];
    const errors: unknown[] = [];
    await followTask(api, 'task-1', {
      signal: new AbortController().signal,
      onEvent: (e) => seen.push(e.seq),
      onState: (s) => states.push(s),
      onError: (e) => errors.push(e),
      delay: async () => undefined,
    });
    expect(seen).toEqual([1, 2, 3, 4, 5]);
    expect(calls).toEqual([0, 3]);
    expect(states[0]).toBe('connecting');
    expect(states).toContain('reconnecting');
    expect(states.at(-1)).toBe('ended');
    expect((errors[0] as ApiError).code).toBe('network_error');
    expect(errors.at(-1)).toBeUndefined();
  });

  it('stops following when the task is gone or the key refused', async () => {
    for (const status of [404, 401]) {
      let calls = 0;
      const states: StreamState[] = [];
      await followTask(
        {
          followEvents: async () => {
            calls += 1;
            throw new ApiError({
              code: status === 404 ? 'task_not_found' : 'unauthorized',
              message: 'x',
              status,
            });
          },
          getTask: async () => ({ state: 'running' }) as Task,
        },
        'task-1',
        {
          signal: new AbortController().signal,
          onEvent: () => undefined,
          onState: (s) => states.push(s),
          onError: () => undefined,
          delay: async () => undefined,
        },
      );
      expect(calls, String(status)).toBe(1);
      expect(states.at(-1)).toBe('ended');
    }
  });

  it('maps page paths to views (the paths the daemon answers with index.html)', () => {
    expect(parseRoute('/', '')).toEqual({ page: 'boxes' });
    expect(parseRoute('/boxes', '')).toEqual({ page: 'boxes' });
    expect(parseRoute('/boxes/box-0123456789', '')).toEqual({ page: 'box', id: 'box-0123456789' });
    expect(parseRoute('/tasks', '')).toEqual({ page: 'tasks', boxId: undefined });
    expect(parseRoute('/tasks', '?boxId=box-0123456789')).toEqual({ page: 'tasks', boxId: 'box-0123456789' });
    expect(parseRoute('/tasks/task-1', '')).toEqual({ page: 'task', id: 'task-1' });
    expect(parseRoute('/tasks/%E0%A4%A', '')).toEqual({ page: 'task', id: '%E0%A4%A' });
    expect(parseRoute('/somewhere/else', '')).toEqual({ page: 'boxes' });
  });

  it('formats ages and byte counts briefly', () => {
    const now = Date.parse('2026-01-02T00:00:00Z');
    const ago = (s: number) => new Date(now - s * 1000).toISOString();
    expect(age(ago(5), now)).toBe('5s');
    expect(age(ago(125), now)).toBe('2m');
    expect(age(ago(3 * 3600 + 20 * 60), now)).toBe('3h 20m');
    expect(age(ago(2 * 86400 + 4 * 3600), now)).toBe('2d 4h');
    expect(age(ago(-10), now)).toBe('0s');
    expect(bytes(512)).toBe('512 B');
    expect(bytes(1536)).toBe('1.5 KiB');
    expect(bytes(20 * 1024 * 1024)).toBe('20 MiB');
  });
});
