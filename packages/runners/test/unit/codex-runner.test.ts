import { describe, expect, it } from 'vitest';
import { TaskSpecSchema, type TaskSpecInput } from '@agentbox/protocol';
import { codexRunner, type RunnerContext } from '../../src/index.js';
import { codexCommand } from '../../src/codex/codex-command.js';
import { CLEAN_EXIT, fixtureLines, parseAll, types } from '../helpers/fixtures.js';

const ctx: RunnerContext = { cwd: '/workspace', home: '/root' };
const spec = (input: Partial<TaskSpecInput>) =>
  TaskSpecSchema.parse({ agent: 'codex', prompt: 'Do it.', ...input });
const command = (input: Partial<TaskSpecInput>, c: RunnerContext = ctx) =>
  codexCommand(spec(input), c, { newProfileName: () => 'agentbox-test' });

describe('codex command line', () => {
  it('runs exec --json with a per-task profile and the prompt on stdin', () => {
    const cmd = command({});
    expect(cmd.argv).toEqual([
      'codex',
      'exec',
      '--json',
      '--skip-git-repo-check',
      '--dangerously-bypass-approvals-and-sandbox',
      '--profile',
      'agentbox-test',
      '-',
    ]);
    expect(cmd.stdin).toBe('Do it.');
    expect(cmd.env).toEqual({});
    expect(cmd.files.map((f) => f.path)).toEqual(['/root/.codex/agentbox-test.config.toml']);
  });

  it('the profile: OpenAI’s endpoint without WebSockets, key from OPENAI_API_KEY, effort, quiet startup', () => {
    const profile = command({ effort: 'high', model: 'gpt-5.1-codex' }).files[0]!.content;
    expect(profile).toBe(
      [
        'model_provider = "agentbox-openai"',
        'model_reasoning_effort = "high"',
        'model = "gpt-5.1-codex"',
        'check_for_update_on_startup = false',
        '',
        '[features]',
        'plugins = false',
        'apps = false',
        'remote_plugin = false',
        '',
        '[analytics]',
        'enabled = false',
        '',
        '[model_providers.agentbox-openai]',
        'name = "OpenAI"',
        'base_url = "https://api.openai.com/v1"',
        'env_key = "OPENAI_API_KEY"',
        'wire_api = "responses"',
        'supports_websockets = false',
        '',
      ].join('\n'),
    );
  });

  it('an agent definition’s prompt becomes developer instructions (TOML-escaped), its model the default', () => {
    const profile = command(
      {},
      { ...ctx, agentDefinition: { name: 'rev', systemPrompt: 'Be "strict".\nAlways.', model: 'gpt-x' } },
    ).files[0]!.content;
    expect(profile).toContain('developer_instructions = "Be \\"strict\\".\\nAlways."');
    expect(profile).toContain('model = "gpt-x"');
  });

  it('resumes a thread with `exec resume <id> -`; otherwise replays context as a transcript', () => {
    const resumed = command({}, { ...ctx, resumeSessionId: '01a20976-14c7-7e23-9492-aa7af9cb78c6' });
    expect(resumed.argv.slice(-3)).toEqual(['resume', '01a20976-14c7-7e23-9492-aa7af9cb78c6', '-']);
    const replayed = command({
      context: [
        { role: 'user', content: 'Remember PAPAYA.' },
        { role: 'assistant', content: 'Noted.' },
      ],
    });
    expect(replayed.stdin).toContain('<user>\nRemember PAPAYA.\n</user>');
    expect(replayed.stdin!.endsWith('Do it.')).toBe(true);
  });

  it('gives each task its own profile file', () => {
    const a = codexRunner.command(spec({}), ctx).files[0]!.path;
    const b = codexRunner.command(spec({}), ctx).files[0]!.path;
    expect(a).toMatch(/^\/root\/\.codex\/agentbox-[0-9a-f]{8}\.config\.toml$/);
    expect(a).not.toBe(b);
  });
});

