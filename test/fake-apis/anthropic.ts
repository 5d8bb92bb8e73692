import type http from 'node:http';
import {
  roughTokens,
  sendJson,
  startFakeServer,
  startSse,
  type FakeServer,
  type FakeServerOptions,
  type RecordedRequest,
} from './server.js';

/**
 * A scripted fake of the Anthropic Messages API, enough for Claude Code and OpenCode:
 * `POST /v1/messages` (streamed as SSE with `event:` lines, or one JSON message) and
 * `POST /v1/messages/count_tokens`. Each messages request takes the next scripted turn; a turn
 * whose content has `tool_use` blocks makes the real CLI run those tools and call again with the
 * results. Every request is recorded (headers, parsed body) for assertions.
 */

export type AnthropicBlock =
  | { type: 'text'; text: string }
  /** `id` defaults to `toolu_fake_<request>_<block>`. */
  | { type: 'tool_use'; id?: string; name: string; input: Record<string, unknown> };

export interface AnthropicTurn {
  content: AnthropicBlock[];
  /** Default: `tool_use` when the content has a tool_use block, else `end_turn`. */
  stopReason?: 'end_turn' | 'tool_use' | 'max_tokens' | 'stop_sequence';
  /** Answer with this HTTP error instead (e.g. 529 overloaded); content is then ignored. */
  error?: { status: number; type: string; message: string };
}

/** The Messages API request body, as far as scripts look at it. */
export interface MessagesRequestBody {
  model: string;
  stream?: boolean;
  system?: string | { type: string; text: string }[];
  messages: { role: 'user' | 'assistant'; content: string | Record<string, unknown>[] }[];
  tools?: { name: string; description?: string; input_schema?: unknown }[];
  [key: string]: unknown;
}

/**
 * The turns, taken in order by successive `/v1/messages` requests; or a function of the request and
 * its index among messages requests (0-based) that returns the turn.
 */
export type AnthropicScript =
  AnthropicTurn[] | ((body: MessagesRequestBody, index: number, request: RecordedRequest) => AnthropicTurn);

export interface FakeAnthropic extends FakeServer {
  /** The `/v1/messages` requests only (not count_tokens), bodies typed. */
  messages(): (RecordedRequest & { body: MessagesRequestBody })[];
  /** The `/v1/messages` requests that offer tools: the agent loop's, the ones scripts answer. */
  mainMessages(): (RecordedRequest & { body: MessagesRequestBody })[];
}

/** A messages request offering no tools: a side call (title, summary), not the agent loop. */
export function isSideRequest(body: MessagesRequestBody): boolean {
  return !Array.isArray(body.tools) || body.tools.length === 0;
}

export interface FakeAnthropicOptions extends FakeServerOptions {
  script: AnthropicScript;
  /**
   * Requests that offer no tools (OpenCode's title generator, Claude Code's small side calls) are
   * answered with `sideText` and do not take a scripted turn: 'auto' (default). 'script' feeds
   * every messages request to the script.
   */
  sideRequests?: 'auto' | 'script';
  /** The answer to a side request; default 'Fake title'. */
  sideText?: string;
  /** Model name reported back when the request names none. */
  model?: string;
  /** Token counts to report for a request instead of the rough ones (what the call "cost"). */
  usageFor?: (body: MessagesRequestBody) => { input_tokens?: number; output_tokens?: number } | undefined;
}

export const text = (value: string): AnthropicBlock => ({ type: 'text', text: value });
export const toolUse = (name: string, input: Record<string, unknown>, id?: string): AnthropicBlock => ({
  type: 'tool_use',
  name,
  input,
  ...(id === undefined ? {} : { id }),
});

/** Plain text of a request's `system` field (a string or text blocks). */
export function systemText(body: MessagesRequestBody): string {
  if (body.system === undefined) return '';
  if (typeof body.system === 'string') return body.system;
  return body.system.map((b) => b.text).join('\n');
}

/** Every text a request's messages carry (text blocks, tool results), joined: for "the model saw X". */
export function messagesText(body: MessagesRequestBody): string {
  const out: string[] = [];
  const walk = (value: unknown): void => {
    if (typeof value === 'string') out.push(value);
    else if (Array.isArray(value)) value.forEach(walk);
    else if (value !== null && typeof value === 'object') {
      const rec = value as Record<string, unknown>;
      if (typeof rec.text === 'string') out.push(rec.text);
      if (rec.content !== undefined) walk(rec.content);
    }
  };
  for (const m of body.messages) walk(m.content);
  return out.join('\n');
}

