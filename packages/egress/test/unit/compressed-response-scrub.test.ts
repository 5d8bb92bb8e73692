import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentCodingOf, decodeBody } from '../../src/content-coding.js';
import type { CertificateAuthority } from '../../src/index.js';
import {
  createTestCa,
  proxyHttps,
  startHarness,
  startHttpsUpstream,
  type FakeUpstream,
  type Harness,
  type ReceivedResponse,
} from '../helpers/egress-harness.js';

/**
 * The response scrub reads plain bytes. A credential host that echoes the injected header must
 * not hand the real value back inside a compressed body: the gateway asks for `identity`, decodes
 * what comes coded anyway (gzip, deflate, br), and refuses a coding it cannot read.
 */

const REAL_KEY = 'sk-ant-api-REAL-compressed-aaaaaaaa';

describe('contentCodingOf', () => {
  it.each([
    [undefined, { kind: 'identity' }],
    ['', { kind: 'identity' }],
    ['identity', { kind: 'identity' }],
    ['GZIP', { kind: 'decode', coding: 'gzip' }],
    ['x-gzip', { kind: 'decode', coding: 'gzip' }],
    [' deflate ', { kind: 'decode', coding: 'deflate' }],
    ['br', { kind: 'decode', coding: 'br' }],
    [['identity', 'br'], { kind: 'decode', coding: 'br' }],
  ] as const)('%j → %j', (header, verdict) => {
    expect(contentCodingOf(header)).toEqual(verdict);
  });

  it.each([
    ['gzip, br', 'more than one content coding'],
    ['zstd', 'content coding zstd, which'],
    ['__proto__', 'content coding __proto__, which'],
    ['constructor', 'content coding constructor, which'],
    ['<b>x</b>', 'content coding (unreadable), which'],
  ])('refuses %j', (header, reason) => {
    const verdict = contentCodingOf(header);
    expect(verdict.kind).toBe('refuse');
    expect(verdict.kind === 'refuse' && verdict.reason).toContain(reason);
  });

  it('decodeBody is bounded: a body that inflates past the cap is an error, not a buffer', () => {
    const bomb = zlib.gzipSync(Buffer.alloc(4 * 1024 * 1024));
    expect(bomb.length).toBeLessThan(8 * 1024);
    expect(() => decodeBody('gzip', bomb, 64 * 1024)).toThrow();
    expect(decodeBody('gzip', zlib.gzipSync('hello'), 64 * 1024).toString()).toBe('hello');
  });
});

let ca: CertificateAuthority;
let upstream: FakeUpstream;
let h: Harness;
/** How the fake api.anthropic.com encodes its echo of the request headers. */
let mode: 'negotiate' | 'always-gzip' | 'always-br' | 'unknown-coding' | 'corrupt-gzip' = 'negotiate';

beforeAll(async () => {
  ca = await createTestCa();
  upstream = await startHttpsUpstream(ca, ['api.anthropic.com']);
  upstream.handler = (req, _body, res) => {
    const echo = Buffer.from(JSON.stringify({ headers: req.headers }));
    const wantsGzip = /gzip/.test(String(req.headers['accept-encoding'] ?? ''));
    if (mode === 'always-br') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'br' });
      res.end(zlib.brotliCompressSync(echo));
    } else if (mode === 'always-gzip' || (mode === 'negotiate' && wantsGzip)) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.end(zlib.gzipSync(echo));
    } else if (mode === 'unknown-coding') {
      // An unreadable coding whose bytes happen to hold the value in clear.
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'x-custom' });
      res.end(echo);
    } else if (mode === 'corrupt-gzip') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.end(echo);
    } else {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': echo.length });
      res.end(echo);
    }
  };
  h = await startHarness({
    upstreamCaPem: ca.certPem,
    secrets: { ANTHROPIC_API_KEY: REAL_KEY },
    policy: { presets: ['anthropic'], upstreams: { 'api.anthropic.com': `127.0.0.1:${upstream.port}` } },
  });
});

afterAll(async () => {
  await h.close();
  await upstream.close();
});

/** The body as the box's client would read it: decoded when it says it is coded. */
function plainBody(r: ReceivedResponse): string {
  const coding = r.headers['content-encoding'];
  if (coding === 'gzip') return zlib.gunzipSync(r.raw).toString();
  if (coding === 'br') return zlib.brotliDecompressSync(r.raw).toString();
  return r.raw.toString();
}

function ask(headers: Record<string, string> = {}) {
  return proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/messages', {
    ca: [h.box.caCertPem],
    headers: { 'x-api-key': h.box.env.ANTHROPIC_API_KEY!, 'accept-encoding': 'gzip, br', ...headers },
  });
}

describe('echoed credentials in compressed answers', () => {
  it('a box asking for gzip gets an uncoded, scrubbed echo: upstream was asked for identity, without Range', async () => {
    mode = 'negotiate';
    const r = await ask({ range: 'bytes=10-40' });
    expect(r.status).toBe(200);
    const seen = upstream.seen.at(-1)!;
    expect(seen.headers['x-api-key']).toBe(REAL_KEY);
    expect(seen.headers['accept-encoding']).toBe('identity');
    expect(seen.headers.range).toBeUndefined();
    expect(plainBody(r)).not.toContain(REAL_KEY);
    expect(plainBody(r)).toContain(h.box.env.ANTHROPIC_API_KEY);
  });

  it.each(['always-gzip', 'always-br'] as const)(
    'an upstream that ignores identity (%s) is decoded before the scrub',
    async (coding) => {
      mode = coding;
      const r = await ask();
      expect(r.status).toBe(200);
      expect(r.headers['content-encoding']).toBeUndefined();
      expect(r.body).not.toContain(REAL_KEY);
      expect(JSON.parse(r.body)).toMatchObject({
        headers: { 'x-api-key': h.box.env.ANTHROPIC_API_KEY },
      });
    },
  );

  it('a coding the gateway cannot read is refused: 502 upstream_failed, audited, nothing passed on', async () => {
    mode = 'unknown-coding';
    const since = h.audit.records.length;
    const r = await ask();
    expect(r.status).toBe(502);
    expect(r.headers['x-agentbox-error']).toBe('upstream_failed');
    expect(r.raw.toString('latin1')).not.toContain(REAL_KEY);
    const record = await h.audit.waitFor(
      (rec) => h.audit.records.indexOf(rec) >= since && rec.method !== 'CONNECT',
    );
    expect(record).toMatchObject({ decision: 'error', code: 'upstream_failed' });
    expect(record.reason).toContain('x-custom');
  });

  it('a body that claims gzip but does not decode is cut, never passed on raw', async () => {
    mode = 'corrupt-gzip';
    const outcome = await ask().catch((err: unknown) => err);
    if (!(outcome instanceof Error))
      expect((outcome as ReceivedResponse).raw.toString()).not.toContain(REAL_KEY);
    expect(JSON.stringify(h.audit.records)).not.toContain(REAL_KEY);
  });
});
