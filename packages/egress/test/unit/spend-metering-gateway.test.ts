import type http from 'node:http';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createEgressGateway, type CertificateAuthority, type SpendBudget } from '../../src/index.js';
import { MAX_HELD_BODIES_PER_BOX } from '../../src/box-session.js';
import {
  connect,
  createTestCa,
  proxyHttps,
  startHarness,
  startHttpsUpstream,
  type FakeUpstream,
  type Harness,
} from '../helpers/egress-harness.js';

/**
 * Host-side spend metering through the real gateway: the box's model calls are priced from the
 * API's own answers (never from anything the box says), a budget's limit refuses calls past it
 * and cuts those in flight, and whatever could spend unseen is refused while a limit is set.
 */

const REAL_KEY = 'sk-ant-api-REAL-spend-aaaaaaaaaaaa';
/** claude-sonnet: $3 per million input tokens, so 100k tokens of prompt cost $0.30. */
const SONNET = 'claude-sonnet-4-5';

/** What the fake API answers a request with: the request body says (the box cannot set the usage in reality). */
interface Script {
  model?: string;
  input?: number;
  output?: number;
  /** Wait this long before the answer's first byte. */
  delayMs?: number;
  /** Hold the stream open after message_start for this long before finishing it. */
  holdMs?: number;
  /** Answer 200 JSON with no usage at all. */
  noUsage?: boolean;
  /** Answer a 200 stream whose only event is an API error (as an overloaded API does). */
  streamError?: boolean;
  status?: number;
}

let ca: CertificateAuthority;
let api: FakeUpstream;
let h: Harness;
const open: SpendBudget[] = [];

function answer(req: http.IncomingMessage, sent: Buffer, res: http.ServerResponse): void {
  const body = req.headers['content-encoding'] === 'gzip' ? gunzipSync(sent) : sent;
  let script: Script = {};
  try {
    script = (JSON.parse(body.toString()) as { script?: Script }).script ?? {};
  } catch {
    // not a scripted call
  }
  const respond = () => {
    if (script.status !== undefined) {
      res.writeHead(script.status, { 'content-type': 'application/json' });
      res.end('{"type":"error","error":{"type":"overloaded_error","message":"busy"}}');
      return;
    }
    if (script.streamError) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(
        'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
      );
      return;
    }
    if (script.noUsage) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"type":"message","content":[]}');
      return;
    }
    if (req.url === '/v1/chat/completions') {
      // OpenAI's Chat Completions: a stream has the usage only when the request asks for it
      const request = JSON.parse(body.toString()) as {
        stream?: boolean;
        stream_options?: { include_usage?: boolean };
      };
      const model = script.model ?? 'gpt-4.1';
      const usage = { prompt_tokens: script.input ?? 0, completion_tokens: script.output ?? 1 };
      if (request.stream !== true) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ object: 'chat.completion', model, choices: [], usage }));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = (e: Record<string, unknown>) => res.write(`data: ${JSON.stringify({ model, ...e })}\n\n`);
      chunk({ choices: [{ index: 0, delta: { content: 'hi' } }], usage: null });
      if (request.stream_options?.include_usage === true) chunk({ choices: [], usage });
      res.end('data: [DONE]\n\n');
      return;
    }
    if (req.url === '/v1/responses') {
      // OpenAI's Responses API: the usage comes only with response.completed
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const model = script.model ?? 'gpt-5-codex';
      const send = (e: Record<string, unknown>) =>
        res.write(`event: ${String(e.type)}\ndata: ${JSON.stringify(e)}\n\n`);
      send({ type: 'response.created', response: { model, usage: null } });
      send({ type: 'response.output_text.delta', delta: 'hi' });
      send({
        type: 'response.completed',
        response: {
          model,
          usage: {
            input_tokens: script.input ?? 0,
            input_tokens_details: { cached_tokens: 0 },
            output_tokens: script.output ?? 1,
          },
        },
      });
      res.end();
      return;
    }
    if (req.url?.startsWith('/v1/messages') !== true || req.url.includes('count_tokens')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const send = (e: Record<string, unknown>) =>
      res.write(`event: ${String(e.type)}\ndata: ${JSON.stringify(e)}\n\n`);
    send({
      type: 'message_start',
      message: {
        model: script.model ?? SONNET,
        usage: { input_tokens: script.input ?? 0, output_tokens: 1 },
      },
    });
    const finish = () => {
      if (res.destroyed) return;
      send({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'hi' } });
      send({
        type: 'message_delta',
        delta: { stop_reason: 'end_turn' },
        usage: { output_tokens: script.output ?? 1 },
      });
      send({ type: 'message_stop' });
      res.end();
    };
    if (script.holdMs) setTimeout(finish, script.holdMs);
    else finish();
  };
  if (script.delayMs) setTimeout(respond, script.delayMs);
  else respond();
}