function withIds(turn: AnthropicTurn, index: number): (AnthropicBlock & { id?: string })[] {
  return turn.content.map((b, i) =>
    b.type === 'tool_use' ? { ...b, id: b.id ?? `toolu_fake_${index}_${i}` } : b,
  );
}

function messageJson(model: string, index: number, turn: AnthropicTurn, inputTokens: number) {
  const content = withIds(turn, index);
  const stopReason =
    turn.stopReason ?? (content.some((b) => b.type === 'tool_use') ? 'tool_use' : 'end_turn');
  return {
    id: `msg_fake_${index}`,
    type: 'message',
    role: 'assistant',
    model,
    content,
    stop_reason: stopReason,
    stop_sequence: null,
    usage: {
      input_tokens: inputTokens,
      output_tokens: roughTokens(content),
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
    },
  };
}

function streamMessage(res: http.ServerResponse, message: ReturnType<typeof messageJson>): void {
  const sse = startSse(res);
  const { content, stop_reason, usage, ...head } = message;
  sse.send('message_start', {
    type: 'message_start',
    message: { ...head, content: [], stop_reason: null, usage: { ...usage, output_tokens: 1 } },
  });
  content.forEach((block, index) => {
    if (block.type === 'text') {
      sse.send('content_block_start', {
        type: 'content_block_start',
        index,
        content_block: { type: 'text', text: '' },
      });
      sse.send('content_block_delta', {
        type: 'content_block_delta',
        index,
        delta: { type: 'text_delta', text: block.text },
      });
    } else {
      sse.send('content_block_start', {
        type: 'content_block_start',
        index,
        content_block: { type: 'tool_use', id: block.id, name: block.name, input: {} },
      });
      sse.send('content_block_delta', {
        type: 'content_block_delta',
        index,
        delta: { type: 'input_json_delta', partial_json: JSON.stringify(block.input) },
      });
    }
    sse.send('content_block_stop', { type: 'content_block_stop', index });
  });
  sse.send('message_delta', {
    type: 'message_delta',
    delta: { stop_reason, stop_sequence: null },
    usage: { output_tokens: usage.output_tokens },
  });
  sse.send('message_stop', { type: 'message_stop' });
  sse.end();
}

const EXHAUSTED: AnthropicTurn = {
  content: [],
  error: { status: 400, type: 'invalid_request_error', message: 'fake API: the script has no more turns' },
};

export async function startFakeAnthropic(options: FakeAnthropicOptions): Promise<FakeAnthropic> {
  let index = 0;
  const server = await startFakeServer(options, (req, res) => {
    if (req.method === 'POST' && req.path === '/v1/messages/count_tokens') {
      sendJson(res, 200, { input_tokens: roughTokens(req.body) });
      return;
    }
    if (req.method !== 'POST' || req.path !== '/v1/messages') {
      sendJson(res, 404, {
        type: 'error',
        error: { type: 'not_found_error', message: `fake API: no ${req.path}` },
      });
      return;
    }
    const body = req.body as MessagesRequestBody | undefined;
    if (body === undefined || !Array.isArray(body.messages)) {
      sendJson(res, 400, { type: 'error', error: { type: 'invalid_request_error', message: 'not JSON' } });
      return;
    }
    let turn: AnthropicTurn;
    let n: number;
    if ((options.sideRequests ?? 'auto') === 'auto' && isSideRequest(body)) {
      n = -1;
      turn = { content: [text(options.sideText ?? 'Fake title')] };
    } else {
      n = index++;
      turn =
        typeof options.script === 'function'
          ? options.script(body, n, req)
          : (options.script[n] ?? EXHAUSTED);
    }
    if (turn.error) {
      sendJson(res, turn.error.status, {
        type: 'error',
        error: { type: turn.error.type, message: turn.error.message },
      });
      return;
    }
    const message = messageJson(
      body.model ?? options.model ?? 'claude-fake',
      n,
      turn,
      roughTokens(body.messages),
    );
    Object.assign(message.usage, options.usageFor?.(body));
    if (body.stream === true) streamMessage(res, message);
    else sendJson(res, 200, message);
  });
  return {
    ...server,
    mainMessages: () =>
      server.requests.filter(
        (r) => r.path === '/v1/messages' && !isSideRequest(r.body as MessagesRequestBody),
      ) as (RecordedRequest & { body: MessagesRequestBody })[],
    messages: () =>
      server.requests.filter((r) => r.path === '/v1/messages') as (RecordedRequest & {
        body: MessagesRequestBody;
      })[],
  };
}

/** The same as startFakeAnthropic, under the name the fakes share. */
export const start = startFakeAnthropic;
