import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CertificateAuthority } from '../../src/index.js';
import {
  createTestCa,
  proxyHttp,
  proxyHttps,
  startHarness,
  startHttpUpstream,
  startHttpsUpstream,
  type Echo,
  type FakeUpstream,
  type Harness,
} from '../helpers/egress-harness.js';

/**
 * Placeholders through the real gateway: swapped for the real value only for the rule's host and
 * header over terminated TLS; anywhere else they pass unchanged and the audit flags a leak. The
 * real values never come back to the box, nor appear in audit records or refusals.
 */

const REAL = {
  ANTHROPIC_API_KEY: 'sk-ant-api-REAL-aaaaaaaaaaaaaaaa',
  OPENAI_API_KEY: 'sk-openai-REAL-bbbbbbbbbbbbbbbb',
  GITHUB_TOKEN: 'ghp_REALcccccccccccccccccccccccc',
  CLAUDE_CODE_OAUTH_REFRESH_TOKEN: 'sk-ant-ort-REAL-dddddddddddddddd',
};
const REAL_VALUES = (): string[] => [
  ...Object.values(REAL),
  'sk-ant-oat-REAL-new-access-eeeeeeee',
  'sk-ant-ort-REAL-rotated-ffffffffff',
];

let ca: CertificateAuthority;
let plain: FakeUpstream;
let secure: FakeUpstream;
let h: Harness;
let other: Harness;
/** Same policy and secrets, but no `repos` list. */
let noRepos: Harness;

beforeAll(async () => {
  ca = await createTestCa();
  plain = await startHttpUpstream();
  secure = await startHttpsUpstream(ca, [
    'api.anthropic.com',
    'api.openai.com',
    'github.com',
    'api.github.com',
    'console.anthropic.com',
    'allowed.test',
  ]);
  const tls = `127.0.0.1:${secure.port}`;
  const unlisted = {
    allowDomains: ['allowed.test', 'plain.test'],
    presets: ['anthropic' as const, 'openai' as const, 'github' as const],
    upstreams: {
      'plain.test': `127.0.0.1:${plain.port}`,
      'allowed.test': tls,
      'api.anthropic.com': tls,
      'api.openai.com': tls,
      'github.com': tls,
      'api.github.com': tls,
      'console.anthropic.com': tls,
    },
  };
  // the GitHub token is injected for listed repositories only
  const policy = { ...unlisted, repos: ['acme/widgets'] };
  h = await startHarness({ upstreamCaPem: ca.certPem, secrets: REAL, policy });
  other = await startHarness({
    boxId: 'box-other00001',
    upstreamCaPem: ca.certPem,
    secrets: { ANTHROPIC_API_KEY: 'sk-ant-other-box-value' },
    policy,
  });
  noRepos = await startHarness({
    boxId: 'box-norepos0001',
    upstreamCaPem: ca.certPem,
    secrets: REAL,
    policy: unlisted,
  });
});

afterAll(async () => {
  await h.close();
  await other.close();
  await noRepos.close();
  await plain.close();
  await secure.close();
});

const ph = (name: keyof typeof REAL | 'CLAUDE_CODE_OAUTH_TOKEN'): string => h.box.env[name]!;
const boxCa = (): string[] => [h.box.caCertPem];
const lastSeen = (): Echo => secure.seen.at(-1)!;

async function lastRecord(since: number) {
  return h.audit.waitFor((r) => h.audit.records.indexOf(r) >= since && r.method !== 'CONNECT');
}

describe('placeholders in the box environment', () => {
  it('are one random agentbox-ph-… per secret that has a rule, and never a real value', () => {
    expect(Object.keys(h.box.env).sort()).toEqual(
      ['ANTHROPIC_API_KEY', 'CLAUDE_CODE_OAUTH_REFRESH_TOKEN', 'GITHUB_TOKEN', 'OPENAI_API_KEY'].sort(),
    );
    for (const value of Object.values(h.box.env)) expect(value).toMatch(/^agentbox-ph-[0-9a-f]{32}$/);
    expect(new Set(Object.values(h.box.env)).size).toBe(4);
    expect(other.box.env.ANTHROPIC_API_KEY).not.toBe(ph('ANTHROPIC_API_KEY'));
    expect(JSON.stringify(h.box)).not.toMatch(/REAL/);
  });
});