// Fixtures: stdout of the real Codex 0.169.0 against the scripted fake Responses API.
describe('codex JSONL → task events', () => {
  it('a two-turn run: file_change and command_execution as tool_use/tool_result pairs, then completion', () => {
    const lines = fixtureLines('codex/two-turn.jsonl');
    const { events, outcome } = parseAll(codexRunner.parser(), lines);
    expect(types(events)).toEqual([
      'status',
      'status',
      'text',
      'tool_use',
      'tool_result',
      'tool_use',
      'tool_result',
      'text',
      'completion',
    ]);
    expect(events[0]!.content).toEqual({
      state: 'started',
      sessionId: '01a20976-14c7-7e23-9492-aa7af9cb78c6',
    });
    expect(events[3]!.content).toEqual({
      id: 'item_1',
      name: 'file_change',
      input: { changes: [{ path: '/workspace/hello.txt', kind: 'add' }] },
    });
    expect(events[4]!.content).toEqual({
      toolUseId: 'item_1',
      content: 'add /workspace/hello.txt',
      isError: false,
    });
    expect(events[5]!.content).toEqual({
      id: 'item_2',
      name: 'command_execution',
      input: { command: "/bin/bash -c 'cat hello.txt && echo bash-ran'" },
    });
    expect(events[6]!.content).toEqual({
      toolUseId: 'item_2',
      content: 'hello from the fake model\nbash-ran\n',
      isError: false,
      exitCode: 0,
    });
    expect(events.at(-1)!.content).toBe('Done: hello.txt exists.');
    expect(events.map((e) => e.raw)).toEqual(lines);
    expect(outcome).toEqual({
      ok: true,
      sessionId: '01a20976-14c7-7e23-9492-aa7af9cb78c6',
      numTurns: 1,
      costUsd: null,
      usage: expect.objectContaining({ input_tokens: 50430, output_tokens: 206 }) as Record<string, unknown>,
      text: 'Done: hello.txt exists.',
      error: null,
    });
  });

  it('an MCP call: tool_use mcp__server__tool with its arguments, the text result joined', () => {
    const { events } = parseAll(codexRunner.parser(), fixtureLines('codex/mcp-call.jsonl'));
    expect(
      events.filter((e) => e.type === 'tool_use' || e.type === 'tool_result').map((e) => e.content),
    ).toEqual([
      { id: 'item_0', name: 'mcp__echo__echo_fixture', input: { text: 'hi' } },
      { toolUseId: 'item_0', content: 'echo: {"text":"hi"}', isError: false },
    ]);
  });

  it('a failing command is an error tool_result with its exit code', () => {
    const { events, outcome } = parseAll(codexRunner.parser(), fixtureLines('codex/command-fails.jsonl'));
    expect(events.find((e) => e.type === 'tool_result')!.content).toMatchObject({
      isError: true,
      exitCode: 3,
    });
    expect(outcome.ok).toBe(true);
  });

  it('turn.failed is an error agent_error; the API error before it is only a warning', () => {
    const { events, outcome } = parseAll(codexRunner.parser(), fixtureLines('codex/turn-failed.jsonl'), {
      ...CLEAN_EXIT,
      exitCode: 1,
    });
    expect(types(events)).toEqual(['status', 'status', 'status', 'error:agent_error']);
    expect(events[2]!.content).toMatchObject({
      state: 'warning',
      message: expect.stringContaining('fake refusal') as string,
    });
    expect(outcome).toMatchObject({
      ok: false,
      error: { code: 'agent_error', message: expect.stringContaining('fake refusal') as string },
    });
  });

  it('a non-fatal error item (unknown model metadata) is a warning status', () => {
    const { events, outcome } = parseAll(
      codexRunner.parser(),
      fixtureLines('codex/unknown-model-notice.jsonl'),
    );
    expect(events[1]!.content).toMatchObject({
      state: 'warning',
      message: expect.stringContaining('gpt-5.1-codex') as string,
    });
    expect(outcome.ok).toBe(true);
  });

  it('an exit before turn.completed is no_result; garbage lines are kept as unparsed', () => {
    const parser = codexRunner.parser();
    expect(parser.line('WARNING: proceeding')).toEqual([
      { type: 'status', content: { state: 'unparsed' }, raw: 'WARNING: proceeding' },
    ]);
    const { events, outcome } = parseAll(parser, fixtureLines('codex/two-turn.jsonl').slice(0, 4), {
      exitCode: null,
      signal: 'SIGKILL',
      timedOut: false,
      stderrTail: '',
    });
    expect(events.at(-1)!.content).toMatchObject({
      code: 'no_result',
      message: 'codex was killed by SIGKILL before its final result',
    });
    expect(outcome.ok).toBe(false);
  });

  it('a tool item that completes without a start gets both events', () => {
    const line = JSON.stringify({
      type: 'item.completed',
      item: {
        id: 'item_9',
        type: 'command_execution',
        command: 'ls',
        aggregated_output: 'x',
        exit_code: 0,
        status: 'completed',
      },
    });
    expect(types(codexRunner.parser().line(line))).toEqual(['tool_use', 'tool_result']);
  });
});
