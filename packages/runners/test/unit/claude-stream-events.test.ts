import { describe, expect, it } from 'vitest';
import { claudeRunner } from '../../src/index.js';
import { MAX_PARSED_LINE_CHARS } from '../../src/shared.js';
import { CLEAN_EXIT, fixtureLines, parseAll, types } from '../helpers/fixtures.js';

// Fixtures: stdout of the real Claude Code 2.1.330 against the scripted fake Messages API (README).
describe('claude stream-json → task events', () => {
  it('a two-turn run with Write and Bash: started, text, tool_use/tool_result pairs, text, completion', () => {
    const lines = fixtureLines('claude/two-turn.jsonl');
    const { events, outcome } = parseAll(claudeRunner.parser(), lines);
    expect(types(events)).toEqual([
      'status',
      'text',
      'tool_use',
      'tool_result',
      'tool_use',
      'tool_result',
      'text',
      'completion',
    ]);
    expect(events[0]!.content).toMatchObject({
      state: 'started',
      sessionId: '532019b0-0e14-461f-8264-aa4a898004e0',
      model: 'claude-opus-5-5',
      cwd: '/workspace',
      version: '2.1.330',
    });
    expect((events[0]!.content as { tools: string[] }).tools).toContain('Bash');
    expect(events[1]!.content).toBe('I will create the file.');
    expect(events[2]!.content).toEqual({
      id: 'toolu_fake_0_1',
      name: 'Write',
      input: { file_path: '/workspace/hello.txt', content: 'hello from the fake model\n' },
    });
    expect(events[3]!.content).toMatchObject({ toolUseId: 'toolu_fake_0_1', isError: false });
    expect(events[4]!.content).toMatchObject({
      name: 'Bash',
      input: { command: 'cat hello.txt && echo bash-ran' },
    });
    expect(events[5]!.content).toEqual({
      toolUseId: 'toolu_fake_1_0',
      content: 'hello from the fake model\nbash-ran',
      isError: false,
    });
    expect(events[7]!.content).toBe('Done: hello.txt exists.');
    // every line is kept, once, on the first event made from it
    expect(events.map((e) => e.raw)).toEqual(lines);
    expect(outcome).toEqual({
      ok: true,
      sessionId: '532019b0-0e14-461f-8264-aa4a898004e0',
      numTurns: 3,
      costUsd: expect.any(Number) as number,
      usage: expect.objectContaining({ input_tokens: expect.any(Number) as number }) as Record<
        string,
        unknown
      >,
      text: 'Done: hello.txt exists.',
      error: null,
    });
    expect(outcome.costUsd).toBeGreaterThan(0);
  });

  it('a resumed session reports the same session id', () => {
    const { events, outcome } = parseAll(claudeRunner.parser(), fixtureLines('claude/resumed.jsonl'));
    expect(types(events)).toEqual(['status', 'text', 'completion']);
    expect(outcome.ok).toBe(true);
    expect(outcome.sessionId).toBe((events[0]!.content as { sessionId: string }).sessionId);
  });

  it('a denied tool call comes back as an error tool_result and the run still completes', () => {
    const { events, outcome } = parseAll(
      claudeRunner.parser(),
      fixtureLines('claude/persona-denied-bash.jsonl'),
    );
    expect(types(events)).toEqual(['status', 'tool_use', 'tool_result', 'text', 'completion']);
    expect((events[0]!.content as { tools: string[] }).tools).not.toContain('Bash');
    expect(events[2]!.content).toMatchObject({ isError: true });
    expect(outcome.ok).toBe(true);
  });

  it('the spend limit ends the run: error budget_exceeded, outcome not ok with the cost so far', () => {
    const { events, outcome } = parseAll(
      claudeRunner.parser(),
      fixtureLines('claude/budget-exceeded.jsonl'),
      {
        ...CLEAN_EXIT,
        exitCode: 1,
      },
    );
    expect(types(events)).toEqual(['status', 'text', 'tool_use', 'error:budget_exceeded']);
    expect(events[3]!.content).toMatchObject({
      subtype: 'error_max_budget_usd',
      message: 'Reached maximum budget ($0.01)',
    });
    expect(outcome).toMatchObject({ ok: false, error: { code: 'budget_exceeded' }, numTurns: 1 });
    expect(outcome.costUsd).toBeGreaterThan(0.01);
  });

  it('a model API error: api_error as it happens, then agent_error from the result', () => {
    const { events, outcome } = parseAll(claudeRunner.parser(), fixtureLines('claude/api-error.jsonl'), {
      ...CLEAN_EXIT,
      exitCode: 1,
    });
    expect(types(events)).toEqual(['status', 'error:api_error', 'error:agent_error']);
    expect(events[1]!.content).toMatchObject({
      status: 529,
      message: expect.stringContaining('529') as string,
    });
    expect(outcome).toMatchObject({ ok: false, error: { code: 'agent_error' } });
  });

  it('resuming a session the box does not have: error agent_error naming the session', () => {
    const { events, outcome } = parseAll(
      claudeRunner.parser(),
      fixtureLines('claude/unknown-session.jsonl'),
      {
        ...CLEAN_EXIT,
        exitCode: 1,
      },
    );
    expect(events).toHaveLength(1);
    expect(events[0]!.content).toEqual({
      code: 'agent_error',
      subtype: 'error_during_execution',
      message: 'No conversation found with session ID: 99999999-2222-4333-8444-555555555555',
    });
    expect(outcome).toMatchObject({ ok: false, numTurns: 0, costUsd: 0, text: null });
  });

  it('keeps lines it cannot read: non-JSON → status unparsed with the raw line; blank lines vanish', () => {
    const parser = claudeRunner.parser();
    expect(parser.line('')).toEqual([]);
    expect(parser.line('Warning: something odd')).toEqual([
      { type: 'status', content: { state: 'unparsed' }, raw: 'Warning: something odd' },
    ]);
    expect(parser.line('{"type":"assistant","message":{"content":[{"type":"text","text":"cut')).toEqual([
      {
        type: 'status',
        content: { state: 'unparsed' },
        raw: '{"type":"assistant","message":{"content":[{"type":"text","text":"cut',
      },
    ]);
    expect(parser.line('[1,2]')[0]!.content).toEqual({ state: 'unparsed' });
    // Past MAX_PARSED_LINE_CHARS a line is not parsed at all (the guest's megabytes of nesting).
    const huge = `{"type":"assistant","message":{"content":[{"type":"text","text":"${'x'.repeat(MAX_PARSED_LINE_CHARS)}"}]}}`;
    expect(parser.line(huge)).toEqual([{ type: 'status', content: { state: 'unparsed' }, raw: huge }]);
    expect(parser.line('{"type":"rate_limit_event","x":1}')).toEqual([
      {
        type: 'status',
        content: { state: 'progress', kind: 'rate_limit_event' },
        raw: '{"type":"rate_limit_event","x":1}',
      },
    ]);
    expect(parser.line('{"type":"system","subtype":"compact_boundary"}')[0]!.content).toEqual({
      state: 'progress',
      kind: 'system/compact_boundary',
    });
  });

  it('an exit without a result line is an error no_result carrying the stderr tail', () => {
    const parser = claudeRunner.parser();
    const lines = fixtureLines('claude/two-turn.jsonl').slice(0, 3);
    const { events, outcome } = parseAll(parser, lines, {
      exitCode: 1,
      signal: null,
      timedOut: false,
      stderrTail: 'boom\nError: invalid flag',
    });
    expect(events.at(-1)).toEqual({
      type: 'error',
      content: {
        code: 'no_result',
        message: 'claude exited with code 1 before its final result: boom\nError: invalid flag',
        exitCode: 1,
        signal: null,
      },
    });
    expect(outcome).toMatchObject({
      ok: false,
      sessionId: '532019b0-0e14-461f-8264-aa4a898004e0',
      error: { code: 'no_result' },
    });
  });

  it('a timeout is an error timed_out, even after a result line', () => {
    const timedOut = { exitCode: null, signal: 'SIGKILL', timedOut: true, stderrTail: '' };
    const early = parseAll(
      claudeRunner.parser(),
      fixtureLines('claude/two-turn.jsonl').slice(0, 2),
      timedOut,
    );
    expect(types(early.events).at(-1)).toBe('error:timed_out');
    expect(early.outcome.error?.code).toBe('timed_out');
    const late = parseAll(claudeRunner.parser(), fixtureLines('claude/two-turn.jsonl'), timedOut);
    expect(late.outcome).toMatchObject({ ok: false, error: { code: 'timed_out' } });
  });

  it('tool results given as content blocks are joined when they are all text', () => {
    const parser = claudeRunner.parser();
    const line = JSON.stringify({
      type: 'user',
      message: {
        role: 'user',
        content: [
          {
            type: 'tool_result',
            tool_use_id: 't1',
            content: [
              { type: 'text', text: 'a' },
              { type: 'text', text: 'b' },
            ],
          },
          {
            type: 'tool_result',
            tool_use_id: 't2',
            content: [{ type: 'image', source: {} }],
            is_error: true,
          },
        ],
      },
    });
    const events = parser.line(line);
    expect(events.map((e) => e.content)).toEqual([
      { toolUseId: 't1', content: 'a\nb', isError: false },
      { toolUseId: 't2', content: [{ type: 'image', source: {} }], isError: true },
    ]);
    expect(events[0]!.raw).toBe(line);
    expect(events[1]!.raw).toBeUndefined();
  });
});
