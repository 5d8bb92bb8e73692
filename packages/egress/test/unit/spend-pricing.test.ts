import { describe, expect, it } from 'vitest';
import { ChatRequestReader, chatRequestUnpriced } from '../../src/chat-request-check.js';
import {
  ChatCompletionsUsageReader,
  classifyModelCall,
  costOfCall,
  MAX_JSON_ANSWER_BYTES,
  MessagesUsageReader,
  NO_USAGE,
  ResponsesUsageReader,
  priceOfModel,
  UNKNOWN_MODEL_PRICE,
} from '../../src/spend.js';

/** The pure parts of host-side spend metering: prices, which calls spend, reading `usage`. */

const sse = (events: Record<string, unknown>[]): string =>
  events.map((e) => `event: ${String(e.type)}\ndata: ${JSON.stringify(e)}\n\n`).join('');

const start = (model: string, usage: Record<string, unknown>) => ({
  type: 'message_start',
  message: { id: 'msg_1', type: 'message', role: 'assistant', model, content: [], usage },
});
const textDelta = (text: string) => ({
  type: 'content_block_delta',
  index: 0,
  delta: { type: 'text_delta', text },
});
const delta = (usage: Record<string, unknown>) => ({
  type: 'message_delta',
  delta: { stop_reason: 'end_turn' },
  usage,
});

describe('priceOfModel', () => {
  it.each([
    ['claude-opus-4-1-20250805', 15, 75],
    ['claude-opus-4-20250514', 15, 75],
    ['claude-opus-4-0', 15, 75],
    ['claude-3-opus-20240229', 15, 75],
    ['claude-opus-4-5-20251101', 5, 25],
    ['claude-opus-4-7', 5, 25],
    ['claude-opus-4-6[1m]', 5, 25],
    ['claude-sonnet-4-5-20250929', 3, 15],
    ['claude-3-7-sonnet-latest', 3, 15],
    ['claude-sonnet-5', 2, 10],
    ['claude-haiku-4-5-20251001', 1, 5],
    ['claude-3-5-haiku-latest', 0.8, 4],
    ['claude-3-haiku-20240307', 0.25, 1.25],
    ['claude-haiku-5-5', 0.5, 2.5],
    ['claude-fable-5-1', 10, 50],
    ['CLAUDE-SONNET-4-6', 3, 15],
  ])('%s costs $%s in / $%s out per million tokens', (model, input, output) => {
    expect(priceOfModel(model)).toEqual({ input, output });
  });

  it("an operator's prices come first, the longest prefix winning; the rest from the table", () => {
    const overrides = new Map([
      ['claude-opus', { input: 1, output: 2 }],
      ['claude-opus-9', { input: 3, output: 4 }],
      ['gpt-', { input: 5, output: 6 }],
    ]);
    expect(priceOfModel('claude-opus-9-20270101', overrides)).toEqual({ input: 3, output: 4 });
    expect(priceOfModel('Claude-Opus-4-1', overrides)).toEqual({ input: 1, output: 2 });
    expect(priceOfModel('gpt-9', overrides)).toEqual({ input: 5, output: 6 });
    expect(priceOfModel('claude-sonnet-4-5', overrides)).toEqual({ input: 3, output: 15 });
    const usage = { ...NO_USAGE, inputTokens: 100_000, outputTokens: 100_000 };
    expect(costOfCall('claude-opus-9', usage, overrides)).toBeCloseTo(0.7, 12);
  });

  it.each([
    ['gpt-5-codex', 1.25, 10],
    ['gpt-5.1-codex-max', 1.25, 10],
    ['gpt-5.1-codex-mini', 0.25, 2],
    ['gpt-5-nano-2025-08-07', 0.05, 0.4],
    ['gpt-5.3-codex', 1.75, 14],
    ['gpt-5.5', 5, 30],
    ['gpt-5-pro', 15, 120],
    ['o1-pro', 150, 600],
    ['gpt-4.1-mini', 0.4, 1.6],
    ['o4-mini', 1.1, 4.4],
    ['gpt-next', 30, 180],
  ])('OpenAI %s costs $%s in / $%s out per million tokens', (model, input, output) => {
    expect(priceOfModel(model, undefined, 'openai')).toMatchObject({ input, output });
  });

  it('OpenAI: cached prompt tokens at the cached rate, no long-context surcharge', () => {
    const usage = { ...NO_USAGE, inputTokens: 100_000, cacheReadTokens: 900_000, outputTokens: 1000 };
    expect(costOfCall('gpt-5-codex', usage, undefined, 'openai')).toBeCloseTo(
      (100_000 * 1.25 + 900_000 * 0.125 + 1000 * 10) / 1e6,
      12,
    );
    // an operator's price has no cached rate: cached tokens are priced as input
    const overrides = new Map([['gpt-', { input: 1, output: 2 }]]);
    expect(costOfCall('gpt-5-codex', usage, overrides, 'openai')).toBeCloseTo((1_000_000 + 2000) / 1e6, 12);
  });

  it('an unknown or missing model is priced at the dearest rate known', () => {
    for (const model of ['claude-fake', 'gpt-5', '', undefined])
      expect(priceOfModel(model)).toBe(UNKNOWN_MODEL_PRICE);
    expect(UNKNOWN_MODEL_PRICE.output).toBeGreaterThanOrEqual(75);
  });
});