describe('swapped only for the rule host and header', () => {
  it('x-api-key to api.anthropic.com: the upstream gets the real key, the box sees only the placeholder', async () => {
    const since = h.audit.records.length;
    const r = await proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/messages', {
      ca: boxCa(),
      method: 'POST',
      headers: { 'x-api-key': ph('ANTHROPIC_API_KEY'), 'content-type': 'application/json' },
      body: '{"model":"m"}',
    });
    expect(r.status).toBe(200);
    expect(lastSeen().headers['x-api-key']).toBe(REAL.ANTHROPIC_API_KEY);
    // The fake upstream echoes the request headers: the echo is scrubbed back to the placeholder.
    expect(r.body).toContain(ph('ANTHROPIC_API_KEY'));
    expect(r.body).not.toContain(REAL.ANTHROPIC_API_KEY);
    const record = await lastRecord(since);
    expect(record).toMatchObject({
      injected: ['ANTHROPIC_API_KEY'],
      placeholderLeak: false,
      mode: 'intercept',
    });
  });

  it('Bearer to api.openai.com: swapped; the scheme is kept', async () => {
    await proxyHttps(h.proxyPort, 'api.openai.com', '/v1/chat/completions', {
      ca: boxCa(),
      headers: { authorization: `Bearer ${ph('OPENAI_API_KEY')}` },
    });
    expect(lastSeen().headers.authorization).toBe(`Bearer ${REAL.OPENAI_API_KEY}`);
  });

  it('git Basic auth to github.com: the token inside the credentials is swapped', async () => {
    const basic = Buffer.from(`x-access-token:${ph('GITHUB_TOKEN')}`).toString('base64');
    await proxyHttps(h.proxyPort, 'github.com', '/acme/widgets.git/info/refs?service=git-upload-pack', {
      ca: boxCa(),
      headers: { authorization: `Basic ${basic}` },
    });
    const sent = String(lastSeen().headers.authorization);
    expect(Buffer.from(sent.replace('Basic ', ''), 'base64').toString()).toBe(
      `x-access-token:${REAL.GITHUB_TOKEN}`,
    );
  });

  it('gh-style `token <placeholder>` to api.github.com is swapped', async () => {
    await proxyHttps(h.proxyPort, 'api.github.com', '/repos/acme/widgets', {
      ca: boxCa(),
      headers: { authorization: `token ${ph('GITHUB_TOKEN')}` },
    });
    expect(lastSeen().headers.authorization).toBe(`token ${REAL.GITHUB_TOKEN}`);
  });
});

describe('the GitHub token without a repos list', () => {
  it('is never injected: GitHub is tunnelled, any repository gets the placeholder only', async () => {
    const placeholder = noRepos.box.env.GITHUB_TOKEN!;
    const since = noRepos.audit.records.length;
    const basic = Buffer.from(`x-access-token:${placeholder}`).toString('base64');
    const git = await proxyHttps(noRepos.proxyPort, 'github.com', '/someone/private.git/info/refs', {
      ca: [ca.certPem], // the upstream's own certificate: the gateway does not terminate TLS
      headers: { authorization: `Basic ${basic}` },
    });
    expect(git.status).toBe(200);
    expect(git.peerCertIssuer).toBe('agentbox test upstream CA');
    expect(Buffer.from(String(lastSeen().headers.authorization).slice(6), 'base64').toString()).toBe(
      `x-access-token:${placeholder}`,
    );
    const api = await proxyHttps(noRepos.proxyPort, 'api.github.com', '/repos/someone/private', {
      ca: [ca.certPem],
      headers: { authorization: `token ${placeholder}` },
    });
    expect(api.status).toBe(200);
    expect(lastSeen().headers.authorization).toBe(`token ${placeholder}`);
    const records = noRepos.audit.records.slice(since);
    expect(records.length).toBeGreaterThan(0);
    expect(records.every((r) => r.mode === 'tunnel' && r.injected === undefined)).toBe(true);
    expect(JSON.stringify(records)).not.toContain(REAL.GITHUB_TOKEN);
  });
});

