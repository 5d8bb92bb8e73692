import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Task } from '@agentbox/protocol';
import { formatEvent, taskRequestFromFlags, type TaskRunOptions } from '../../src/commands/task.js';
import { sdkDaemon, type SdkDaemon } from '../../../sdk/test/helpers/sdk-daemon.js';
import { cli } from '../helpers.js';

const base: TaskRunOptions = { agent: 'claude', prompt: 'hi', file: [], env: [], follow: false, json: false };

describe('agentbox task', () => {
  it('builds the request from flags, files read from the host', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-task-'));
    fs.writeFileSync(path.join(dir, 'a.md'), '# a\n');
    const body = taskRequestFromFlags({
      ...base,
      repo: 'https://github.com/o/r',
      effort: 'high',
      file: [`docs/a.md=${path.join(dir, 'a.md')}`],
      env: ['MODE=fast'],
      disallowedTools: 'Bash, WebFetch',
      agentRef: 'reviewer',
      timeout: 60,
    });
    expect(body).toMatchObject({
      prompt: 'hi',
      agent: 'claude',
      effort: 'high',
      gitRepoUrl: 'https://github.com/o/r',
      files: { 'docs/a.md': '# a\n' },
      envVars: { MODE: 'fast' },
      disallowedTools: ['Bash', 'WebFetch'],
      agentDefinition: { ref: 'reviewer' },
      timeoutSeconds: 60,
    });
    fs.rmSync(dir, { recursive: true });
  });

  it.each([
    [{ repo: 'git@github.com:o/r.git' }, /--repo: must be an https/],
    [{ effort: 'extreme' }, /effort/],
    [{ agent: 'aider' }, /agent/],
    [{ prompt: '' }, /prompt/],
    [{ file: ['noequals'] }, /--file takes NAME=PATH/],
    [{ file: ['a=/no/such/file'] }, /^--file \/no\/such\/file: no such file$/],
    [
      { prompt: undefined, promptFile: '/no/such/prompt' },
      /^--prompt-file \/no\/such\/prompt: no such file$/,
    ],
    [{ prompt: undefined, promptFile: os.tmpdir() }, /: is a directory$/],
    [{ prompt: undefined }, /^--prompt or --prompt-file: missing$/],
    [{ box: 'box-1', user: 'u' }, /^--user: give --box or --user, not both$/],
  ])('refuses %j', (flags, message) => {
    expect(() => taskRequestFromFlags({ ...base, ...flags })).toThrow(message);
  });

  it('prints one readable line per event', () => {
    const at = { seq: 1, ts: '2026-01-01T00:00:00.000Z' };
    expect(formatEvent({ ...at, type: 'text', content: 'hello' })).toBe('hello');
    expect(
      formatEvent({ ...at, type: 'tool_use', content: { id: 't', name: 'Bash', input: { command: 'ls' } } }),
    ).toBe('⚙ Bash {"command":"ls"}');
    expect(formatEvent({ ...at, type: 'completion', content: 'done' })).toBe('✔ done');
    expect(formatEvent({ ...at, type: 'error', content: { code: 'timed_out', message: 'too slow' } })).toBe(
      '✖ timed_out: too slow',
    );
  });

  it('without a daemon: exit 125 and one line naming the URL', async () => {
    const r = await cli([
      'task',
      'run',
      '--agent',
      'shell',
      '-p',
      'true',
      '--url',
      'http://127.0.0.1:9',
      '--key',
      'k',
    ]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/^agentbox: cannot reach the daemon at http:\/\/127\.0\.0\.1:9/);
  });

  it('without a key: says how to get one', async () => {
    const r = await cli(['task', 'list'], { env: { AGENTBOX_API_KEY: '' } });
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/no API key/);
  });
});

