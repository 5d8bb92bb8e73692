import { describe, expect, it } from 'vitest';
import { TaskSpecSchema, type TaskSpecInput } from '@agentbox/protocol';
import { opencodeRunner, type RunnerContext } from '../../src/index.js';
import { CLEAN_EXIT, fixtureLines, parseAll, types, visible } from '../helpers/fixtures.js';

const ctx: RunnerContext = { cwd: '/workspace', home: '/root' };
const spec = (input: Partial<TaskSpecInput>) =>
  TaskSpecSchema.parse({ agent: 'opencode', prompt: 'Do it.', ...input });

describe('opencode command line', () => {
  it('runs `run --format json` on the default Anthropic model, prompt on stdin, quiet env', () => {
    const cmd = opencodeRunner.command(spec({}), ctx);
    expect(cmd.argv).toEqual([
      'opencode',
      'run',
      '--format',
      'json',
      '--pure',
      '--auto',
      '--model',
      'anthropic/claude-sonnet-4-5',
    ]);
    expect(cmd.stdin).toBe('Do it.');
    expect(cmd.files).toEqual([]);
    expect(cmd.env).toMatchObject({
      OPENCODE_DISABLE_MODELS_FETCH: '1',
      OPENCODE_DISABLE_AUTOUPDATE: '1',
      OPENCODE_DISABLE_SHARE: '1',
      OPENCODE_DISABLE_LSP_DOWNLOAD: '1',
    });
    expect(JSON.parse(cmd.env.OPENCODE_CONFIG_CONTENT!)).toEqual({
      provider: { anthropic: { models: { 'claude-sonnet-4-5': {} } } },
    });
  });

  it('declares the model it runs (any id works without the catalog); effort above low is a variant', () => {
    const cmd = opencodeRunner.command(spec({ model: 'claude-opus-9', effort: 'max' }), ctx);
    expect(cmd.argv).toEqual(
      expect.arrayContaining(['--model', 'anthropic/claude-opus-9', '--variant', 'max']),
    );
    const other = opencodeRunner.command(spec({ model: 'openai/gpt-x' }), ctx);
    expect(JSON.parse(other.env.OPENCODE_CONFIG_CONTENT!)).toEqual({
      provider: { openai: { models: { 'gpt-x': {} } } },
    });
  });

  it('tool lists become the tools switch map, lower case, patterns dropped', () => {
    const cmd = opencodeRunner.command(
      spec({ allowedTools: ['Read', 'Bash(git *)'], disallowedTools: ['WebFetch'] }),
      ctx,
    );
    expect(JSON.parse(cmd.env.OPENCODE_CONFIG_CONTENT!).tools).toEqual({
      '*': false,
      read: true,
      bash: true,
      webfetch: false,
    });
  });

  it('runs as an agent definition from ~/.config/opencode/agents; resumes with --session', () => {
    const cmd = opencodeRunner.command(spec({}), {
      ...ctx,
      resumeSessionId: 'ses_abc',
      agentDefinition: {
        name: 'rev',
        description: 'Reviews',
        systemPrompt: 'Review.',
        disallowedTools: ['Bash'],
        model: 'claude-haiku-4-5',
      },
    });
    expect(cmd.argv).toEqual(
      expect.arrayContaining([
        '--agent',
        'rev',
        '--session',
        'ses_abc',
        '--model',
        'anthropic/claude-haiku-4-5',
      ]),
    );
    expect(cmd.files).toEqual([
      {
        path: '/root/.config/opencode/agents/rev.md',
        content:
          '---\ndescription: "Reviews"\nmode: all\nmodel: "anthropic/claude-haiku-4-5"\ntools:\n  "bash": false\n---\nReview.\n',
      },
    ]);
  });

  it('replays context as a transcript in the prompt', () => {
    const cmd = opencodeRunner.command(
      spec({ context: [{ role: 'user', content: 'Remember PAPAYA.' }] }),
      ctx,
    );
    expect(cmd.stdin).toContain('<user>\nRemember PAPAYA.\n</user>');
  });
});