beforeAll(async () => {
  ca = await createTestCa();
  api = await startHttpsUpstream(ca, ['api.anthropic.com', 'api.openai.com']);
  api.handler = answer;
  const upstream = `127.0.0.1:${api.port}`;
  h = await startHarness({
    upstreamCaPem: ca.certPem,
    secrets: { ANTHROPIC_API_KEY: REAL_KEY, OPENAI_API_KEY: 'sk-openai-REAL-spend-bbbbbbbb' },
    policy: {
      presets: ['anthropic', 'openai'],
      upstreams: { 'api.anthropic.com': upstream, 'api.openai.com': upstream },
    },
  });
});

afterEach(() => {
  for (const budget of open.splice(0)) budget.close();
});

afterAll(async () => {
  await h.close();
  await api.close();
});

function budget(limitUsd?: number, onExceeded?: () => void): SpendBudget {
  const b = h.gateway.openBudget(h.box.boxId, {
    ...(limitUsd !== undefined ? { limitUsd } : {}),
    ...(onExceeded ? { onExceeded } : {}),
  });
  open.push(b);
  return b;
}

/** One call to the Anthropic API from the box, with its placeholder (or `key`). */
function call(
  script: Script,
  options: {
    path?: string;
    method?: string;
    key?: string;
    host?: string;
    /** Merged into the request's JSON body. */
    request?: Record<string, unknown>;
    gzip?: boolean;
  } = {},
) {
  const host = options.host ?? 'api.anthropic.com';
  const openai = host === 'api.openai.com';
  const key = options.key ?? h.box.env[openai ? 'OPENAI_API_KEY' : 'ANTHROPIC_API_KEY']!;
  return proxyHttps(h.proxyPort, host, options.path ?? '/v1/messages?beta=true', {
    ca: [h.box.caCertPem],
    method: options.method ?? 'POST',
    headers: {
      ...(openai ? { authorization: `Bearer ${key}` } : { 'x-api-key': key }),
      'content-type': 'application/json',
      ...(options.gzip === true ? { 'content-encoding': 'gzip' } : {}),
    },
    ...(options.method === 'GET' ? {} : { body: requestBody(script, options) }),
  });
}

function requestBody(script: Script, options: { request?: Record<string, unknown>; gzip?: boolean }) {
  const json = JSON.stringify({ model: SONNET, stream: true, script, ...options.request });
  return options.gzip === true ? gzipSync(json) : json;
}

/** A Chat Completions call; streamed with its usage asked for unless `request` says otherwise. */
function chat(script: Script, request: Record<string, unknown> = {}, gzip = false) {
  return call(script, {
    host: 'api.openai.com',
    path: '/v1/chat/completions',
    request: { model: 'gpt-4.1', stream_options: { include_usage: true }, ...request },
    gzip,
  });
}

const chatsSeen = () => api.seen.filter((e) => e.url === '/v1/chat/completions').length;

const messagesSeen = () => api.seen.filter((e) => e.url.startsWith('/v1/messages')).length;

