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
 * A scripted fake of the OpenAI Responses API, enough for Codex: `POST /v1/responses` streamed as
 * SSE (`response.created`, `response.output_item.added` / `.done`, `response.output_text.delta`,
 * `response.completed`). Each request takes the next scripted turn; a turn with function calls
 * makes the real CLI run them (e.g. `exec_command`) and call again with their output. Every request
 * is recorded for assertions.
 */

export type ResponsesItem =
  | { type: 'message'; text: string }
  /** A function tool call; `arguments` is JSON-encoded for the wire. `callId` defaults to `call_fake_<turn>_<item>`. */
  | { type: 'function_call'; name: string; arguments: Record<string, unknown>; callId?: string }
  /** A freeform (custom) tool call such as Codex's `apply_patch`: `input` is sent verbatim. */
  | { type: 'custom_tool_call'; name: string; input: string; callId?: string };

export interface ResponsesTurn {
  output: ResponsesItem[];
  /** Answer with this HTTP error instead. */
  error?: { status: number; code: string; message: string };
  /** Report this many prompt tokens instead of the rough count (what the call "cost"). */
  inputTokens?: number;
}

export interface ResponsesRequestBody {
  model: string;
  instructions?: string;
  input: Record<string, unknown>[];
  tools?: { type: string; name?: string; [key: string]: unknown }[];
  stream?: boolean;
  reasoning?: { effort?: string; [key: string]: unknown } | null;
  [key: string]: unknown;
}

export type ResponsesScript =
  ResponsesTurn[] | ((body: ResponsesRequestBody, index: number, request: RecordedRequest) => ResponsesTurn);

export interface FakeResponses extends FakeServer {
  /** The `/v1/responses` requests only, bodies typed. */
  responses(): (RecordedRequest & { body: ResponsesRequestBody })[];
}

export interface FakeResponsesOptions extends FakeServerOptions {
  script: ResponsesScript;
}

export const message = (text: string): ResponsesItem => ({ type: 'message', text });
export const functionCall = (
  name: string,
  args: Record<string, unknown>,
  callId?: string,
): ResponsesItem => ({
  type: 'function_call',
  name,
  arguments: args,
  ...(callId === undefined ? {} : { callId }),
});

/** Every text a request's input carries (messages, function outputs), joined. */
export function inputText(body: ResponsesRequestBody): string {
  const out: string[] = [];
  const walk = (value: unknown): void => {
    if (typeof value === 'string') out.push(value);
    else if (Array.isArray(value)) value.forEach(walk);
    else if (value !== null && typeof value === 'object') {
      const rec = value as Record<string, unknown>;
      for (const key of ['text', 'output', 'content']) if (rec[key] !== undefined) walk(rec[key]);
    }
  };
  walk(body.input);
  return out.join('\n');
}

function wireItem(item: ResponsesItem, turn: number, index: number): Record<string, unknown> {
  switch (item.type) {
    case 'message':
      return {
        type: 'message',
        id: `msg_fake_${turn}_${index}`,
        status: 'completed',
        role: 'assistant',
        content: [{ type: 'output_text', text: item.text, annotations: [] }],
      };
    case 'function_call':
      return {
        type: 'function_call',
        id: `fc_fake_${turn}_${index}`,
        call_id: item.callId ?? `call_fake_${turn}_${index}`,
        name: item.name,
        arguments: JSON.stringify(item.arguments),
        status: 'completed',
      };
    case 'custom_tool_call':
      return {
        type: 'custom_tool_call',
        id: `ctc_fake_${turn}_${index}`,
        call_id: item.callId ?? `call_fake_${turn}_${index}`,
        name: item.name,
        input: item.input,
        status: 'completed',
      };
  }
}

function streamResponse(
  res: http.ServerResponse,
  body: ResponsesRequestBody,
  turn: ResponsesTurn,
  n: number,
): void {
  const sse = startSse(res);
  let seq = 0;
  const send = (type: string, data: Record<string, unknown>) =>
    sse.send(type, { type, sequence_number: seq++, ...data });
  const id = `resp_fake_${n}`;
  const base = { id, object: 'response', created_at: Math.floor(Date.now() / 1000), model: body.model };
  send('response.created', { response: { ...base, status: 'in_progress', output: [] } });
  const output = turn.output.map((item, i) => wireItem(item, n, i));
  output.forEach((item, outputIndex) => {
    const added =
      item.type === 'message'
        ? { ...item, status: 'in_progress', content: [] }
        : { ...item, status: 'in_progress' };
    send('response.output_item.added', { output_index: outputIndex, item: added });
    const source = turn.output[outputIndex]!;
    if (source.type === 'message') {
      send('response.content_part.added', {
        item_id: item.id,
        output_index: outputIndex,
        content_index: 0,
        part: { type: 'output_text', text: '', annotations: [] },
      });
      send('response.output_text.delta', {
        item_id: item.id,
        output_index: outputIndex,
        content_index: 0,
        delta: source.text,
      });
      send('response.output_text.done', {
        item_id: item.id,
        output_index: outputIndex,
        content_index: 0,
        text: source.text,
      });
    }
    send('response.output_item.done', { output_index: outputIndex, item });
  });
  const inputTokens = turn.inputTokens ?? roughTokens(body.input);
  const outputTokens = roughTokens(output);
  send('response.completed', {
    response: {
      ...base,
      status: 'completed',
      output,
      usage: {
        input_tokens: inputTokens,
        input_tokens_details: { cached_tokens: 0 },
        output_tokens: outputTokens,
        output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: inputTokens + outputTokens,
      },
    },
  });
  sse.end();
}

const EXHAUSTED: ResponsesTurn = {
  output: [],
  error: { status: 400, code: 'invalid_request_error', message: 'fake API: the script has no more turns' },
};

export async function startFakeResponses(options: FakeResponsesOptions): Promise<FakeResponses> {
  let index = 0;
  const server = await startFakeServer(options, (req, res) => {
    if (req.method !== 'POST' || req.path !== '/v1/responses') {
      sendJson(res, 404, {
        error: { type: 'not_found', code: 'not_found', message: `fake API: no ${req.path}` },
      });
      return;
    }
    const body = req.body as ResponsesRequestBody | undefined;
    if (body === undefined || !Array.isArray(body.input)) {
      sendJson(res, 400, { error: { type: 'invalid_request_error', code: 'bad_json', message: 'not JSON' } });
      return;
    }
    const n = index++;
    const turn =
      typeof options.script === 'function' ? options.script(body, n, req) : (options.script[n] ?? EXHAUSTED);
    if (turn.error) {
      sendJson(res, turn.error.status, {
        error: { type: 'invalid_request_error', code: turn.error.code, message: turn.error.message },
      });
      return;
    }
    streamResponse(res, body, turn, n);
  });
  return {
    ...server,
    responses: () =>
      server.requests.filter((r) => r.path === '/v1/responses') as (RecordedRequest & {
        body: ResponsesRequestBody;
      })[],
  };
}

/** The same as startFakeResponses, under the name the fakes share. */
export const start = startFakeResponses;