describe('never swapped anywhere else, and flagged', () => {
  it('the Anthropic placeholder sent to api.openai.com stays a placeholder (leak)', async () => {
    const since = h.audit.records.length;
    await proxyHttps(h.proxyPort, 'api.openai.com', '/v1/models', {
      ca: boxCa(),
      headers: { authorization: `Bearer ${ph('ANTHROPIC_API_KEY')}` },
    });
    expect(lastSeen().headers.authorization).toBe(`Bearer ${ph('ANTHROPIC_API_KEY')}`);
    expect(await lastRecord(since)).toMatchObject({ placeholderLeak: true });
  });

  it('the right placeholder in the wrong header of the right host stays (leak)', async () => {
    const since = h.audit.records.length;
    await proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/messages', {
      ca: boxCa(),
      headers: { 'x-debug': ph('ANTHROPIC_API_KEY'), authorization: `Bearer ${ph('ANTHROPIC_API_KEY')}` },
    });
    expect(lastSeen().headers['x-debug']).toBe(ph('ANTHROPIC_API_KEY'));
    expect(lastSeen().headers.authorization).toBe(`Bearer ${ph('ANTHROPIC_API_KEY')}`);
    const record = await lastRecord(since);
    expect(record.placeholderLeak).toBe(true);
    expect(record.injected).toBeUndefined();
  });

  it('a placeholder in the body is not swapped (leak), even on the rule host', async () => {
    const since = h.audit.records.length;
    const body = JSON.stringify({ prompt: `my key is ${ph('ANTHROPIC_API_KEY')}` });
    const r = await proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/messages', {
      ca: boxCa(),
      method: 'POST',
      headers: { 'x-api-key': ph('ANTHROPIC_API_KEY'), 'content-type': 'application/json' },
      body,
    });
    expect(lastSeen().body).toBe(body);
    expect(r.body).not.toContain(REAL.ANTHROPIC_API_KEY);
    expect(await lastRecord(since)).toMatchObject({ placeholderLeak: true, injected: ['ANTHROPIC_API_KEY'] });
  });

  it('a placeholder in the query string is not swapped (leak)', async () => {
    const since = h.audit.records.length;
    await proxyHttps(h.proxyPort, 'api.anthropic.com', `/v1/models?key=${ph('ANTHROPIC_API_KEY')}`, {
      ca: boxCa(),
    });
    expect(lastSeen().url).toContain(ph('ANTHROPIC_API_KEY'));
    const record = await lastRecord(since);
    expect(record.placeholderLeak).toBe(true);
    expect(record.path).toBe('/v1/models'); // the audit keeps no query string
  });

  it('over plain HTTP nothing is ever swapped, even the right header for a rule host name', async () => {
    const since = h.audit.records.length;
    await proxyHttp(h.proxyPort, 'http://plain.test/', { headers: { 'x-api-key': ph('ANTHROPIC_API_KEY') } });
    expect(plain.seen.at(-1)?.headers['x-api-key']).toBe(ph('ANTHROPIC_API_KEY'));
    expect(await lastRecord(since)).toMatchObject({ placeholderLeak: true, mode: 'http' });
  });

  it('a tunnelled host (no rule) receives the placeholder untouched', async () => {
    await proxyHttps(h.proxyPort, 'allowed.test', '/', {
      ca: [ca.certPem],
      headers: { 'x-api-key': ph('ANTHROPIC_API_KEY') },
    });
    expect(lastSeen().headers['x-api-key']).toBe(ph('ANTHROPIC_API_KEY'));
  });

  it("another box's placeholder is not swapped by this box", async () => {
    await proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/messages', {
      ca: boxCa(),
      headers: { 'x-api-key': other.box.env.ANTHROPIC_API_KEY! },
    });
    expect(lastSeen().headers['x-api-key']).toBe(other.box.env.ANTHROPIC_API_KEY);
  });

  it('a secret the box was not given is never injected', async () => {
    const limited = await startHarness({
      boxId: 'box-limited0001',
      upstreamCaPem: ca.certPem,
      secrets: REAL,
      boxSecrets: ['OPENAI_API_KEY'],
      policy: { presets: ['anthropic'], upstreams: { 'api.anthropic.com': `127.0.0.1:${secure.port}` } },
    });
    try {
      expect(Object.keys(limited.box.env)).toEqual(['OPENAI_API_KEY']);
      const r = await proxyHttps(limited.proxyPort, 'api.anthropic.com', '/v1/messages', {
        ca: [ca.certPem], // not intercepted at all: no rule for this box, so the real upstream cert
        headers: { 'x-api-key': ph('ANTHROPIC_API_KEY') },
      });
      expect(r.peerCertIssuer).toBe('agentbox test upstream CA');
      expect(lastSeen().headers['x-api-key']).toBe(ph('ANTHROPIC_API_KEY'));
    } finally {
      await limited.close();
    }
  });
});