describe('costOfCall', () => {
  it('prices input, output, cache writes (5 min, 1 h) and reads', () => {
    const usage = {
      inputTokens: 1000,
      outputTokens: 500,
      cacheWriteTokens: 2000,
      cacheWrite1hTokens: 1000,
      cacheReadTokens: 10_000,
    };
    // sonnet: 3 / 15 per million; writes 1.25× and 2× input, reads 0.1×
    const expected = (1000 * 3 + 500 * 15 + 2000 * 3.75 + 1000 * 6 + 10_000 * 0.3) / 1e6;
    expect(costOfCall('claude-sonnet-4-5', usage)).toBeCloseTo(expected, 12);
    expect(costOfCall('claude-sonnet-4-5', NO_USAGE)).toBe(0);
  });

  it('a prompt over 200k tokens is charged at the long-context rates', () => {
    const long = { ...NO_USAGE, inputTokens: 150_000, cacheReadTokens: 60_000, outputTokens: 1000 };
    const expected = (150_000 * 6 + 60_000 * 0.6 + 1000 * 22.5) / 1e6;
    expect(costOfCall('claude-sonnet-4-5', long)).toBeCloseTo(expected, 12);
  });
});

describe('classifyModelCall', () => {
  const anthropic = ['ANTHROPIC_API_KEY'];
  it.each([
    ['POST', '/v1/messages', anthropic, 'messages'],
    ['POST', '/v1/messages?beta=true', anthropic, 'messages'],
    ['POST', '/v1/messages/', ['CLAUDE_CODE_OAUTH_TOKEN'], 'messages'],
    ['post', '/v1/messages', anthropic, 'messages'],
    ['POST', '//v1//messages/', anthropic, 'messages'],
    ['POST', '/v1/messages/count_tokens', anthropic, 'free'],
    ['POST', '/api/event_logging/batch', anthropic, 'free'],
    ['GET', '/v1/models', anthropic, 'free'],
    ['HEAD', '/v1/messages', anthropic, 'free'],
    ['POST', '/v1/messages/batches', anthropic, 'unmetered'],
    ['POST', '/v1/complete', anthropic, 'unmetered'],
    ['PUT', '/v1/messages', anthropic, 'unmetered'],
    ['DELETE', '/v1/files/f1', anthropic, 'unmetered'],
    ['POST', '/v1/responses', ['OPENAI_API_KEY'], 'responses'],
    ['POST', '/v1/responses/', ['OPENAI_API_KEY'], 'responses'],
    ['POST', '/v1/chat/completions', ['OPENAI_API_KEY'], 'chat'],
    ['POST', '/v1//chat/completions/', ['OPENAI_API_KEY'], 'chat'],
    ['POST', '/v1/chat/completions', ['ANTHROPIC_API_KEY'], 'unmetered'],
    ['POST', '/v1/completions', ['OPENAI_API_KEY'], 'unmetered'],
    ['POST', '/v1/responses/resp_1/cancel', ['OPENAI_API_KEY'], 'unmetered'],
    ['POST', '/v1/responses', ['ANTHROPIC_API_KEY'], 'unmetered'],
    ['POST', '/v1/messages', ['ANTHROPIC_API_KEY', 'OPENAI_API_KEY'], 'unmetered'],
    ['GET', '/v1/models', ['OPENAI_API_KEY'], 'free'],
    ['POST', '/v1/messages', [], 'free'],
    ['POST', '/repos/a/b/issues', ['GITHUB_TOKEN'], 'free'],
  ])('%s %s with %j: %s', (method, path, injected, kind) => {
    expect(classifyModelCall({ method, path, injected })).toBe(kind);
  });
});

