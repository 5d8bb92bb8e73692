import { pathOnly } from './http-util.js';

/**
 * What a model call costs, read on the host from the model API's own answer: which calls spend
 * (pure classification), the price of a model's tokens, and readers of the `usage` in Anthropic
 * Messages, OpenAI Responses and OpenAI Chat Completions answers (SSE stream or JSON body). The
 * guest never reports its own spend here: a prompt-injected agent could lie about it, the API's
 * answer to the host cannot.
 *
 * Prices err high: an unknown model is priced as the dearest known one, cache writes without a
 * TTL split as 5-minute writes, and a prompt over 200k tokens at the long-context rates.
 */

/** USD per million tokens. */
export interface TokenPrice {
  readonly input: number;
  readonly output: number;
  /** Cached prompt tokens (OpenAI), when they cost less than `input`. */
  readonly cachedInput?: number;
}

/** Whose API a metered call went to: the price table and the shape of `usage` follow. */
export type ModelApi = 'anthropic' | 'openai';

/** First match wins; model ids look like `claude-opus-4-5-20251101` or `claude-sonnet-4-6[1m]`. */
const MODEL_PRICES: readonly (readonly [RegExp, TokenPrice])[] = [
  [/^claude-(?:fable|mythos)/, { input: 10, output: 50 }],
  [/^claude-opus-4(?:-[01])?(?:-\d{8})?(?:\[|$)|^claude-3-opus/, { input: 15, output: 75 }],
  [/^claude-opus/, { input: 5, output: 25 }],
  [/^claude-sonnet-5/, { input: 2, output: 10 }],
  [/^claude-(?:3-[57]-)?sonnet/, { input: 3, output: 15 }],
  [/^claude-3-5-haiku|^claude-haiku-3-5/, { input: 0.8, output: 4 }],
  [/^claude-3-haiku/, { input: 0.25, output: 1.25 }],
  // Haiku 5.5 is priced by prompt length; the dearer band is taken.
  [/^claude-haiku-5/, { input: 0.5, output: 2.5 }],
  [/^claude-haiku/, { input: 1, output: 5 }],
];

/** What a model the table does not know is charged: the dearest rate in it. */
export const UNKNOWN_MODEL_PRICE: TokenPrice = { input: 15, output: 75 };

/**
 * OpenAI's list prices, first match wins (`gpt-5.1-codex`, `gpt-5-mini-2025-08-07`, …); cached
 * prompt tokens at the model's cached rate. o1-pro's outlier rate is its own entry, not the
 * unknown model's.
 */
const OPENAI_PRICES: readonly (readonly [RegExp, TokenPrice])[] = [
  [/^o1-pro/, { input: 150, output: 600 }],
  [/^gpt-5\.5-pro/, { input: 30, output: 180 }],
  [/^o3-pro/, { input: 20, output: 80 }],
  [/^gpt-5(?:\.\d+)?-pro/, { input: 15, output: 120 }],
  [/^gpt-5\.5/, { input: 5, output: 30, cachedInput: 0.5 }],
  [/^gpt-5\.4-nano/, { input: 0.2, output: 1.25, cachedInput: 0.02 }],
  [/^gpt-5\.4-mini/, { input: 0.75, output: 4.5, cachedInput: 0.075 }],
  [/^gpt-5\.4/, { input: 2.5, output: 15, cachedInput: 0.25 }],
  [/^gpt-5(?:\.\d+)?(?:-codex)?-nano/, { input: 0.05, output: 0.4, cachedInput: 0.005 }],
  [/^gpt-5(?:\.\d+)?(?:-codex)?-mini/, { input: 0.25, output: 2, cachedInput: 0.025 }],
  [/^gpt-5\.[23]/, { input: 1.75, output: 14, cachedInput: 0.175 }],
  [/^gpt-5/, { input: 1.25, output: 10, cachedInput: 0.125 }],
  [/^gpt-4\.1-nano/, { input: 0.1, output: 0.4, cachedInput: 0.025 }],
  [/^gpt-4\.1-mini/, { input: 0.4, output: 1.6, cachedInput: 0.1 }],
  [/^gpt-4\.1/, { input: 2, output: 8, cachedInput: 0.5 }],
  [/^gpt-4o-mini/, { input: 0.15, output: 0.6, cachedInput: 0.075 }],
  [/^gpt-4o/, { input: 2.5, output: 10, cachedInput: 1.25 }],
  [/^o[34]-mini/, { input: 1.1, output: 4.4, cachedInput: 0.275 }],
  [/^o3/, { input: 2, output: 8, cachedInput: 0.5 }],
  [/^o1/, { input: 15, output: 60, cachedInput: 7.5 }],
  [/^codex-mini/, { input: 1.5, output: 6, cachedInput: 0.375 }],
];

/** An OpenAI model the table does not know: the dearest current family's rate. */
export const UNKNOWN_OPENAI_MODEL_PRICE: TokenPrice = { input: 30, output: 180 };

/** OpenAI audio tokens (Chat Completions' audio in and out), at the dearest audio model's rate. */
export const OPENAI_AUDIO_PRICE: TokenPrice = { input: 40, output: 80 };

const CACHE_WRITE_5M = 1.25;
const CACHE_WRITE_1H = 2;
const CACHE_READ = 0.1;
const LONG_CONTEXT_TOKENS = 200_000;
const LONG_CONTEXT_INPUT = 2;
const LONG_CONTEXT_OUTPUT = 1.5;

/** An operator's prices: lowercase model id prefix → price; the longest matching prefix wins. */
export type PriceOverrides = ReadonlyMap<string, TokenPrice>;

export function priceOfModel(
  model: string | undefined,
  overrides?: PriceOverrides,
  api: ModelApi = 'anthropic',
): TokenPrice {
  const id = (model ?? '').toLowerCase();
  let chosen: [string, TokenPrice] | undefined;
  for (const [prefix, price] of overrides ?? [])
    if (id.startsWith(prefix) && (chosen === undefined || prefix.length > chosen[0].length))
      chosen = [prefix, price];
  if (chosen) return chosen[1];
  const [table, unknown] =
    api === 'openai' ? [OPENAI_PRICES, UNKNOWN_OPENAI_MODEL_PRICE] : [MODEL_PRICES, UNKNOWN_MODEL_PRICE];
  return table.find(([pattern]) => pattern.test(id))?.[1] ?? unknown;
}

/** Token counts of one Messages API call, as its `usage` reports them. */
export interface MessagesUsage {
  inputTokens: number;
  outputTokens: number;
  /** Cache writes of unknown TTL (no `cache_creation` split), charged as 5-minute writes. */
  cacheWriteTokens: number;
  cacheWrite1hTokens: number;
  cacheReadTokens: number;
  /** OpenAI audio tokens, apart from `inputTokens` / `outputTokens` (priced on their own). */
  audioInputTokens?: number;
  audioOutputTokens?: number;
}

export const NO_USAGE: Readonly<MessagesUsage> = Object.freeze({
  inputTokens: 0,
  outputTokens: 0,
  cacheWriteTokens: 0,
  cacheWrite1hTokens: 0,
  cacheReadTokens: 0,
});

export function costOfCall(
  model: string | undefined,
  usage: MessagesUsage,
  overrides?: PriceOverrides,
  api: ModelApi = 'anthropic',
): number {
  const price = priceOfModel(model, overrides, api);
  if (api === 'openai') {
    // Cached prompt tokens without a rate of their own (an override) are priced as input.
    const cached = price.cachedInput ?? price.input;
    const audio =
      (usage.audioInputTokens ?? 0) * OPENAI_AUDIO_PRICE.input +
      (usage.audioOutputTokens ?? 0) * OPENAI_AUDIO_PRICE.output;
    return (
      (usage.inputTokens * price.input +
        usage.cacheReadTokens * cached +
        usage.outputTokens * price.output +
        audio) /
      1_000_000
    );
  }
  const prompt =
    usage.inputTokens + usage.cacheWriteTokens + usage.cacheWrite1hTokens + usage.cacheReadTokens;
  const long = prompt > LONG_CONTEXT_TOKENS;
  const input = price.input * (long ? LONG_CONTEXT_INPUT : 1);
  const output = price.output * (long ? LONG_CONTEXT_OUTPUT : 1);
  const perToken =
    usage.inputTokens * input +
    usage.cacheWriteTokens * input * CACHE_WRITE_5M +
    usage.cacheWrite1hTokens * input * CACHE_WRITE_1H +
    usage.cacheReadTokens * input * CACHE_READ +
    usage.outputTokens * output;
  return perToken / 1_000_000;
}

/** Secrets whose use spends on a model API: the host's (or the box's own) money. */
export const MODEL_API_SECRETS: ReadonlySet<string> = new Set([
  'ANTHROPIC_API_KEY',
  'CLAUDE_CODE_OAUTH_TOKEN',
  'OPENAI_API_KEY',
]);
const ANTHROPIC_SECRETS: ReadonlySet<string> = new Set(['ANTHROPIC_API_KEY', 'CLAUDE_CODE_OAUTH_TOKEN']);

/**
 * - `free`: spends nothing (no model credential, a read, token counting, Claude Code's own
 *   `/api/…` calls);
 * - `messages`: an Anthropic Messages API call, priced from its answer;
 * - `responses`: an OpenAI Responses API call (what Codex speaks), priced from its answer;
 * - `chat`: an OpenAI Chat Completions call, priced from its answer (a stream has its usage only
 *   when the request asks for it: see `chatRequestUnpriced`);
 * - `unmetered`: may spend, but in a way the gateway cannot price (batches, legacy completions,
 *   OpenAI's other APIs): refused while a budget is set.
 */
export type ModelCallKind = 'free' | 'messages' | 'responses' | 'chat' | 'unmetered';

/** A call the gateway prices from its answer. */
export type MeteredCallKind = Extract<ModelCallKind, 'messages' | 'responses' | 'chat'>;

/** Whose price table a metered call is charged from. */
export function apiOfCall(kind: MeteredCallKind): ModelApi {
  return kind === 'messages' ? 'anthropic' : 'openai';
}

export function classifyModelCall(call: {
  method: string;
  /** Origin-form request target; the query is ignored. */
  path: string;
  /** Secrets injected into the request. */
  injected: readonly string[];
}): ModelCallKind {
  const model = call.injected.filter((name) => MODEL_API_SECRETS.has(name));
  if (model.length === 0) return 'free';
  const method = call.method.toUpperCase();
  if (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') return 'free';
  // `//v1//messages/` is the same call to a lenient router.
  const path = pathOnly(call.path)
    .replace(/\/{2,}/g, '/')
    .replace(/\/$/, '');
  if (method !== 'POST') return 'unmetered';
  if (model.every((name) => ANTHROPIC_SECRETS.has(name))) {
    if (path === '/v1/messages') return 'messages';
    if (path === '/v1/messages/count_tokens' || path.startsWith('/api/')) return 'free';
    return 'unmetered';
  }
  if (model.every((name) => !ANTHROPIC_SECRETS.has(name))) {
    if (path === '/v1/responses') return 'responses';
    if (path === '/v1/chat/completions') return 'chat';
  }
  return 'unmetered';
}

/** An SSE line longer than this is skipped unparsed (usage events are small). */
const MAX_SSE_LINE_CHARS = 1 << 20;
/** A JSON answer longer than this is not parsed: its cost is unreadable. */
export const MAX_JSON_ANSWER_BYTES = 32 << 20;
/** Output tokens guessed from streamed text when the stream stops before its final usage. */
const CHARS_PER_OUTPUT_TOKEN = 3;

export interface CallReading {
  readonly model: string | undefined;
  readonly usage: MessagesUsage;
  /** The answer gave the call's usage (a stream its `message_start`). */
  readonly usageSeen: boolean;
  /** The answer was an API error (an `error` event in the stream, or an error object): unbilled. */
  readonly failed: boolean;
  /** The final counts came: the model has stopped generating, there is nothing left to cut. */
  readonly final: boolean;
}

type UsageJson = Record<string, unknown>;

function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined;
}

/**
 * Reads a model API's answer as it streams past, SSE or one JSON object, for what the call cost.
 * Each count only grows, so a later event can raise a figure but never lower it. Subclasses read
 * their API's events and message shape.
 */
export abstract class UsageReader {
  readonly #sse: boolean;
  protected model: string | undefined;
  protected readonly usage: MessagesUsage = { ...NO_USAGE };
  /** The answer gave the call's usage. */
  protected usageSeen = false;
  /** The answer was an API error, billed nothing. */
  protected failed = false;
  /** The final output count came (so streamed text need not be guessed from). */
  protected finalOutputSeen = false;
  protected streamedChars = 0;
  #pending = '';
  #skippingLine = false;
  readonly #json: Buffer[] = [];
  #jsonBytes = 0;
  readonly #decoder = new TextDecoder();

  constructor(contentType: string | undefined) {
    this.#sse = /^\s*text\/event-stream/i.test(contentType ?? '');
  }

  /** One parsed SSE `data:` object. */
  protected abstract event(event: UsageJson): void;
  /** The whole JSON answer of a call that was not streamed. */
  protected abstract message(message: UsageJson): void;

  push(chunk: Buffer): void {
    if (!this.#sse) {
      this.#jsonBytes += chunk.length;
      if (this.#jsonBytes <= MAX_JSON_ANSWER_BYTES) this.#json.push(chunk);
      return;
    }
    let text = this.#decoder.decode(chunk, { stream: true });
    if (this.#skippingLine) {
      const newline = text.indexOf('\n');
      if (newline < 0) return;
      text = text.slice(newline + 1);
      this.#skippingLine = false;
    }
    const lines = (this.#pending + text).split('\n');
    this.#pending = lines.pop()!;
    for (const line of lines) this.#line(line);
    if (this.#pending.length > MAX_SSE_LINE_CHARS) {
      this.#pending = '';
      this.#skippingLine = true;
    }
  }

  /** What was read so far; `end` also parses a JSON answer and guesses a cut stream's output. */
  reading(): CallReading {
    const usage = { ...this.usage };
    if (this.#sse && !this.finalOutputSeen) {
      usage.outputTokens = Math.max(
        usage.outputTokens,
        Math.ceil(this.streamedChars / CHARS_PER_OUTPUT_TOKEN),
      );
    }
    return {
      model: this.model,
      usage,
      usageSeen: this.usageSeen,
      failed: this.failed,
      final: this.finalOutputSeen,
    };
  }

  end(): CallReading {
    if (this.#sse) {
      if (!this.#skippingLine && this.#pending !== '') this.#line(this.#pending);
      this.#pending = '';
    } else if (this.#jsonBytes <= MAX_JSON_ANSWER_BYTES) {
      try {
        const message = JSON.parse(Buffer.concat(this.#json).toString('utf8')) as unknown;
        if (message !== null && typeof message === 'object') this.message(message as UsageJson);
      } catch {
        // not JSON: the usage stays unseen
      }
      this.#json.length = 0;
    }
    return this.reading();
  }

  /** Raises a count to `value` when that is higher. */
  protected raise(key: keyof MessagesUsage, value: number | undefined): void {
    if (value !== undefined && value > (this.usage[key] ?? 0)) this.usage[key] = value;
  }

  /** Counts the text of a streamed delta (for a cut stream's guess). */
  protected streamed(...values: unknown[]): void {
    for (const value of values) if (typeof value === 'string') this.streamedChars += value.length;
  }

  #line(raw: string): void {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (!line.startsWith('data:')) return;
    let event: unknown;
    try {
      event = JSON.parse(line.slice(5));
    } catch {
      return;
    }
    if (event !== null && typeof event === 'object') this.event(event as UsageJson);
  }
}

/**
 * An Anthropic Messages API answer: `message_start` carries the model and the prompt's usage,
 * `message_delta` the cumulative output; or one JSON message.
 */
export class MessagesUsageReader extends UsageReader {
  protected event(e: UsageJson): void {
    switch (e.type) {
      case 'message_start': {
        const message = e.message as UsageJson | undefined;
        if (message && typeof message === 'object') {
          if (typeof message.model === 'string') this.model = message.model;
          this.#merge(message.usage);
        }
        return;
      }
      case 'message_delta':
        if (this.#merge(e.usage) && count((e.usage as UsageJson).output_tokens) !== undefined)
          this.finalOutputSeen = true;
        return;
      case 'error':
        // e.g. overloaded_error, possibly before any message_start: nothing was billed then
        this.failed = true;
        return;
      case 'content_block_delta': {
        const delta = e.delta as UsageJson | undefined;
        if (delta && typeof delta === 'object') this.streamed(delta.text, delta.partial_json, delta.thinking);
        return;
      }
      default:
        return;
    }
  }

  protected message(m: UsageJson): void {
    if (m.type === 'error') this.failed = true;
    if (typeof m.model === 'string') this.model = m.model;
    if (this.#merge(m.usage) && count((m.usage as UsageJson).output_tokens) !== undefined)
      this.finalOutputSeen = true;
  }

  /** Raises the counts to those of a `usage` object; whether it was one. */
  #merge(value: unknown): boolean {
    if (value === null || typeof value !== 'object') return false;
    const u = value as UsageJson;
    this.raise('inputTokens', count(u.input_tokens));
    this.raise('outputTokens', count(u.output_tokens));
    this.raise('cacheReadTokens', count(u.cache_read_input_tokens));
    const written = count(u.cache_creation_input_tokens);
    const split = u.cache_creation as UsageJson | undefined;
    const oneHour = split && typeof split === 'object' ? count(split.ephemeral_1h_input_tokens) : undefined;
    if (oneHour !== undefined) this.raise('cacheWrite1hTokens', oneHour);
    if (written !== undefined)
      this.raise('cacheWriteTokens', Math.max(0, written - this.usage.cacheWrite1hTokens));
    if (count(u.input_tokens) !== undefined) this.usageSeen = true;
    return true;
  }
}

/**
 * An OpenAI Responses API answer (what Codex speaks): the usage comes only with the final
 * `response.completed` (or `.incomplete` / `.failed`) event, or in the one JSON response;
 * `input_tokens` includes the cached ones (`input_tokens_details.cached_tokens`). A response
 * answered in the background (`status: queued`) has no usage yet: its cost is unread.
 */
export class ResponsesUsageReader extends UsageReader {
  protected event(e: UsageJson): void {
    const type = typeof e.type === 'string' ? e.type : '';
    if (type === 'error') {
      this.failed = true;
      return;
    }
    if (type.startsWith('response.') && type.endsWith('.delta')) {
      this.streamed(e.delta);
      return;
    }
    const response = e.response as UsageJson | undefined;
    if (response && typeof response === 'object') this.message(response);
  }

  protected message(r: UsageJson): void {
    if (typeof r.model === 'string') this.model = r.model;
    if (r.error && typeof r.error === 'object' && r.usage == null) this.failed = true;
    const u = r.usage as UsageJson | null | undefined;
    if (u === null || u === undefined || typeof u !== 'object') return;
    const input = count(u.input_tokens);
    const details = u.input_tokens_details as UsageJson | undefined;
    const cached = Math.min(
      (details && typeof details === 'object' ? count(details.cached_tokens) : undefined) ?? 0,
      input ?? 0,
    );
    if (input !== undefined) {
      this.raise('inputTokens', input - cached);
      this.raise('cacheReadTokens', cached);
      this.usageSeen = true;
    }
    const output = count(u.output_tokens);
    this.raise('outputTokens', output);
    if (output !== undefined) this.finalOutputSeen = true;
  }
}

/**
 * An OpenAI Chat Completions answer: one JSON completion with its `usage`, or a stream of chunks
 * whose last one carries the usage only when the request asked for it
 * (`stream_options.include_usage`). `prompt_tokens` includes the cached and audio ones,
 * `completion_tokens` the reasoning and audio ones.
 */
export class ChatCompletionsUsageReader extends UsageReader {
  protected event(e: UsageJson): void {
    if (e.error !== null && typeof e.error === 'object') {
      this.failed = true;
      return;
    }
    if (Array.isArray(e.choices)) {
      for (const choice of e.choices as unknown[]) {
        const delta = (choice as UsageJson | null)?.delta as UsageJson | undefined;
        if (delta === null || typeof delta !== 'object') continue;
        this.streamed(delta.content, delta.refusal, delta.reasoning_content);
        if (Array.isArray(delta.tool_calls))
          for (const call of delta.tool_calls as unknown[])
            this.streamed(((call as UsageJson | null)?.function as UsageJson | undefined)?.arguments);
      }
    }
    this.message(e);
  }

  protected message(m: UsageJson): void {
    if (typeof m.model === 'string') this.model = m.model;
    if (m.error !== null && typeof m.error === 'object' && m.usage == null) this.failed = true;
    const u = m.usage as UsageJson | null | undefined;
    if (u === null || u === undefined || typeof u !== 'object') return;
    const prompt = count(u.prompt_tokens);
    if (prompt !== undefined) {
      const details = detailsOf(u.prompt_tokens_details);
      const cached = Math.min(count(details.cached_tokens) ?? 0, prompt);
      const audio = Math.min(count(details.audio_tokens) ?? 0, prompt - cached);
      this.raise('inputTokens', prompt - cached - audio);
      this.raise('cacheReadTokens', cached);
      this.raise('audioInputTokens', audio);
      this.usageSeen = true;
    }
    const completion = count(u.completion_tokens);
    if (completion !== undefined) {
      const audio = Math.min(count(detailsOf(u.completion_tokens_details).audio_tokens) ?? 0, completion);
      this.raise('outputTokens', completion - audio);
      this.raise('audioOutputTokens', audio);
      this.finalOutputSeen = true;
    }
  }
}

function detailsOf(value: unknown): UsageJson {
  return value !== null && typeof value === 'object' ? (value as UsageJson) : {};
}

/** The reader of a metered call's answer. */
export function usageReaderFor(kind: MeteredCallKind, contentType: string | undefined): UsageReader {
  switch (kind) {
    case 'messages':
      return new MessagesUsageReader(contentType);
    case 'responses':
      return new ResponsesUsageReader(contentType);
    case 'chat':
      return new ChatCompletionsUsageReader(contentType);
  }
}

/** The most of a Chat Completions request the gateway reads (under a limit) before it is sent. */
export const MAX_CHAT_REQUEST_BYTES = 32 << 20;
