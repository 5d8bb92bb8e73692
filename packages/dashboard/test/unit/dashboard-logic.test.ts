import { describe, expect, it } from 'vitest';
import type { Task, TaskEvent } from '@agentbox/protocol';
import { ApiError, createApiClient } from '../../src/api-client.js';
import { crumbs, joinPath, opensAsDirectory, parentOf, sortEntries } from '../../src/box-paths.js';
import { followTask, type StreamState } from '../../src/follow-task.js';
import { age, bytes } from '../../src/format.js';
import {
  EMPTY_GRANTS_FORM,
  describeLimit,
  describeSizeCaps,
  describeSpend,
  describeRepos,
  grantsForm,
  grantsFromForm,
} from '../../src/key-grants.js';
import { commandOutputText } from '../../src/command-output.js';
import { createLineSplitter } from '../../src/ndjson.js';
import { parseRoute } from '../../src/routes.js';
import { appendNewer, latestWins } from '../../src/seq-log.js';

const event = (seq: number, content = `line ${seq}`): TaskEvent => ({
  seq,
  ts: new Date(0).toISOString(),
  type: 'text',
  content,
});

const urlOf = (input: Parameters<typeof fetch>[0]) =>
  typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;

/** The dashboard's logic that needs no browser: stream parsing, reconnects, routes, formatting. */
describe('dashboard logic', () => {
  it('keeps each egress record once when two loads of the audit overlap', () => {
    const log = [{ seq: 1 }, { seq: 2 }];
    const page = [{ seq: 3 }, { seq: 4 }];
    appendNewer(log, page);
    appendNewer(log, page); // the second load asked after seq 2 too
    appendNewer(log, [{ seq: 4 }, { seq: 5 }]);
    expect(log.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it("reads a background command's output as text: a character cut between chunks whole, the exit or the error", () => {
    const b64 = (bytes: number[]) => Buffer.from(bytes).toString('base64');
    const euro = [...Buffer.from('€')]; // three bytes, cut after the first
    const lines = [
      { type: 'started', pid: 7 },
      { type: 'stdout', data: b64([...Buffer.from('price: '), euro[0]!]) },
      { type: 'stderr', data: b64([...Buffer.from('warn\n')]) },
      { type: 'stdout', data: b64([euro[1]!, euro[2]!, 0x0a]) },
      { type: 'exit', exitCode: 3, signal: null, timedOut: false, durationMs: 5 },
    ];
    const text = lines.map((l) => JSON.stringify(l)).join('\n');
    expect(commandOutputText(text)).toEqual({
      stdout: 'price: €\n',
      stderr: 'warn\n',
      exit: { exitCode: 3, signal: null, timedOut: false },
      error: null,
    });
    const running = commandOutputText(
      `${JSON.stringify({ type: 'stdout', data: b64([0xff]) })}\n${JSON.stringify({ type: 'running', stdoutOffset: 1, stderrOffset: 0 })}\n`,
    );
    expect(running).toMatchObject({ stdout: '\ufffd', exit: null, error: null });
    const lost = commandOutputText(
      JSON.stringify({
        type: 'error',
        error: { code: 'process_not_found', message: 'gone', requestId: 'r' },
      }),
    );
    expect(lost.error).toMatchObject({ code: 'process_not_found' });
    // A command that keeps only its last output: the page says the start was dropped.
    const trimmed = commandOutputText(
      [
        { type: 'skipped', stream: 'stdout', offset: 1048576 },
        { type: 'stdout', data: b64([...Buffer.from('tail\n')]) },
      ]
        .map((l) => JSON.stringify(l))
        .join('\n'),
    );
    expect(trimmed.stdout).toBe(
      '[… earlier output dropped: the command keeps only its last bytes …]\ntail\n',
    );
    expect(trimmed.stderr).toBe('');
  });

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

  it("turns the API's error bodies into ApiError with code and request id; an unreachable daemon too", async () => {
    const seen: { url: string; key: string | null }[] = [];
    const api = createApiClient({
      key: 'abk_test',
      baseUrl: 'http://daemon',
      fetch: async (input, init) => {
        seen.push({ url: urlOf(input), key: new Headers(init?.headers).get('x-api-key') });
        return new Response(
          JSON.stringify({
            error: { code: 'box_not_found', message: 'no box box-0123456789', requestId: 'req_1' },
          }),
          { status: 404, headers: { 'content-type': 'application/json' } },
        );
      },
    });
    const err = await api.getBox('box-0123456789').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({
      code: 'box_not_found',
      status: 404,
      requestId: 'req_1',
      message: 'no box box-0123456789',
    });
    expect(seen).toEqual([{ url: 'http://daemon/v1/boxes/box-0123456789', key: 'abk_test' }]);

    const down = createApiClient({ key: 'k', fetch: () => Promise.reject(new TypeError('fetch failed')) });
    expect(await down.listBoxes().catch((e: unknown) => e)).toMatchObject({
      code: 'network_error',
      status: 0,
    });
    const proxy = createApiClient({
      key: 'k',
      fetch: async () => new Response('bad gateway', { status: 502 }),
    });
    expect(await proxy.listBoxes().catch((e: unknown) => e)).toMatchObject({
      code: 'http_502',
      message: 'bad gateway',
    });
  });

  it('reads the events stream as NDJSON in whatever chunks it arrives, key in the header not the URL', async () => {
    const body = [event(1), event(2, 'two\nlines ✓ é'), event(3)]
      .map((e) => JSON.stringify(e) + '\n')
      .join('');
    const bytes = new TextEncoder().encode(body);
    let url = '';
    const api = createApiClient({
      key: 'abk_secret',
      fetch: async (input) => {
        url = urlOf(input);
        // Cut into 7-byte chunks: lines (and UTF-8) split anywhere.
        const stream = new ReadableStream<Uint8Array>({
          start(controller) {
            for (let i = 0; i < bytes.length; i += 7) controller.enqueue(bytes.slice(i, i + 7));
            controller.close();
          },
        });
        return new Response(stream, { status: 200, headers: { 'content-type': 'application/x-ndjson' } });
      },
    });
    const got: TaskEvent[] = [];
    let opened = false;
    await api.followEvents('task-1', {
      after: 0,
      signal: new AbortController().signal,
      onEvent: (e) => got.push(e),
      onOpen: () => (opened = true),
    });
    expect(opened).toBe(true);
    expect(got.map((e) => e.content)).toEqual(['line 1', 'two\nlines ✓ é', 'line 3']);
    expect(url).toBe('/v1/tasks/task-1/events?after=0');
    expect(url).not.toContain('abk_secret');
  });

  it('turns the last line of a stream the daemon ended (key revoked) into a 401 ApiError, after the events', async () => {
    const revoked = {
      type: 'error',
      error: {
        code: 'unauthorized',
        message: 'revoked',
        details: { reason: 'key_revoked' },
        requestId: 'req_1',
      },
    };
    const body = [event(1), event(2), revoked].map((e) => JSON.stringify(e) + '\n').join('');
    const api = createApiClient({
      key: 'abk_secret',
      fetch: async () =>
        new Response(body, { status: 200, headers: { 'content-type': 'application/x-ndjson' } }),
    });
    const got: TaskEvent[] = [];
    const err = await api
      .followEvents('task-1', { after: 0, signal: new AbortController().signal, onEvent: (e) => got.push(e) })
      .catch((e: unknown) => e);
    expect(got.map((e) => e.seq)).toEqual([1, 2]);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ code: 'unauthorized', status: 401, requestId: 'req_1' });
  });

  it('lists tasks a page at a time: "Load more" walks one page further from the newest', async () => {
    const task = (id: string) => ({ id }) as Task;
    // Pages as the daemon serves them: the cursor is the last id of the page before.
    const pages: Record<string, { tasks: Task[]; nextCursor: string | null }> = {
      '': { tasks: [task('c'), task('b')], nextCursor: 'b' },
      b: { tasks: [task('a')], nextCursor: null },
    };
    const urls: string[] = [];
    const api = createApiClient({
      key: 'k',
      fetch: async (input) => {
        const url = new URL(urlOf(input), 'http://daemon');
        urls.push(`${url.pathname}${url.search}`);
        return Response.json(pages[url.searchParams.get('cursor') ?? '']);
      },
    });
    expect(await api.listTaskPages(1)).toEqual({ tasks: [task('c'), task('b')], more: true });
    expect(urls).toEqual(['/v1/tasks?limit=100']);
    urls.length = 0;
    expect(await api.listTaskPages(2, { boxId: 'box-1' })).toEqual({
      tasks: [task('c'), task('b'), task('a')],
      more: false,
    });
    expect(urls).toEqual(['/v1/tasks?limit=100&boxId=box-1', '/v1/tasks?limit=100&boxId=box-1&cursor=b']);
    // Asking for more pages than there are stops at the last.
    urls.length = 0;
    expect((await api.listTaskPages(5)).more).toBe(false);
    expect(urls).toHaveLength(2);
    expect(await api.listTasks()).toEqual([task('c'), task('b')]);
  });

  it('maps page paths to views (the paths the daemon answers with index.html)', () => {
    expect(parseRoute('/', '')).toEqual({ page: 'boxes' });
    expect(parseRoute('/boxes', '')).toEqual({ page: 'boxes' });
    expect(parseRoute('/boxes/box-0123456789', '')).toEqual({ page: 'box', id: 'box-0123456789' });
    expect(parseRoute('/tasks', '')).toEqual({ page: 'tasks', boxId: undefined });
    expect(parseRoute('/tasks', '?boxId=box-0123456789')).toEqual({ page: 'tasks', boxId: 'box-0123456789' });
    expect(parseRoute('/tasks/task-1', '')).toEqual({ page: 'task', id: 'task-1' });
    expect(parseRoute('/tasks/%E0%A4%A', '')).toEqual({ page: 'task', id: '%E0%A4%A' });
    expect(parseRoute('/keys', '')).toEqual({ page: 'keys' });
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

describe('paths in a box (file browser)', () => {
  it('joins, climbs and splits absolute paths', () => {
    expect(joinPath('/workspace', 'a.txt')).toBe('/workspace/a.txt');
    expect(joinPath('/', 'etc')).toBe('/etc');
    expect(parentOf('/workspace/src/a')).toBe('/workspace/src');
    expect(parentOf('/workspace')).toBe('/');
    expect(parentOf('/workspace/')).toBe('/');
    expect(parentOf('/')).toBe('/');
    expect(crumbs('/workspace/src')).toEqual([
      { name: '/', path: '/' },
      { name: 'workspace', path: '/workspace' },
      { name: 'src', path: '/workspace/src' },
    ]);
    expect(crumbs('/')).toEqual([{ name: '/', path: '/' }]);
  });

  it('lists directories (and links to them) first, then by name', () => {
    const entry = (
      name: string,
      type: 'file' | 'directory' | 'symlink',
      targetType?: 'file' | 'directory',
    ) => ({
      name,
      type,
      ...(targetType ? { targetType } : {}),
    });
    const sorted = sortEntries([
      entry('b.txt', 'file'),
      entry('z', 'directory'),
      entry('a.txt', 'file'),
      entry('bin', 'symlink', 'directory'),
      entry('link', 'symlink', 'file'),
      entry('dangling', 'symlink'),
    ]);
    expect(sorted.map((e) => e.name)).toEqual(['bin', 'z', 'a.txt', 'b.txt', 'dangling', 'link']);
    expect(opensAsDirectory(entry('bin', 'symlink', 'directory'))).toBe(true);
    expect(opensAsDirectory(entry('dangling', 'symlink'))).toBe(false);
  });
});

describe('key grants form', () => {
  /** A key granted nothing: no repository, no limit of its own. */
  const none = {
    repos: [],
    maxBoxes: null,
    maxTasks: null,
    maxMemoryMib: null,
    maxDiskGib: null,
    maxSpendUsd: null,
  };

  it('turns the form into grants: repositories split and deduplicated, blank limits are none', () => {
    expect(grantsFromForm(EMPTY_GRANTS_FORM)).toEqual(none);
    expect(
      grantsFromForm({
        repos: ' octo/hello\nocto/*, octo/hello\n\n*',
        maxBoxes: ' 2 ',
        maxTasks: '0',
        maxMemoryMib: '4096',
        maxDiskGib: ' 40',
        maxSpendUsd: '0',
      }),
    ).toEqual({
      repos: ['octo/hello', 'octo/*', '*'],
      maxBoxes: 2,
      maxTasks: 0,
      maxMemoryMib: 4096,
      maxDiskGib: 40,
      maxSpendUsd: 0,
    });
  });

  it('refuses a limit that is not a whole number, naming the field', () => {
    for (const bad of ['-1', '1.5', 'two', '1e3'])
      expect(() => grantsFromForm({ ...EMPTY_GRANTS_FORM, maxTasks: bad })).toThrow(/^Max tasks: /);
    expect(() => grantsFromForm({ ...EMPTY_GRANTS_FORM, maxBoxes: 'x' })).toThrow(/^Max boxes: /);
    expect(() => grantsFromForm({ ...EMPTY_GRANTS_FORM, maxMemoryMib: '1.5' })).toThrow(/^Max memory: /);
    expect(() => grantsFromForm({ ...EMPTY_GRANTS_FORM, maxDiskGib: '4G' })).toThrow(/^Max disk: /);
    for (const bad of ['-1', 'ten', '1e3', '$x'])
      expect(() => grantsFromForm({ ...EMPTY_GRANTS_FORM, maxSpendUsd: bad })).toThrow(/^Max spend: /);
    expect(grantsFromForm({ ...EMPTY_GRANTS_FORM, maxSpendUsd: ' $2.50 ' }).maxSpendUsd).toBe(2.5);
  });

  it('fills the form from a key and reads it back unchanged', () => {
    const grants = {
      repos: ['octo/hello', 'acme/*'],
      maxBoxes: 3,
      maxTasks: null,
      maxMemoryMib: 2048,
      maxDiskGib: null,
      maxSpendUsd: 12.5,
    };
    expect(grantsForm(grants)).toEqual({
      repos: 'octo/hello\nacme/*',
      maxBoxes: '3',
      maxTasks: '',
      maxMemoryMib: '2048',
      maxDiskGib: '',
      maxSpendUsd: '12.5',
    });
    expect(grantsFromForm(grantsForm(grants))).toEqual(grants);
  });

  it("says what a key's boxes may reach", () => {
    expect(describeRepos({ scope: 'admin', grants: none })).toBe('any (admin)');
    expect(describeRepos({ scope: 'user', grants: none })).toBe('none');
    expect(describeRepos({ scope: 'user', grants: { ...none, repos: ['a/b', 'c/*'] } })).toBe('a/b, c/*');
    expect(describeLimit(null)).toBe('no limit');
    expect(describeLimit(0)).toBe('0');
    expect(describeSizeCaps(none)).toBe('no limit');
    expect(describeSizeCaps({ maxMemoryMib: 4096, maxDiskGib: null })).toBe('4096 MiB memory');
    expect(describeSizeCaps({ maxMemoryMib: 4096, maxDiskGib: 40 })).toBe('4096 MiB memory, 40 GiB disk');
    expect(describeSpend({ spentUsd: 1.234, grants: none })).toBe('$1.23');
    expect(describeSpend({ spentUsd: 0, grants: { ...none, maxSpendUsd: 20 } })).toBe('$0.00 of $20.00');
  });
});

describe('latestWins', () => {
  it('drops a load that ends after a later-started one was shown (a poll overlapping "Load more")', () => {
    const order = latestWins();
    const poll = order.start();
    const loadMore = order.start();
    expect(order.accept(loadMore)).toBe(true);
    expect(order.accept(poll)).toBe(false);
    // In order, every load is shown.
    const next = order.start();
    expect(order.accept(next)).toBe(true);
  });
});