describe('MessagesUsageReader', () => {
  it('reads a stream: model and prompt from message_start, output from message_delta', () => {
    const reader = new MessagesUsageReader('text/event-stream; charset=utf-8');
    const body = sse([
      start('claude-sonnet-4-5', {
        input_tokens: 1200,
        output_tokens: 1,
        cache_creation_input_tokens: 300,
        cache_creation: { ephemeral_5m_input_tokens: 200, ephemeral_1h_input_tokens: 100 },
        cache_read_input_tokens: 5000,
      }),
      textDelta('hello'),
      delta({ output_tokens: 42 }),
      { type: 'message_stop' },
    ]);
    // fed in 7-byte pieces: events and even UTF-8 split anywhere
    const bytes = Buffer.from(body);
    for (let i = 0; i < bytes.length; i += 7) reader.push(bytes.subarray(i, i + 7));
    expect(reader.end()).toEqual({
      model: 'claude-sonnet-4-5',
      usageSeen: true,
      failed: false,
      final: true,
      usage: {
        inputTokens: 1200,
        outputTokens: 42,
        cacheWriteTokens: 200,
        cacheWrite1hTokens: 100,
        cacheReadTokens: 5000,
      },
    });
  });

  it('counts only grow: a later smaller figure does not lower one', () => {
    const reader = new MessagesUsageReader('text/event-stream');
    reader.push(
      Buffer.from(
        sse([
          start('m', { input_tokens: 900, output_tokens: 5 }),
          delta({ input_tokens: 10, output_tokens: 3 }),
        ]),
      ),
    );
    expect(reader.end().usage).toMatchObject({ inputTokens: 900, outputTokens: 5 });
  });

  it('CRLF lines and data lines without a space are read', () => {
    const reader = new MessagesUsageReader('text/event-stream');
    reader.push(
      Buffer.from(`event: message_start\r\ndata:${JSON.stringify(start('m', { input_tokens: 7 }))}\r\n\r\n`),
    );
    expect(reader.end()).toMatchObject({ model: 'm', usageSeen: true, usage: { inputTokens: 7 } });
  });

  it('a stream cut before its final usage is charged for the text it streamed', () => {
    const reader = new MessagesUsageReader('text/event-stream');
    reader.push(
      Buffer.from(sse([start('m', { input_tokens: 10, output_tokens: 1 }), textDelta('x'.repeat(3000))])),
    );
    expect(reader.reading().usage.outputTokens).toBe(1000);
    expect(reader.end().usage.outputTokens).toBe(1000);
  });

  it('the final usage wins over the guess once it comes', () => {
    const reader = new MessagesUsageReader('text/event-stream');
    reader.push(
      Buffer.from(
        sse([start('m', { input_tokens: 10 }), textDelta('x'.repeat(3000)), delta({ output_tokens: 700 })]),
      ),
    );
    expect(reader.end().usage.outputTokens).toBe(700);
  });

  it('an error event (overloaded, before any message) is a failed call, not an unread one', () => {
    const reader = new MessagesUsageReader('text/event-stream');
    reader.push(
      Buffer.from(sse([{ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }])),
    );
    expect(reader.end()).toMatchObject({ usageSeen: false, failed: true });
    const json = new MessagesUsageReader('application/json');
    json.push(Buffer.from('{"type":"error","error":{"type":"api_error"}}'));
    expect(json.end()).toMatchObject({ usageSeen: false, failed: true });
  });

  it('reads an OpenAI Responses stream: the model, then the usage on response.completed', () => {
    const reader = new ResponsesUsageReader('text/event-stream');
    reader.push(
      Buffer.from(
        sse([
          { type: 'response.created', response: { model: 'gpt-5-codex', usage: null } },
          { type: 'response.output_text.delta', delta: 'x'.repeat(300) },
        ]),
      ),
    );
    expect(reader.reading()).toMatchObject({
      model: 'gpt-5-codex',
      usageSeen: false,
      usage: { outputTokens: 100 },
    });
    reader.push(
      Buffer.from(
        sse([
          {
            type: 'response.completed',
            response: {
              model: 'gpt-5-codex',
              usage: { input_tokens: 1000, input_tokens_details: { cached_tokens: 800 }, output_tokens: 50 },
            },
          },
        ]),
      ),
    );
    expect(reader.end()).toEqual({
      model: 'gpt-5-codex',
      usageSeen: true,
      failed: false,
      final: true,
      usage: { ...NO_USAGE, inputTokens: 200, cacheReadTokens: 800, outputTokens: 50 },
    });
  });

  it('OpenAI: a JSON response is read; a background one (no usage yet) is unread; an error is failed', () => {
    const done = new ResponsesUsageReader('application/json');
    done.push(Buffer.from('{"object":"response","model":"o3","usage":{"input_tokens":7,"output_tokens":3}}'));
    expect(done.end()).toMatchObject({ usageSeen: true, usage: { inputTokens: 7, outputTokens: 3 } });
    const queued = new ResponsesUsageReader('application/json');
    queued.push(Buffer.from('{"object":"response","model":"o3","status":"queued","usage":null}'));
    expect(queued.end()).toMatchObject({ usageSeen: false, failed: false });
    const failed = new ResponsesUsageReader('text/event-stream');
    failed.push(Buffer.from(sse([{ type: 'error', code: 'server_error', message: 'x' }])));
    expect(failed.end()).toMatchObject({ usageSeen: false, failed: true });
  });

  it('reads an OpenAI Chat Completions stream: the model, then the usage on its last chunk', () => {
    const reader = new ChatCompletionsUsageReader('text/event-stream');
    const chunk = (delta: Record<string, unknown>, usage: unknown = null) =>
      `data: ${JSON.stringify({ object: 'chat.completion.chunk', model: 'gpt-4.1', choices: [{ index: 0, delta }], usage })}\n\n`;
    reader.push(
      Buffer.from(
        chunk({ content: 'x'.repeat(150) }) +
          chunk({ tool_calls: [{ function: { arguments: 'y'.repeat(150) } }] }),
      ),
    );
    expect(reader.reading()).toMatchObject({
      model: 'gpt-4.1',
      usageSeen: false,
      usage: { outputTokens: 100 },
    });
    const usage = {
      prompt_tokens: 1000,
      prompt_tokens_details: { cached_tokens: 600, audio_tokens: 100 },
      completion_tokens: 80,
      completion_tokens_details: { reasoning_tokens: 20, audio_tokens: 30 },
    };
    reader.push(
      Buffer.from(
        `${chunk({}, usage).replace('"choices":[{"index":0,"delta":{}}]', '"choices":[]')}data: [DONE]\n\n`,
      ),
    );
    const reading = reader.end();
    expect(reading).toEqual({
      model: 'gpt-4.1',
      usageSeen: true,
      failed: false,
      final: true,
      usage: {
        ...NO_USAGE,
        inputTokens: 300,
        cacheReadTokens: 600,
        audioInputTokens: 100,
        outputTokens: 50,
        audioOutputTokens: 30,
      },
    });
    // gpt-4.1: $2 in, $0.5 cached, $8 out; audio at $40 in, $80 out
    const expected = (300 * 2 + 600 * 0.5 + 50 * 8 + 100 * 40 + 30 * 80) / 1e6;
    expect(costOfCall(reading.model, reading.usage, undefined, 'openai')).toBeCloseTo(expected, 12);
  });

  it('Chat Completions: a JSON answer is read; a stream without usage is unread; an error chunk is failed', () => {
    const json = new ChatCompletionsUsageReader('application/json');
    json.push(
      Buffer.from(
        '{"object":"chat.completion","model":"gpt-4o","usage":{"prompt_tokens":9,"completion_tokens":4}}',
      ),
    );
    expect(json.end()).toMatchObject({
      usageSeen: true,
      final: true,
      usage: { inputTokens: 9, outputTokens: 4 },
    });
    const bare = new ChatCompletionsUsageReader('text/event-stream');
    bare.push(
      Buffer.from('data: {"model":"gpt-4o","choices":[{"delta":{"content":"abcdef"}}]}\n\ndata: [DONE]\n\n'),
    );
    expect(bare.end()).toMatchObject({ usageSeen: false, failed: false, usage: { outputTokens: 2 } });
    const failed = new ChatCompletionsUsageReader('text/event-stream');
    failed.push(Buffer.from('data: {"error":{"message":"overloaded","type":"server_error"}}\n\n'));
    expect(failed.end()).toMatchObject({ usageSeen: false, failed: true });
  });

  it.each([
    ['{"model":"gpt-4o","messages":[]}', undefined],
    ['{"stream":false}', undefined],
    ['{"stream":true,"stream_options":{"include_usage":true}}', undefined],
    ['{"stream":true}', 'include_usage'],
    ['{"stream":true,"stream_options":{"include_usage":false}}', 'include_usage'],
    ['{"stream":true,"stream_options":null}', 'include_usage'],
    ['[1]', 'not a JSON object'],
    ['{"stream":tru', 'not JSON'],
  ])('a Chat Completions request %s is priced unless: %s', async (body, why) => {
    const unpriced = await chatRequestUnpriced(Buffer.from(body));
    if (why === undefined) expect(unpriced).toBeUndefined();
    else expect(unpriced).toContain(why);
  });

  it('a Chat Completions body is read off the event loop: a 32 MiB one does not stall the host', async () => {
    // Dense numbers, the costliest JSON to parse per byte: ~0.7 s on the main thread here.
    const body = Buffer.from(
      `{"stream":true,"x":[${Array.from({ length: 6_000_000 }, (_, i) => i % 10).join(',')}]}`,
    );
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    let ticksAtAnswer = -1;
    const unpriced = await chatRequestUnpriced(body).finally(() => (ticksAtAnswer = ticks));
    clearInterval(timer);
    expect(unpriced).toContain('include_usage');
    // Parsed on this thread, the answer would come before the first tick.
    expect(ticksAtAnswer).toBeGreaterThanOrEqual(2);
  });

  it('a body the reader cannot hold ends its worker; the bodies queued behind it are read by the next', async () => {
    const reader = new ChatRequestReader(16);
    // Two million small objects: far more than 16 MiB of heap once parsed.
    const huge = reader.shape(Buffer.from(`[${'{"a":1},'.repeat(2_000_000)}0]`));
    const next = reader.shape(Buffer.from('{"stream":true}'));
    const bad = reader.shape(Buffer.from('[1'));
    await expect(huge).rejects.toThrow();
    await expect(next).resolves.toEqual({ shape: 'object', stream: true, includeUsage: false });
    await expect(bad).resolves.toEqual({ shape: 'not_json' });
  });

  it('a stream with no message_start has not shown its usage', () => {
    const reader = new MessagesUsageReader('text/event-stream');
    reader.push(Buffer.from('event: ping\ndata: {"type":"ping"}\n\ndata: not json\n\n'));
    expect(reader.end()).toMatchObject({ usageSeen: false, usage: NO_USAGE });
  });

  it('a line over 1 MiB is skipped without being kept, and the next one is read', () => {
    const reader = new MessagesUsageReader('text/event-stream');
    const huge = `data: {"type":"content_block_delta","delta":{"text":"${'y'.repeat(2 << 20)}"}}\n`;
    for (let i = 0; i < huge.length; i += 64 << 10) reader.push(Buffer.from(huge.slice(i, i + (64 << 10))));
    reader.push(Buffer.from(sse([start('m', { input_tokens: 3 })])));
    expect(reader.end()).toMatchObject({ usageSeen: true, usage: { inputTokens: 3 } });
  });

  it('reads one JSON message, and nothing from a body that is not one', () => {
    const json = new MessagesUsageReader('application/json');
    json.push(Buffer.from('{"model":"claude-haiku-4-5","usage":{"input_tokens":11,'));
    json.push(Buffer.from('"output_tokens":22}}'));
    expect(json.end()).toEqual({
      model: 'claude-haiku-4-5',
      usageSeen: true,
      failed: false,
      final: true,
      usage: { ...NO_USAGE, inputTokens: 11, outputTokens: 22 },
    });
    const broken = new MessagesUsageReader('application/json');
    broken.push(Buffer.from('{"usage":'));
    expect(broken.end().usageSeen).toBe(false);
    const negative = new MessagesUsageReader(undefined);
    negative.push(Buffer.from('{"usage":{"input_tokens":-5,"output_tokens":"9"}}'));
    expect(negative.end()).toMatchObject({ usageSeen: false, usage: NO_USAGE });
  });

  it('a JSON answer past the cap is not parsed (its cost is unread)', () => {
    const reader = new MessagesUsageReader('application/json');
    reader.push(Buffer.from('{"usage":{"input_tokens":1},"pad":"'));
    reader.push(Buffer.alloc(MAX_JSON_ANSWER_BYTES, 0x61));
    reader.push(Buffer.from('"}'));
    expect(reader.end().usageSeen).toBe(false);
  });
});