async function until(check: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('spend metering in the gateway', () => {
  it('without a budget nothing is metered', async () => {
    const since = h.audit.records.length;
    const r = await call({ input: 100_000 });
    expect(r.status).toBe(200);
    const record = await h.audit.waitFor((x) => h.audit.records.indexOf(x) >= since && x.method === 'POST');
    expect(record.costUsd).toBeUndefined();
  });

  it('a count sums every call from the API answers, and the audit gives each cost', async () => {
    const count = budget();
    const since = h.audit.records.length;
    expect((await call({ input: 100_000, output: 1000 })).status).toBe(200);
    expect((await call({ model: 'claude-haiku-4-5', input: 10_000, output: 2000 })).status).toBe(200);
    const expected = (100_000 * 3 + 1000 * 15) / 1e6 + (10_000 * 1 + 2000 * 5) / 1e6;
    await until(() => Math.abs(count.spentUsd - expected) < 1e-9);
    expect(count.exceeded).toBeUndefined();
    await until(() => h.audit.records.slice(since).filter((r) => r.costUsd !== undefined).length === 2);
    const costs = h.audit.records
      .slice(since)
      .filter((r) => r.costUsd !== undefined)
      .map((r) => r.costUsd);
    expect(costs[0]).toBeCloseTo(0.315, 9);
    expect(costs[1]).toBeCloseTo(0.02, 9);
    // a count without a limit refuses nothing, not even what it cannot price
    expect((await call({}, { path: '/v1/messages/batches' })).status).toBe(200);
  });

  it('a limit: the call that passes it is cut, the next is refused before the API sees it', async () => {
    let passed = 0;
    const limited = budget(1, () => passed++);
    for (let i = 0; i < 3; i++) expect((await call({ input: 100_000 })).status).toBe(200);
    expect(limited.spentUsd).toBeCloseTo(0.9, 3);
    const before = messagesSeen();
    // $0.60 of prompt passes the limit on message_start: the answer is cut there
    await call({ input: 200_000, holdMs: 2_000 }).then(
      (r) => expect(r.body).not.toContain('message_stop'),
      (err: Error) => expect(err.message).toMatch(/hang up|ECONNRESET|aborted|closed/i),
    );
    expect(limited.exceeded).toBe('spent');
    expect(passed).toBe(1);
    expect(limited.spentUsd).toBeCloseTo(1.5, 3);
    const since = h.audit.records.length;
    const refused = await call({ input: 1 });
    expect(refused.status).toBe(403);
    expect(refused.headers['x-agentbox-deny']).toBe('budget_exceeded');
    expect(refused.body).toContain("($1.00) is spent: $1.50 by the host's count");
    expect(messagesSeen()).toBe(before + 1);
    const denial = await h.audit.waitFor((r) => h.audit.records.indexOf(r) >= since && r.decision === 'deny');
    expect(denial).toMatchObject({
      code: 'budget_exceeded',
      host: 'api.anthropic.com',
      path: '/v1/messages',
    });
    // reads stay open: they spend nothing
    expect((await call({}, { method: 'GET', path: '/v1/models' })).status).toBe(200);
  });

  it('a budget taken up again (after a daemon restart) goes on from what it had; each charge is told', async () => {
    const told: number[] = [];
    const carried = h.gateway.openBudget(h.box.boxId, {
      limitUsd: 1,
      spentUsd: 0.7,
      onCharge: (b) => told.push(b.spentUsd),
    });
    open.push(carried);
    expect((await call({ input: 50_000 })).status).toBe(200);
    await until(() => told.length === 1);
    expect(told[0]).toBeCloseTo(0.85, 3);
    // $0.30 more passes what is left of the limit
    await call({ input: 100_000, holdMs: 500 }).catch(() => undefined);
    expect(carried.exceeded).toBe('spent');
    carried.close();
    // One that had passed its limit already refuses at once.
    let passed = 0;
    const spent = h.gateway.openBudget(h.box.boxId, {
      limitUsd: 1,
      spentUsd: 1.2,
      onExceeded: () => passed++,
    });
    open.push(spent);
    expect([spent.exceeded, passed]).toEqual(['spent', 1]);
    const before = messagesSeen();
    expect((await call({ input: 1 })).status).toBe(403);
    expect(messagesSeen()).toBe(before);
  });

  it('a call in flight when another passes the budget is cut, and the API stops being read', async () => {
    const limited = budget(0.5);
    const slow = call({ input: 10, holdMs: 30_000 }).then(
      (r) => r.body,
      (err: Error) => err.message,
    );
    await until(() => limited.spentUsd > 0);
    await call({ input: 200_000 }).catch(() => undefined);
    expect(limited.exceeded).toBe('spent');
    const outcome = await slow;
    expect(outcome).not.toContain('message_stop');
  });

  it('under a limit, calls the gateway cannot price are refused; free ones pass', async () => {
    budget(5);
    for (const [path, host] of [
      ['/v1/messages/batches', 'api.anthropic.com'],
      ['/v1/complete', 'api.anthropic.com'],
      ['/v1/completions', 'api.openai.com'],
    ] as const) {
      const r = await call({}, { path, host });
      expect(r.status, path).toBe(403);
      expect(r.headers['x-agentbox-deny']).toBe('budget_unmetered');
    }
    expect((await call({}, { path: '/v1/messages/count_tokens' })).status).toBe(200);
    expect((await call({}, { method: 'GET', path: '/v1/models', host: 'api.openai.com' })).status).toBe(200);
  });

  it("OpenAI Responses calls (Codex's) are priced from response.completed, and held to a limit", async () => {
    let passed = 0;
    const limited = budget(0.2, () => passed++);
    const responses = (input: number) => call({ input }, { host: 'api.openai.com', path: '/v1/responses' });
    expect((await responses(100_000)).status).toBe(200);
    await until(() => limited.spentUsd > 0);
    expect(limited.spentUsd).toBeCloseTo((100_000 * 1.25 + 10) / 1e6, 9);
    expect((await responses(100_000)).status).toBe(200); // whole when its charge passes the limit
    expect(passed).toBe(1);
    const refused = await responses(1);
    expect([refused.status, refused.headers['x-agentbox-deny']]).toEqual([403, 'budget_exceeded']);
  });

  it('OpenAI Chat Completions calls are priced from their usage, streamed or not, and held to a limit', async () => {
    let passed = 0;
    const limited = budget(0.5, () => passed++);
    // gpt-4.1: $2 per million input tokens
    const streamed = await chat({ input: 100_000, output: 10 });
    expect([streamed.status, streamed.body]).toEqual([
      200,
      expect.stringContaining('"usage":{"prompt_tokens"'),
    ]);
    await until(() => limited.spentUsd > 0);
    expect(limited.spentUsd).toBeCloseTo((100_000 * 2 + 10 * 8) / 1e6, 9);
    const whole = await chat({ input: 100_000, output: 10 }, { stream: false, stream_options: undefined });
    expect(whole.status).toBe(200);
    await until(() => limited.spentUsd > 0.4);
    expect(passed).toBe(0);
    // a gzip-coded request is read the same (and sent as it came)
    expect((await chat({ input: 100_000 }, {}, true)).status).toBe(200);
    await until(() => passed === 1);
    expect(api.seen.at(-1)?.headers['content-encoding']).toBe('gzip');
    const refused = await chat({ input: 1 });
    expect([refused.status, refused.headers['x-agentbox-deny']]).toEqual([403, 'budget_exceeded']);
  });

  it('under a limit, a streamed Chat Completions call that does not ask for its usage is refused before the API sees it', async () => {
    budget(5);
    const before = chatsSeen();
    for (const request of [{ stream_options: undefined }, { stream_options: { include_usage: false } }]) {
      const r = await chat({ input: 1 }, request);
      expect([r.status, r.headers['x-agentbox-deny']]).toEqual([403, 'budget_unmetered']);
      expect(r.body).toContain('include_usage');
    }
    const broken = await call(
      {},
      { host: 'api.openai.com', path: '/v1/chat/completions', gzip: true, request: {} },
    );
    expect(broken.status).toBe(403); // gzip-coded, but its JSON asks no usage of a stream
    expect(chatsSeen()).toBe(before);
    expect(h.audit.records.filter((r) => r.code === 'budget_unmetered').at(-1)?.reason).toContain(
      'POST /v1/chat/completions cannot be priced',
    );
  });

  it('under a limit, a box holds at most MAX_HELD_BODIES_PER_BOX Chat Completions bodies at once; the others wait their turn', async () => {
    budget(5);
    const before = chatsSeen();
    const calls = Array.from({ length: MAX_HELD_BODIES_PER_BOX + 2 }, () =>
      chat({ input: 1, delayMs: 2_500 }),
    );
    await until(() => chatsSeen() - before === MAX_HELD_BODIES_PER_BOX);
    await new Promise((r) => setTimeout(r, 300));
    expect(chatsSeen() - before).toBe(MAX_HELD_BODIES_PER_BOX);
    expect((await Promise.all(calls)).map((r) => r.status)).toEqual(calls.map(() => 200));
    expect(chatsSeen() - before).toBe(MAX_HELD_BODIES_PER_BOX + 2);
  });

  it('counted without a limit, a Chat Completions stream without usage passes, its output counted from its text', async () => {
    const count = budget();
    const r = await chat({ input: 100_000 }, { stream_options: undefined });
    expect(r.status).toBe(200);
    // 'hi': one output token at $8 per million; the prompt, never reported, is not counted
    expect(count.spentUsd).toBeCloseTo(8 / 1e6, 12);
    expect(count.exceeded).toBeUndefined();
  });

  it("a call without the box's placeholder (its own key) is not the host's money: not metered", async () => {
    const count = budget(0.01);
    const r = await call({ input: 1_000_000 }, { key: 'sk-ant-somebody-elses' });
    expect(r.status).toBe(200);
    expect(count.spentUsd).toBe(0);
  });

  it('an error answer is not charged, nor one whose stream is only an error event', async () => {
    const count = budget(1);
    expect((await call({ status: 529, input: 1_000_000 })).status).toBe(529);
    const overloaded = await call({ streamError: true });
    expect(overloaded.status).toBe(200);
    expect(overloaded.body).toContain('overloaded_error');
    expect(count.spentUsd).toBe(0);
    // the budget still holds: a transient API error must not end a task
    expect(count.exceeded).toBeUndefined();
    expect((await call({ input: 1 })).status).toBe(200);
  });

  it('a box that hangs up before the answer is still charged for its prompt', async () => {
    const count = budget();
    const tunnel = await connect(h.proxyPort, 'api.anthropic.com:443');
    const tls = await import('node:tls');
    const secure = tls.connect({
      socket: tunnel.socket!,
      servername: 'api.anthropic.com',
      ca: [h.box.caCertPem],
    });
    await new Promise((resolve) => secure.once('secureConnect', resolve));
    const body = JSON.stringify({ script: { input: 100_000, delayMs: 300 } });
    secure.write(
      `POST /v1/messages HTTP/1.1\r\nhost: api.anthropic.com\r\nx-api-key: ${h.box.env.ANTHROPIC_API_KEY}\r\n` +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    // gone once the request is out, long before the API answers
    await until(() => api.seen.some((e) => e.body === body));
    secure.destroy();
    await until(() => count.spentUsd > 0);
    expect(count.spentUsd).toBeCloseTo(0.3 + 15 / 1e6, 9);
  });

  it('a successful answer whose cost cannot be read closes a limited budget (fail closed)', async () => {
    const limited = budget(100);
    expect((await call({ noUsage: true })).status).toBe(200);
    await until(() => limited.exceeded !== undefined);
    expect(limited.exceeded).toBe('unreadable');
    const refused = await call({ input: 1 });
    expect(refused.status).toBe(403);
    expect(refused.body).toContain('could not be read');
  });

  it("with accounts every call is charged to the box's key; a cap holds across the key's boxes", async () => {
    const account = {
      limitUsd: 0.5,
      spentUsd: 0,
      since: 1,
      charge(usd: number) {
        this.spentUsd += usd;
      },
    };
    const keyed = await startHarness({
      boxId: 'box-keyed000001',
      upstreamCaPem: ca.certPem,
      secrets: { ANTHROPIC_API_KEY: REAL_KEY, OPENAI_API_KEY: 'sk-openai-REAL-keyed-cccccccc' },
      policy: {
        presets: ['anthropic', 'openai'],
        upstreams: {
          'api.anthropic.com': `127.0.0.1:${api.port}`,
          'api.openai.com': `127.0.0.1:${api.port}`,
        },
      },
      spendAccount: (boxId) => (boxId.startsWith('box-keyed') ? account : undefined),
    });
    const second = await keyed.gateway.openBox({
      boxId: 'box-keyed000002',
      policy: { presets: ['anthropic'], upstreams: { 'api.anthropic.com': `127.0.0.1:${api.port}` } },
    });
    const net = await import('node:net');
    const channel = net.createServer((socket) => second.handleConnection(socket));
    await new Promise<void>((resolve) => channel.listen(0, '127.0.0.1', resolve));
    const secondPort = (channel.address() as { port: number }).port;
    const from = (which: 'first' | 'second', input: number | Script, host = 'api.anthropic.com') => {
      const box = which === 'first' ? keyed.box : second;
      const openai = host === 'api.openai.com';
      return proxyHttps(which === 'first' ? keyed.proxyPort : secondPort, host, '/v1/messages', {
        ca: [box.caCertPem],
        method: 'POST',
        headers: openai
          ? { authorization: `Bearer ${box.env.OPENAI_API_KEY}` }
          : { 'x-api-key': box.env.ANTHROPIC_API_KEY!, 'content-type': 'application/json' },
        body: JSON.stringify({ script: typeof input === 'number' ? { input } : input }),
      });
    };
    try {
      // no budget open: charged all the same
      expect((await from('first', 100_000)).status).toBe(200);
      await until(() => account.spentUsd > 0.3);
      // under the cap, what cannot be priced is refused
      const openai = await from('first', 1, 'api.openai.com');
      expect([openai.status, openai.headers['x-agentbox-deny']]).toEqual([403, 'budget_unmetered']);
      // the other box of the key passes the cap (its stream is cut there); now neither may spend
      const budget = keyed.gateway.openBudget(keyed.box.boxId);
      await from('second', 100_000).catch(() => undefined);
      await until(() => account.spentUsd >= 0.5);
      expect(budget.exceeded).toBe('account');
      for (const which of ['first', 'second'] as const) {
        const r = await from(which, 1);
        expect(r.status).toBe(403);
        expect(r.body).toContain("this box's API key has reached its model spend cap ($0.50)");
      }
      budget.close();
      // a cap raised (read at each call) lets them spend again
      account.limitUsd = 5;
      expect((await from('second', 1)).status).toBe(200);
      // a call whose cost cannot be read stops the box until the operator acts on the key …
      expect((await from('second', { noUsage: true })).status).toBe(200);
      const locked = await from('second', 1);
      expect(locked.status).toBe(403);
      expect(locked.body).toContain('could not be read');
      expect((await from('second', 1)).status).toBe(403);
      // … here by starting the key's count again (a cap changed does it too)
      account.spentUsd = 0;
      account.since = 2;
      expect((await from('second', 1)).status).toBe(200);
    } finally {
      await new Promise<void>((resolve) => channel.close(() => resolve()));
      await keyed.close();
    }
  });

  it("the operator's model prices are used ahead of the table; bad ones stop the gateway", async () => {
    const priced = await startHarness({
      boxId: 'box-prices00001',
      upstreamCaPem: ca.certPem,
      secrets: { ANTHROPIC_API_KEY: REAL_KEY },
      policy: { presets: ['anthropic'], upstreams: { 'api.anthropic.com': `127.0.0.1:${api.port}` } },
      modelPrices: { 'claude-sonnet-4': { input: 10, output: 0 } },
    });
    try {
      const count = priced.gateway.openBudget(priced.box.boxId);
      const r = await proxyHttps(priced.proxyPort, 'api.anthropic.com', '/v1/messages', {
        ca: [priced.box.caCertPem],
        method: 'POST',
        headers: { 'x-api-key': priced.box.env.ANTHROPIC_API_KEY!, 'content-type': 'application/json' },
        body: JSON.stringify({ script: { input: 100_000 } }),
      });
      expect(r.status).toBe(200);
      await until(() => count.spentUsd > 0);
      expect(count.spentUsd).toBeCloseTo(1, 9); // 100k at $10, not the table's $3
      count.close();
    } finally {
      await priced.close();
    }
    expect(() => createEgressGateway({ modelPrices: { 'claude-x': { input: -1, output: 1 } } })).toThrow(
      /model prices: claude-x\.input: /,
    );
  });

  it('budgets belong to the box, not to its session: a new session keeps counting', async () => {
    const count = budget();
    await h.box.close();
    const again = await h.gateway.openBox({
      boxId: h.box.boxId,
      policy: { presets: ['anthropic'], upstreams: { 'api.anthropic.com': `127.0.0.1:${api.port}` } },
    });
    // the harness's channel hands connections to the first session: route this one by hand
    const net = await import('node:net');
    const channel = net.createServer((socket) => again.handleConnection(socket));
    await new Promise<void>((resolve) => channel.listen(0, '127.0.0.1', resolve));
    const port = (channel.address() as { port: number }).port;
    const r = await proxyHttps(port, 'api.anthropic.com', '/v1/messages', {
      ca: [again.caCertPem],
      method: 'POST',
      headers: { 'x-api-key': again.env.ANTHROPIC_API_KEY!, 'content-type': 'application/json' },
      body: JSON.stringify({ script: { input: 100_000 } }),
    });
    expect(r.status).toBe(200);
    await until(() => count.spentUsd > 0);
    expect(count.spentUsd).toBeCloseTo(0.3 + 15 / 1e6, 9);
    await new Promise<void>((resolve) => channel.close(() => resolve()));
  });
});