/** The built CLI's task commands (through @agentbox/sdk) against a daemon on the fake driver. */
describe('agentbox task against a daemon', () => {
  let d: SdkDaemon;
  let flags: string[];
  beforeAll(async () => {
    d = await sdkDaemon();
    flags = ['--url', d.url, '--key', d.admin];
  });
  afterAll(() => d.close());

  it('run --follow prints the events and exits 0; show, events --after, list and cancel', async () => {
    const run = await cli([
      'task',
      'run',
      '--agent',
      'shell',
      '-p',
      'echo one; echo two',
      '--follow',
      ...flags,
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^one\ntwo\n✔ one\ntwo\n$/m);
    const id = /task (\S+) queued/.exec(run.stderr)![1]!;
    expect(run.stderr).toContain(`agentbox: task ${id} succeeded`);

    const show = await cli(['task', 'show', id, ...flags]);
    expect(JSON.parse(show.stdout)).toMatchObject({ id, state: 'succeeded' });
    const events = await cli(['task', 'events', id, '--after', '1', '--json', ...flags]);
    const seqs = events.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { seq: number }).seq);
    expect(seqs[0]).toBe(2);
    expect(seqs).toEqual(seqs.map((_, i) => i + 2));
    expect((await cli(['task', 'list', ...flags])).stdout).toContain(id);

    const queued = await cli(['task', 'run', '--agent', 'shell', '-p', 'sleep 30', '--json', ...flags]);
    const task = JSON.parse(queued.stdout) as Task;
    const cancel = await cli(['task', 'cancel', task.id, ...flags]);
    expect(cancel.stdout).toMatch(new RegExp(`^${task.id} `));

    const removed = await cli(['task', 'rm', id, task.id, ...flags]);
    expect(removed).toMatchObject({ code: 0, stdout: `${id} deleted\n${task.id} deleted\n` });
    expect((await cli(['task', 'show', id, ...flags])).code).toBe(125);
  }, 60_000);

  it('list: a page (--limit), the next with --cursor, every page with --all; a bad cursor is a usage error', async () => {
    const host = d.fake.host;
    const owner = host.keys.authenticate(d.admin)!.keyId;
    const box = 'box-clipages01';
    const ids = Array.from({ length: 3 }, (_, i) => {
      const id = `task-clipage${i}`;
      host.taskStore.insert({
        id,
        ownerKeyId: owner,
        target: 'box',
        boxId: box,
        userId: null,
        agent: 'shell',
        spec: { prompt: id, agent: 'shell', effort: 'low', timeoutSeconds: 10 },
      });
      return id;
    });
    const idsOf = (stdout: string) =>
      stdout
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((line) => line.split(' ')[0]!);
    const first = await cli(['task', 'list', '--box', box, '--limit', '2', ...flags]);
    expect(first.code, first.stderr).toBe(0);
    expect(idsOf(first.stdout)).toHaveLength(2);
    const cursor = /--cursor (\S+) \(or --all\)/.exec(first.stderr)?.[1];
    expect(cursor, first.stderr).toBeDefined();
    const rest = await cli([
      'task',
      'list',
      '--box',
      box,
      '--limit',
      '2',
      '--cursor',
      cursor!,
      '--json',
      ...flags,
    ]);
    expect(rest.code, rest.stderr).toBe(0);
    expect(rest.stderr).toBe('');
    const restIds = rest.stdout
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as Task).id);
    expect([...idsOf(first.stdout), ...restIds].sort()).toEqual(ids);
    const all = await cli(['task', 'list', '--box', box, '--limit', '1', '--all', ...flags]);
    expect(all.code, all.stderr).toBe(0);
    expect(idsOf(all.stdout)).toEqual([...idsOf(first.stdout), ...restIds]);
    expect(all.stderr).toBe('');

    const badLimit = await cli(['task', 'list', '--limit', '0', ...flags]);
    expect(badLimit.code).toBe(2);
    const badCursor = await cli(['task', 'list', '--cursor', 'nope', ...flags]);
    // The daemon's invalid_request, as every refused flag: exit 2.
    expect(badCursor.code).toBe(2);
    expect(badCursor.stderr).toMatch(/^agentbox: .*cursor/);
  }, 60_000);

  it('a failed task exits 1; a daemon error is one line and exit 125', async () => {
    const failed = await cli(['task', 'run', '--agent', 'shell', '-p', 'exit 3', '--follow', ...flags]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/task \S+ failed/);
    const missing = await cli(['task', 'show', 'task-nope', ...flags]);
    expect(missing.code).toBe(125);
    expect(missing.stderr).toMatch(/^agentbox: .*task-nope/);
    const badKey = await cli(['task', 'list', '--url', d.url, '--key', 'abk_wrong']);
    expect(badKey).toMatchObject({ code: 125, stderr: 'agentbox: unknown or revoked API key\n' });
  }, 60_000);
});
