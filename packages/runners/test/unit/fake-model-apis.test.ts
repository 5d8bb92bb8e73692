import https from 'node:https';
import { afterEach, describe, expect, it } from 'vitest';
import { createCertificateAuthority } from '../../../egress/src/index.js';
import {
  messagesText,
  startFakeAnthropic,
  systemText,
  text,
  toolUse,
  type FakeAnthropic,
} from '../../../../test/fake-apis/anthropic.js';
import {
  functionCall,
  inputText,
  message,
  startFakeResponses,
} from '../../../../test/fake-apis/openai-responses.js';

/** SSE frames as [event, data] pairs. */
function frames(body: string): [string | null, Record<string, unknown>][] {
  return body
    .split('\n\n')
    .filter((f) => f.trim() !== '')
    .map((frame) => {
      const event = /^event: (.*)$/m.exec(frame)?.[1] ?? null;
      const data = /^data: (.*)$/m.exec(frame)![1]!;
      return [event, JSON.parse(data) as Record<string, unknown>];
    });
}

const tools = [{ name: 'Bash', input_schema: {} }];
const closers: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c.close()));
});

async function anthropic(options: Parameters<typeof startFakeAnthropic>[0]): Promise<FakeAnthropic> {
  const fake = await startFakeAnthropic(options);
  closers.push(fake);
  return fake;
}

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });

describe('fake Anthropic Messages API', () => {
  it('streams a scripted turn as SSE with event lines, tool input as one input_json_delta', async () => {
    const fake = await anthropic({
      script: [{ content: [text('Working.'), toolUse('Bash', { command: 'ls' })] }],
    });
    const res = await post(
      `${fake.url}/v1/messages?beta=true`,
      { model: 'claude-x', stream: true, messages: [{ role: 'user', content: 'hi' }], tools },
      { 'x-api-key': 'sk-test' },
    );
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const got = frames(await res.text());
    expect(got.map(([event, data]) => [event, data.type])).toEqual([
      ['message_start', 'message_start'],
      ['content_block_start', 'content_block_start'],
      ['content_block_delta', 'content_block_delta'],
      ['content_block_stop', 'content_block_stop'],
      ['content_block_start', 'content_block_start'],
      ['content_block_delta', 'content_block_delta'],
      ['content_block_stop', 'content_block_stop'],
      ['message_delta', 'message_delta'],
      ['message_stop', 'message_stop'],
    ]);
    expect(got[4]![1]).toMatchObject({
      content_block: { type: 'tool_use', id: 'toolu_fake_0_1', name: 'Bash', input: {} },
    });
    expect(got[5]![1]).toMatchObject({
      delta: { type: 'input_json_delta', partial_json: '{"command":"ls"}' },
    });
    expect(got[7]![1]).toMatchObject({ delta: { stop_reason: 'tool_use' } });
    expect(fake.messages()[0]!.headers['x-api-key']).toBe('sk-test');
    expect(fake.messages()[0]!.url).toBe('/v1/messages?beta=true');
  });

  it('answers without streaming, counts tokens, and gives side requests (no tools) a canned reply', async () => {
    const fake = await anthropic({ script: [{ content: [text('Main answer.')] }] });
    const side = await post(`${fake.url}/v1/messages`, {
      model: 'haiku',
      messages: [{ role: 'user', content: 'title?' }],
    });
    expect(await side.json()).toMatchObject({
      content: [{ type: 'text', text: 'Fake title' }],
      stop_reason: 'end_turn',
    });
    const main = await post(`${fake.url}/v1/messages`, {
      model: 'm',
      messages: [{ role: 'user', content: 'hi' }],
      tools,
    });
    expect(await main.json()).toMatchObject({ content: [{ type: 'text', text: 'Main answer.' }] });
    const count = await post(`${fake.url}/v1/messages/count_tokens`, {
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(await count.json()).toEqual({ input_tokens: expect.any(Number) as number });
    expect(fake.messages()).toHaveLength(2);
    expect(fake.mainMessages()).toHaveLength(1);
    expect(fake.requests).toHaveLength(3);
  });

  it('a script function sees the request; an exhausted list answers 400; unknown paths 404', async () => {
    const fake = await anthropic({
      script: (body, index) => ({
        content: [text(`#${index} saw ${systemText(body)} / ${messagesText(body)}`)],
      }),
    });
    const res = await post(`${fake.url}/v1/messages`, {
      model: 'm',
      system: [{ type: 'text', text: 'SYS' }],
      messages: [{ role: 'user', content: [{ type: 'text', text: 'hello' }] }],
      tools,
    });
    expect(await res.json()).toMatchObject({ content: [{ text: '#0 saw SYS / hello' }] });
    const listed = await anthropic({ script: [] });
    expect((await post(`${listed.url}/v1/messages`, { model: 'm', messages: [], tools })).status).toBe(400);
    expect((await fetch(`${listed.url}/v1/models`)).status).toBe(404);
  });

  it('serves HTTPS with a given certificate (the egress gateway forwards over TLS)', async () => {
    const ca = await createCertificateAuthority({ commonName: 'fake api test CA' });
    const cert = await ca.issue('api.anthropic.com');
    const fake = await anthropic({
      script: [{ content: [text('over TLS')] }],
      tls: { key: cert.keyPem, cert: cert.certPem },
    });
    expect(fake.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const body = await new Promise<string>((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: fake.port,
          method: 'POST',
          path: '/v1/messages',
          servername: 'api.anthropic.com',
          ca: ca.certPem,
          headers: { 'content-type': 'application/json', host: 'api.anthropic.com' },
        },
        (res) => {
          let out = '';
          res.on('data', (c: Buffer) => (out += c.toString()));
          res.on('end', () => resolve(out));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }], tools }));
    });
    expect(JSON.parse(body)).toMatchObject({ content: [{ text: 'over TLS' }] });
    expect(fake.requests[0]!.headers.host).toBe('api.anthropic.com');
  });
});

