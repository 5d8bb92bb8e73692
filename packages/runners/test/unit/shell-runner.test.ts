import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { TaskSpecSchema } from '@agentbox/protocol';
import { shellRunner } from '../../src/index.js';
import { SHELL_ARGV_MAX, shellCommand } from '../../src/shell/shell-runner.js';
import { parseAll, types } from '../helpers/fixtures.js';

const ctx = { cwd: '/workspace', home: '/root' };

describe('shell runner', () => {
  it('runs a script as bash -c in the workspace, with the spec env', () => {
    const cmd = shellRunner.command(
      TaskSpecSchema.parse({ agent: 'shell', prompt: 'echo hi', envVars: { A: '1' } }),
      ctx,
    );
    expect(cmd).toEqual({ argv: ['bash', '-c', 'echo hi'], env: { A: '1' }, cwd: '/workspace', files: [] });
  });

  it('a script past the argv limit is written to a file and run from there', () => {
    const script = `echo start\n${'# padding\n'.repeat(SHELL_ARGV_MAX / 10 + 1)}`;
    const spec = TaskSpecSchema.parse({ agent: 'shell', prompt: script });
    const cmd = shellCommand(spec, ctx, { newScriptName: () => 'task-1.sh' });
    expect(cmd.argv).toEqual(['bash', '/root/.agentbox/scripts/task-1.sh']);
    expect(cmd.files).toEqual([
      { path: '/root/.agentbox/scripts/task-1.sh', content: spec.prompt, mode: 0o700 },
    ]);
    expect(cmd.stdin).toBeUndefined();
  });

  it('every stdout line is a text event; exit 0 completes with the output', () => {
    const { events, outcome } = parseAll(shellRunner.parser(), ['one', '', '{"type":"result"}']);
    expect(events).toEqual([
      { type: 'text', content: 'one', raw: 'one' },
      { type: 'text', content: '', raw: '' },
      { type: 'text', content: '{"type":"result"}', raw: '{"type":"result"}' },
      { type: 'completion', content: 'one\n\n{"type":"result"}\n' },
    ]);
    expect(outcome).toMatchObject({
      ok: true,
      text: 'one\n\n{"type":"result"}\n',
      error: null,
      sessionId: null,
    });
  });

  it('a non-zero exit is error exit_nonzero with the code and stderr; a timeout is timed_out', () => {
    const failed = parseAll(shellRunner.parser(), ['partial'], {
      exitCode: 3,
      signal: null,
      timedOut: false,
      stderrTail: 'oops\n',
    });
    expect(failed.events.at(-1)).toEqual({
      type: 'error',
      content: { code: 'exit_nonzero', message: 'the script exited with code 3: oops', exitCode: 3 },
    });
    expect(failed.outcome).toMatchObject({ ok: false, text: 'partial\n', error: { code: 'exit_nonzero' } });
    const slow = parseAll(shellRunner.parser(), [], {
      exitCode: null,
      signal: 'SIGKILL',
      timedOut: true,
      stderrTail: '',
    });
    expect(types(slow.events)).toEqual(['error:timed_out']);
  });

  it('both forms run under a real bash: output lines, exit status, env', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shell-runner-'));
    try {
      const run = (prompt: string) => {
        const cmd = shellRunner.command(
          TaskSpecSchema.parse({ agent: 'shell', prompt, envVars: { WHO: 'box' } }),
          { cwd: dir, home: dir },
        );
        for (const file of cmd.files) {
          fs.mkdirSync(path.dirname(file.path), { recursive: true });
          fs.writeFileSync(file.path, file.content, { mode: file.mode });
        }
        const out = spawnSync(cmd.argv[0]!, cmd.argv.slice(1), {
          cwd: cmd.cwd,
          env: { ...process.env, ...cmd.env },
          encoding: 'utf8',
        });
        const lines = out.stdout.split('\n').slice(0, -1);
        return parseAll(shellRunner.parser(), lines, {
          exitCode: out.status,
          signal: null,
          timedOut: false,
          stderrTail: out.stderr,
        });
      };
      expect(run('echo "hi $WHO"; pwd').events.map((e) => e.content)).toEqual([
        'hi box',
        dir,
        `hi box\n${dir}\n`,
      ]);
      const long = run(`echo first\n${'true # pad\n'.repeat(SHELL_ARGV_MAX / 10)}echo last >&2\nexit 4`);
      expect(long.events.map((e) => e.type)).toEqual(['text', 'error']);
      expect(long.outcome.error).toEqual({
        code: 'exit_nonzero',
        message: 'the script exited with code 4: last',
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('materializes nothing', () => {
    expect(
      shellRunner.materialize(
        [{ kind: 'rules', namespace: '_global', name: 'r', sha256: 'x', files: { 'RULES.md': 'x' } }],
        ctx,
      ),
    ).toEqual([]);
  });
});
