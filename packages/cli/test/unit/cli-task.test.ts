import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatEvent, taskRequestFromFlags, type TaskRunOptions } from '../../src/commands/task.js';
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
    [{ repo: 'git@github.com:o/r.git' }, /gitRepoUrl: must be an https/],
    [{ effort: 'extreme' }, /effort/],
    [{ agent: 'aider' }, /agent/],
    [{ prompt: '' }, /prompt/],
    [{ file: ['noequals'] }, /--file takes NAME=PATH/],
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