describe('fake OpenAI Responses API', () => {
  it('streams output items and a completed response with usage; function calls carry JSON arguments', async () => {
    const fake = await startFakeResponses({
      script: [{ output: [message('Working.'), functionCall('shell', { cmd: 'ls' })] }],
    });
    closers.push(fake);
    const res = await post(
      `${fake.url}/v1/responses`,
      {
        model: 'gpt-x',
        stream: true,
        input: [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'hi' }] }],
      },
      { authorization: 'Bearer sk-test' },
    );
    const got = frames(await res.text());
    expect(got.map(([event]) => event)).toEqual([
      'response.created',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.done',
      'response.output_item.done',
      'response.output_item.added',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(got.every(([event, data]) => data.type === event)).toBe(true);
    expect(got[7]![1]).toMatchObject({
      item: { type: 'function_call', call_id: 'call_fake_0_1', name: 'shell', arguments: '{"cmd":"ls"}' },
    });
    expect(got[8]![1]).toMatchObject({
      response: { status: 'completed', usage: { input_tokens: expect.any(Number) as number } },
    });
    expect(fake.responses()[0]!.headers.authorization).toBe('Bearer sk-test');
    expect(inputText(fake.responses()[0]!.body)).toBe('hi');
  });

  it('answers an error turn and an exhausted script with an error body', async () => {
    const fake = await startFakeResponses({
      script: [{ output: [], error: { status: 429, code: 'rate_limit', message: 'slow down' } }],
    });
    closers.push(fake);
    const first = await post(`${fake.url}/v1/responses`, { model: 'm', input: [] });
    expect(first.status).toBe(429);
    expect(await first.json()).toMatchObject({ error: { code: 'rate_limit', message: 'slow down' } });
    expect((await post(`${fake.url}/v1/responses`, { model: 'm', input: [] })).status).toBe(400);
  });
});
