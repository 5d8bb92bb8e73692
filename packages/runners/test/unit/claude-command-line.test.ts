import { describe, expect, it } from 'vitest';
import { TaskSpecSchema, type TaskSpecInput } from '@agentbox/protocol';
import { claudeRunner, type RunnerContext } from '../../src/index.js';
import { builtinToolNames, claudeCommand } from '../../src/claude/claude-command.js';

const ctx: RunnerContext = { cwd: '/workspace', home: '/root' };
const spec = (input: Partial<TaskSpecInput>) => TaskSpecSchema.parse({ prompt: 'Do it.', ...input });

describe('claude command line', () => {
  it('runs -p in stream-json mode with the prompt on stdin and the sandbox env', () => {
    const cmd = claudeRunner.command(spec({}), ctx);
    expect(cmd.argv).toEqual([
      'claude',
      '-p',
      '--output-format',
      'stream-json',
      '--verbose',
      '--dangerously-skip-permissions',
      '--effort',
      'low',
    ]);
    expect(cmd.stdin).toBe('Do it.');
    expect(cmd.cwd).toBe('/workspace');
    expect(cmd.files).toEqual([]);
    expect(cmd.env).toEqual({
      IS_SANDBOX: '1',
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
      DISABLE_AUTOUPDATER: '1',
    });
  });

  it('never puts the prompt in argv: a 1 MB prompt and one that looks like a flag go through stdin', () => {
    const big = `Summarize: ${'x'.repeat(999_000)}`;
    const cmd = claudeRunner.command(spec({ prompt: big }), ctx);
    expect(cmd.stdin).toBe(big);
    expect(cmd.argv.join(' ').length).toBeLessThan(200);
    expect(claudeRunner.command(spec({ prompt: '--help me' }), ctx).argv).not.toContain('--help me');
  });

  it('passes model, effort, budget, and the spec env over its own', () => {
    const cmd = claudeRunner.command(
      spec({
        model: 'claude-sonnet-4-5',
        effort: 'xhigh',
        maxSpendUsd: 2.5,
        envVars: { FOO: 'bar', DISABLE_AUTOUPDATER: '0' },
      }),
      ctx,
    );
    expect(cmd.argv).toEqual(expect.arrayContaining(['--model', 'claude-sonnet-4-5', '--effort', 'xhigh']));
    expect(
      cmd.argv.slice(cmd.argv.indexOf('--max-budget-usd'), cmd.argv.indexOf('--max-budget-usd') + 2),
    ).toEqual(['--max-budget-usd', '2.5']);
    expect(cmd.env).toMatchObject({ FOO: 'bar', DISABLE_AUTOUPDATER: '0', IS_SANDBOX: '1' });
  });

  it('narrows the tool set to an allow list (--tools) and pre-approves it; deny lists merge with the agent’s', () => {
    const cmd = claudeRunner.command(
      spec({ allowedTools: ['Read', 'Bash(git *)', 'mcp__gh__issues'], disallowedTools: ['WebFetch'] }),
      { ...ctx, agentDefinition: { name: 'rev', disallowedTools: ['Bash', 'WebFetch'] } },
    );
    expect(cmd.argv).toContain('--tools=Read,Bash');
    expect(cmd.argv).toContain('--allowedTools=Read,Bash(git *),mcp__gh__issues');
    expect(cmd.argv).toContain('--disallowedTools=WebFetch,Bash');
  });

  it('an allow list of MCP tools only turns every built-in tool off', () => {
    expect(builtinToolNames(['mcp__a__b'])).toEqual([]);
    expect(claudeRunner.command(spec({ allowedTools: ['mcp__a__b'] }), ctx).argv).toContain('--tools=');
  });

  it('runs as the agent definition: its file under ~/.claude/agents, --agent, max tokens in the env', () => {
    const cmd = claudeRunner.command(spec({}), {
      ...ctx,
      agentDefinition: { name: 'reviewer', systemPrompt: 'You review.', tools: ['Read'], maxTokens: 4000 },
    });
    expect(cmd.argv).toEqual(expect.arrayContaining(['--agent', 'reviewer']));
    expect(cmd.env.CLAUDE_CODE_MAX_OUTPUT_TOKENS).toBe('4000');
    expect(cmd.files).toEqual([
      {
        path: '/root/.claude/agents/reviewer.md',
        content: '---\nname: "reviewer"\ndescription: "Agent reviewer"\ntools: ["Read"]\n---\nYou review.\n',
      },
    ]);
  });

  it('resumes a session by id and then ignores any context', () => {
    const cmd = claudeRunner.command(spec({ context: [{ role: 'user', content: 'old' }] }), {
      ...ctx,
      resumeSessionId: '4a1b2c3d-0000-4000-8000-000000000001',
    });
    expect(cmd.argv.slice(-2)).toEqual(['--resume', '4a1b2c3d-0000-4000-8000-000000000001']);
    expect(cmd.files).toEqual([]);
    expect(cmd.stdin).toBe('Do it.');
  });

  it('a context that is only user text goes in front of the prompt, with no session file', () => {
    const cmd = claudeCommand(spec({ context: [{ role: 'user', content: 'Earlier question.' }] }), ctx);
    expect(cmd.files).toEqual([]);
    expect(cmd.argv).not.toContain('--resume');
    expect(cmd.stdin).toBe('Earlier question.\n\nDo it.');
  });
});