// Fixtures: stdout of the real OpenCode 1.18.33 against the scripted fake Messages API.
describe('opencode JSON events → task events', () => {
  it('a two-turn run: text, write and bash as tool_use/tool_result pairs, text, completion', () => {
    const lines = fixtureLines('opencode/two-turn.jsonl');
    const { events, outcome } = parseAll(opencodeRunner.parser(), lines);
    expect(events[0]!.content).toEqual({ state: 'started', sessionId: 'ses_df68c3fb6ffeXv8yOt9rSM1y7h' });
    expect(types(visible(events))).toEqual([
      'text',
      'tool_use',
      'tool_result',
      'tool_use',
      'tool_result',
      'text',
      'completion',
    ]);
    const [, write, written, bash, ran] = visible(events);
    expect(write!.content).toEqual({
      id: 'toolu_fake_0_1',
      name: 'write',
      input: { filePath: '/workspace/hello.txt', content: 'hello from the fake model\n' },
    });
    expect(written!.content).toEqual({
      toolUseId: 'toolu_fake_0_1',
      content: 'Wrote file successfully.',
      isError: false,
    });
    expect(bash!.content).toMatchObject({
      name: 'bash',
      input: { command: 'cat hello.txt && echo bash-ran' },
    });
    expect(ran!.content).toEqual({
      toolUseId: 'toolu_fake_1_0',
      content: 'hello from the fake model\nbash-ran\n',
      isError: false,
    });
    expect(events.at(-1)!.content).toBe('Done: hello.txt exists.');
    // each line's raw is on its first event; the completion comes from the exit, without one
    expect(events.filter((e) => e.raw !== undefined).map((e) => e.raw)).toEqual(lines);
    expect(outcome).toMatchObject({
      ok: true,
      sessionId: 'ses_df68c3fb6ffeXv8yOt9rSM1y7h',
      numTurns: 3,
      text: 'Done: hello.txt exists.',
      error: null,
    });
    expect(outcome.costUsd).toBeGreaterThan(0);
    expect(outcome.usage).toMatchObject({
      input: expect.any(Number) as number,
      output: expect.any(Number) as number,
    });
  });

  it('a failed tool is an error tool_result', () => {
    const { events, outcome } = parseAll(opencodeRunner.parser(), fixtureLines('opencode/tool-error.jsonl'));
    expect(events.find((e) => e.type === 'tool_result')!.content).toEqual({
      toolUseId: 'toolu_fake_0_0',
      content: 'File not found: /workspace/missing.txt',
      isError: true,
    });
    expect(outcome.ok).toBe(true);
  });

  it('an API error is error api_error with the status, and no completion after it', () => {
    const { events, outcome } = parseAll(opencodeRunner.parser(), fixtureLines('opencode/api-error.jsonl'), {
      ...CLEAN_EXIT,
      exitCode: 1,
    });
    expect(types(events)).toEqual(['status', 'error:api_error']);
    expect(events[1]!.content).toMatchObject({ message: 'fake refusal', status: 400, name: 'APIError' });
    expect(outcome).toMatchObject({ ok: false, error: { code: 'api_error', message: 'fake refusal' } });
  });

  it('a non-zero exit without an error line is no_result; a timeout is timed_out', () => {
    const lines = fixtureLines('opencode/two-turn.jsonl').slice(0, 3);
    const crashed = parseAll(opencodeRunner.parser(), lines, {
      exitCode: 2,
      signal: null,
      timedOut: false,
      stderrTail: 'panic',
    });
    expect(types(crashed.events).at(-1)).toBe('error:no_result');
    const slow = parseAll(opencodeRunner.parser(), lines, {
      exitCode: null,
      signal: 'SIGKILL',
      timedOut: true,
      stderrTail: '',
    });
    expect(slow.outcome.error?.code).toBe('timed_out');
  });
});
