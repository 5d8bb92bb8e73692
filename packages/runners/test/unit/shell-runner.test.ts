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

  it('materializes nothing', () => {
    expect(
      shellRunner.materialize(
        [{ kind: 'rules', namespace: '_global', name: 'r', sha256: 'x', files: { 'RULES.md': 'x' } }],
        ctx,
      ),
    ).toEqual([]);
  });
});
