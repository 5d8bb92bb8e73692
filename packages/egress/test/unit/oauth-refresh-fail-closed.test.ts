import type http from 'node:http';
import zlib from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CertificateAuthority } from '../../src/index.js';
import {
  createTestCa,
  proxyHttps,
  startHarness,
  startHttpsUpstream,
  type FakeUpstream,
  type Harness,
} from '../helpers/egress-harness.js';

/**
 * OAuth refresh is answered on the host with the real refresh token. Whatever the token endpoint
 * answers, the box never sees a real token: a success that is not the JSON token object is refused
 * like any failed refresh (502 oauth_refresh_failed), and a coded answer is decoded before it is
 * rewritten or scrubbed.
 */

const REAL_REFRESH = 'sk-ant-ort-REAL-failclosed-1111111111';
const NEW_ACCESS = 'sk-ant-oat-REAL-new-access-2222222222';
const ROTATED = 'sk-ant-ort-REAL-rotated-3333333333';
const REAL_VALUES = [REAL_REFRESH, NEW_ACCESS, ROTATED];

let ca: CertificateAuthority;
let upstream: FakeUpstream;
let h: Harness;
/** What the fake token endpoint answers, given the refresh token it received. */
let answer: (sentRefresh: string, res: http.ServerResponse) => void;

beforeAll(async () => {
  ca = await createTestCa();
  upstream = await startHttpsUpstream(ca, ['console.anthropic.com']);
  upstream.handler = (_req, body, res) => {
    const sent = (JSON.parse(body.toString()) as { refresh_token: string }).refresh_token;
    answer(sent, res);
  };
  h = await startHarness({
    upstreamCaPem: ca.certPem,
    secrets: { CLAUDE_CODE_OAUTH_REFRESH_TOKEN: REAL_REFRESH },
    policy: {
      presets: ['anthropic'],
      upstreams: { 'console.anthropic.com': `127.0.0.1:${upstream.port}` },
    },
  });
});

beforeEach(() => {
  h.secrets.set('CLAUDE_CODE_OAUTH_REFRESH_TOKEN', REAL_REFRESH);
});

afterAll(async () => {
  await h.close();
  await upstream.close();
});

const refreshPh = (): string => h.box.env.CLAUDE_CODE_OAUTH_REFRESH_TOKEN!;

async function refresh() {
  const since = h.audit.records.length;
  const r = await proxyHttps(h.proxyPort, 'console.anthropic.com', '/v1/oauth/token', {
    ca: [h.box.caCertPem],
    method: 'POST',
    headers: { 'content-type': 'application/json', 'accept-encoding': 'gzip' },
    body: JSON.stringify({ grant_type: 'refresh_token', refresh_token: refreshPh(), client_id: 'cid' }),
  });
  const record = await h.audit.waitFor(
    (rec) => h.audit.records.indexOf(rec) >= since && rec.method !== 'CONNECT',
  );
  const seenByBox = JSON.stringify(r.headers) + r.raw.toString('latin1');
  for (const value of REAL_VALUES) {
    expect(seenByBox).not.toContain(value);
    expect(JSON.stringify(record)).not.toContain(value);
  }
  return { r, record };
}

describe('a successful refresh answer that is not the token object', () => {
  it('200 text/html holding the real tokens → 502 oauth_refresh_failed, nothing real shown', async () => {
    answer = (sent, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<html><p>refresh ${sent}</p><p>access ${NEW_ACCESS}</p><p>next ${ROTATED}</p></html>`);
    };
    const { r, record } = await refresh();
    expect(upstream.seen.at(-1)!.body).toContain(REAL_REFRESH); // the host did refresh for real
    expect(r.status).toBe(502);
    expect(r.headers['x-agentbox-error']).toBe('oauth_refresh_failed');
    expect(record).toMatchObject({ decision: 'error', code: 'oauth_refresh_failed' });
    expect(h.secrets.reveal('CLAUDE_CODE_OAUTH_REFRESH_TOKEN')).toBe(REAL_REFRESH);
  });

  it.each([
    ['no access_token', { token: { access_token: NEW_ACCESS } }],
    ['a non-string access_token', { access_token: [NEW_ACCESS] }],
    ['a JSON array', [{ access_token: NEW_ACCESS }]],
  ])('200 application/json with %s → 502 oauth_refresh_failed', async (_what, data) => {
    answer = (_sent, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(data));
    };
    const { r, record } = await refresh();
    expect(r.status).toBe(502);
    expect(r.headers['x-agentbox-error']).toBe('oauth_refresh_failed');
    expect(record.code).toBe('oauth_refresh_failed');
    expect(h.secrets.reveal('CLAUDE_CODE_OAUTH_REFRESH_TOKEN')).toBe(REAL_REFRESH);
  });

  it.each([
    ['application/json without an access_token', 'application/json', { refresh_token: ROTATED }],
    ['text/plain JSON', 'text/plain', { access_token: NEW_ACCESS, refresh_token: ROTATED }],
  ])(
    'a refused answer (%s) that rotated the refresh token: the box gets 502, the host keeps the new token',
    async (_what, type, data) => {
      answer = (_sent, res) => {
        res.writeHead(200, { 'content-type': type });
        res.end(JSON.stringify(data));
      };
      const { r, record } = await refresh();
      expect(r.status).toBe(502);
      expect(record.code).toBe('oauth_refresh_failed');
      // The old one is spent upstream: keeping it would lock every box out.
      expect(h.secrets.reveal('CLAUDE_CODE_OAUTH_REFRESH_TOKEN')).toBe(ROTATED);
    },
  );
});

describe('coded answers from an endpoint that ignores identity', () => {
  it('a gzipped token object is decoded and rewritten: the box gets placeholders', async () => {
    answer = (_sent, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.end(zlib.gzipSync(JSON.stringify({ access_token: NEW_ACCESS, refresh_token: ROTATED })));
    };
    const { r } = await refresh();
    expect(upstream.seen.at(-1)!.headers['accept-encoding']).toBe('identity');
    expect(r.status).toBe(200);
    expect(r.headers['content-encoding']).toBeUndefined();
    const tokens = JSON.parse(r.body) as { access_token: string; refresh_token: string };
    expect(tokens.access_token).toMatch(/^agentbox-ph-[0-9a-f]{32}$/);
    expect(tokens.refresh_token).toBe(refreshPh());
    expect(h.secrets.reveal('CLAUDE_CODE_OAUTH_REFRESH_TOKEN')).toBe(ROTATED);
  });

  it('a gzipped error echoing the real refresh token (body and header) is decoded and scrubbed', async () => {
    answer = (sent, res) => {
      res.writeHead(400, {
        'content-type': 'application/json',
        'content-encoding': 'gzip',
        'x-echo': sent,
      });
      res.end(zlib.gzipSync(JSON.stringify({ error: 'invalid_grant', echoed: sent })));
    };
    const { r } = await refresh();
    expect(r.status).toBe(400);
    expect(r.headers['x-echo']).toBe(refreshPh());
    expect(JSON.parse(r.body)).toEqual({ error: 'invalid_grant', echoed: refreshPh() });
  });

  it('an unreadable coding → 502 oauth_refresh_failed', async () => {
    answer = (sent, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'zstd' });
      res.end(JSON.stringify({ access_token: NEW_ACCESS, echoed: sent }));
    };
    const { r } = await refresh();
    expect(r.status).toBe(502);
    expect(r.headers['x-agentbox-error']).toBe('oauth_refresh_failed');
  });
});