describe('OAuth refresh answered on the host', () => {
  it('refreshes with the real token and hands the box a new placeholder that works for the API', async () => {
    secure.handler = (req, body, res) => {
      if (req.url === '/v1/oauth/token') {
        const sent = JSON.parse(body.toString()) as { refresh_token: string; grant_type: string };
        const ok =
          sent.grant_type === 'refresh_token' && sent.refresh_token === REAL.CLAUDE_CODE_OAUTH_REFRESH_TOKEN;
        const answer = ok
          ? {
              access_token: 'sk-ant-oat-REAL-new-access-eeeeeeee',
              refresh_token: 'sk-ant-ort-REAL-rotated-ffffffffff',
              expires_in: 28800,
              token_type: 'Bearer',
            }
          : { error: 'invalid_grant', echoed: sent.refresh_token };
        res.writeHead(ok ? 200 : 400, { 'content-type': 'application/json' });
        res.end(JSON.stringify(answer));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ authorization: req.headers.authorization }));
    };
    try {
      const refreshPh = ph('CLAUDE_CODE_OAUTH_REFRESH_TOKEN');
      const r = await proxyHttps(h.proxyPort, 'console.anthropic.com', '/v1/oauth/token', {
        ca: boxCa(),
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ grant_type: 'refresh_token', refresh_token: refreshPh, client_id: 'cid' }),
      });
      expect(r.status).toBe(200);
      const tokens = JSON.parse(r.body) as {
        access_token: string;
        refresh_token: string;
        expires_in: number;
      };
      expect(tokens.access_token).toMatch(/^agentbox-ph-[0-9a-f]{32}$/);
      expect(tokens.refresh_token).toBe(refreshPh);
      expect(tokens.expires_in).toBe(28800);
      expect(h.secrets.reveal('CLAUDE_CODE_OAUTH_REFRESH_TOKEN')).toBe('sk-ant-ort-REAL-rotated-ffffffffff');

      // The new access placeholder is swapped by the Bearer rule of api.anthropic.com.
      const api = await proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/messages', {
        ca: boxCa(),
        headers: { authorization: `Bearer ${tokens.access_token}` },
      });
      expect(lastSeen().headers.authorization).toBe('Bearer sk-ant-oat-REAL-new-access-eeeeeeee');
      expect(api.body).not.toContain('REAL');

      // A refresh with something else than the placeholder goes through untouched; an upstream
      // error that echoes the token shows the box nothing real either.
      const bad = await proxyHttps(h.proxyPort, 'console.anthropic.com', '/v1/oauth/token', {
        ca: boxCa(),
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ grant_type: 'refresh_token', refresh_token: 'guess' }),
      });
      expect(bad.status).toBe(400);
      expect(bad.body).toContain('guess');
    } finally {
      secure.handler = (req, body, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: body.toString() }),
        );
      };
    }
  });
});

describe('real values never leave the host side', () => {
  it('appear in no audit record and no refusal', async () => {
    const denied = await proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/messages', {
      ca: boxCa(),
      hostHeader: 'evil.test',
      headers: { 'x-api-key': ph('ANTHROPIC_API_KEY') },
    });
    expect(denied.headers['x-agentbox-deny']).toBe('sni_mismatch');
    const everything = JSON.stringify(h.audit.records) + denied.body;
    for (const value of REAL_VALUES()) expect(everything).not.toContain(value);
    expect(h.audit.records.length).toBeGreaterThan(10);
  });

  it('the secret store shows names only', () => {
    expect(JSON.stringify(h.secrets)).not.toMatch(/REAL/);
    expect(String(h.secrets.names())).toContain('ANTHROPIC_API_KEY');
  });
});
