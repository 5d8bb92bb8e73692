import { execFile } from 'node:child_process';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CertificateAuthority, LookupFn } from '../../src/index.js';
import {
  connect,
  createTestCa,
  proxyHttp,
  proxyHttps,
  startHarness,
  startHttpUpstream,
  startHttpsUpstream,
  type FakeUpstream,
  type Harness,
} from '../helpers/egress-harness.js';

/**
 * The adversarial suite at the gateway level: real TCP sockets into box.handleConnection(), real
 * HTTP/TLS clients, fake upstreams on 127.0.0.1 reached only through the upstream map. Every
 * refusal must carry the right X-Agentbox-Deny code, leave an audit record, and reach no upstream.
 */

const execFileP = promisify(execFile);
const HOST_ADDRESS = '198.51.99.7';

/** DNS as the box's attacker would like it: names that rebind to forbidden places. */
const FAKE_DNS: Record<string, string[]> = {
  'rebind.test': ['127.0.0.1'],
  'rebind6.test': ['::1'],
  'mapped-loop.test': ['::ffff:127.0.0.1'],
  'private.test': ['10.0.0.1'],
  'meta.test': ['169.254.169.254'],
  'meta6.test': ['fd00:ec2::254'],
  'mixed.test': ['93.184.216.34', '127.0.0.1'],
  'hostaddr.test': [HOST_ADDRESS],
  'cgnat.test': ['100.64.0.1'],
  'linklocal.test': ['fe80::1'],
  'zero.test': ['0.0.0.0'],
};
const lookup: LookupFn = async (hostname) => {
  if (hostname.endsWith('.wild.test')) return [{ address: '127.0.0.1', family: 4 }];
  const found = FAKE_DNS[hostname];
  if (found === undefined)
    throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });
  return found.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
};

let ca: CertificateAuthority;
let plain: FakeUpstream;
let secure: FakeUpstream;
let h: Harness;

beforeAll(async () => {
  ca = await createTestCa();
  plain = await startHttpUpstream();
  secure = await startHttpsUpstream(ca, [
    'allowed.test',
    'api.anthropic.com',
    'github.com',
    'api.github.com',
  ]);
  const tls = `127.0.0.1:${secure.port}`;
  h = await startHarness({
    lookup,
    hostAddresses: () => [HOST_ADDRESS],
    upstreamCaPem: ca.certPem,
    secrets: { ANTHROPIC_API_KEY: 'sk-ant-real-0123456789' },
    policy: {
      allowDomains: [
        'allowed.test',
        'plain.test',
        'localhost',
        'nxdomain.test',
        '*.wild.test',
        ...Object.keys(FAKE_DNS),
      ],
      denyDomains: ['blocked.allowed.test', 'blocked.test'],
      presets: ['anthropic', 'github'],
      repos: ['acme/widgets'],
      upstreams: {
        'plain.test': `127.0.0.1:${plain.port}`,
        'allowed.test': tls,
        'api.anthropic.com': tls,
        'github.com': tls,
        'api.github.com': tls,
        // Mapped, yet refused: the map never bypasses the policy decision.
        localhost: `127.0.0.1:${plain.port}`,
        'blocked.test': `127.0.0.1:${plain.port}`,
      },
    },
  });
});

afterAll(async () => {
  await h.close();
  await plain.close();
  await secure.close();
});

function upstreamHits(): number {
  return plain.seen.length + secure.seen.length;
}

/** The deny record written for the request made since `since` records were kept. */
async function expectDenyRecord(code: string, since: number): Promise<void> {
  const record = await h.audit.waitFor((r) => h.audit.records.indexOf(r) >= since && r.decision === 'deny');
  expect(record.code).toBe(code);
  expect(record.reason).not.toMatch(/sk-ant-real/);
}

describe('CONNECT refusals: 403 + X-Agentbox-Deny, audited, no upstream reached', () => {
  const CASES: Array<[string, string]> = [
    ['evil.test:443', 'domain_not_allowed'],
    ['blocked.allowed.test:443', 'domain_denied'],
    ['blocked.test:443', 'domain_denied'],
    ['93.184.216.34:443', 'ip_literal_not_allowed'],
    ['10.0.0.1:443', 'ip_literal_not_allowed'],
    ['169.254.169.254:80', 'ip_literal_not_allowed'],
    ['127.0.0.1:443', 'ip_literal_not_allowed'],
    ['[::1]:443', 'ip_literal_not_allowed'],
    ['[::ffff:127.0.0.1]:443', 'ip_literal_not_allowed'],
    ['0.0.0.0:443', 'ip_literal_not_allowed'],
    ['2130706433:443', 'ip_literal_not_allowed'],
    ['127.1:443', 'ip_literal_not_allowed'],
    ['0x7f000001:443', 'ip_literal_not_allowed'],
    ['localhost:443', 'address_not_allowed'],
    ['LOCALHOST.:443', 'address_not_allowed'],
    ['metadata.google.internal:80', 'address_not_allowed'],
    ['rebind.test:443', 'address_not_allowed'],
    ['rebind6.test:443', 'address_not_allowed'],
    ['mapped-loop.test:443', 'address_not_allowed'],
    ['private.test:443', 'address_not_allowed'],
    ['meta.test:80', 'address_not_allowed'],
    ['meta6.test:443', 'address_not_allowed'],
    ['mixed.test:443', 'address_not_allowed'],
    ['hostaddr.test:443', 'address_not_allowed'],
    ['cgnat.test:443', 'address_not_allowed'],
    ['linklocal.test:443', 'address_not_allowed'],
    ['zero.test:443', 'address_not_allowed'],
    ['anything.wild.test:443', 'address_not_allowed'],
    ['allowed.test:22', 'port_not_allowed'],
    ['allowed.test:6379', 'port_not_allowed'],
    ['allowed.test', 'bad_request'],
    ['user@allowed.test:443', 'bad_request'],
    ['allowed.test:99999', 'bad_request'],
  ];
  it.each(CASES)('CONNECT %s → %s', async (authority, code) => {
    const before = upstreamHits();
    const since = h.audit.records.length;
    const answer = await connect(h.proxyPort, authority);
    expect(answer.status).toBe(403);
    expect(answer.headers['x-agentbox-deny']).toBe(code);
    expect(answer.body).toMatch(new RegExp(`^agentbox egress: ${code}: .+\\n$`));
    expect(answer.socket).toBeUndefined();
    expect(upstreamHits()).toBe(before);
    await expectDenyRecord(code, since);
  });

  it('an allowed name that does not resolve is a 502 with X-Agentbox-Error: dns_failed, not a 403', async () => {
    const answer = await connect(h.proxyPort, 'nxdomain.test:443');
    expect(answer.status).toBe(502);
    expect(answer.headers['x-agentbox-error']).toBe('dns_failed');
    expect(answer.headers['x-agentbox-deny']).toBeUndefined();
    await h.audit.waitFor((r) => r.code === 'dns_failed' && r.decision === 'error');
  });
});

describe('plain-HTTP refusals', () => {
  const CASES: Array<[string, string]> = [
    ['http://evil.test/', 'domain_not_allowed'],
    ['http://blocked.test/', 'domain_denied'],
    ['http://10.0.0.1/', 'ip_literal_not_allowed'],
    ['http://169.254.169.254/latest/meta-data/iam/security-credentials/', 'ip_literal_not_allowed'],
    ['http://[::1]/', 'ip_literal_not_allowed'],
    ['http://[fd00:ec2::254]/latest/meta-data/', 'ip_literal_not_allowed'],
    ['http://localhost/', 'address_not_allowed'],
    ['http://metadata.google.internal/computeMetadata/v1/', 'address_not_allowed'],
    ['http://rebind.test/', 'address_not_allowed'],
    ['http://meta.test/latest/meta-data/', 'address_not_allowed'],
    ['http://plain.test:8080/', 'port_not_allowed'],
    ['/', 'bad_request'],
    ['https://allowed.test/', 'bad_request'],
    ['http://user:pw@plain.test/', 'bad_request'],
  ];
  it.each(CASES)('GET %s → %s', async (url, code) => {
    const before = upstreamHits();
    const since = h.audit.records.length;
    const answer = await proxyHttp(h.proxyPort, url);
    expect(answer.status).toBe(403);
    expect(answer.headers['x-agentbox-deny']).toBe(code);
    expect(answer.body.split('\n')).toHaveLength(2);
    expect(upstreamHits()).toBe(before);
    await expectDenyRecord(code, since);
  });

  it('refuses protocol upgrades (WebSocket) with bad_request', async () => {
    const since = h.audit.records.length;
    const answer = await proxyHttp(h.proxyPort, 'http://plain.test/ws', {
      headers: { connection: 'Upgrade', upgrade: 'websocket' },
    }).catch(() => undefined);
    // Node's client surfaces a 403 to an upgrade as a response or a socket error; both are refusals.
    if (answer !== undefined) expect(answer.status).toBe(403);
    await expectDenyRecord('bad_request', since);
    expect(plain.seen.some((e) => e.url === '/ws')).toBe(false);
  });
});

describe('refusals inside terminated TLS', () => {
  const boxCa = (): string[] => [h.box.caCertPem];

  it('SNI naming another host than the CONNECT target → sni_mismatch', async () => {
    const before = secure.seen.length;
    const r = await proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/messages', {
      ca: boxCa(),
      servername: 'allowed.test',
      hostHeader: 'allowed.test',
      skipNameCheck: true,
    });
    expect(r.status).toBe(403);
    expect(r.headers['x-agentbox-deny']).toBe('sni_mismatch');
    expect(secure.seen.length).toBe(before);
  });

  it('Host header naming another host (domain fronting) → sni_mismatch', async () => {
    const r = await proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/messages', {
      ca: boxCa(),
      hostHeader: 'evil.test',
    });
    expect(r.status).toBe(403);
    expect(r.headers['x-agentbox-deny']).toBe('sni_mismatch');
  });

  it('no SNI at all → sni_mismatch', async () => {
    const r = await proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/messages', {
      ca: boxCa(),
      servername: '',
      skipNameCheck: true,
    });
    expect(r.headers['x-agentbox-deny']).toBe('sni_mismatch');
  });

  it('GitHub: off-list repository over git smart HTTP → github_repo_not_allowed', async () => {
    const r = await proxyHttps(
      h.proxyPort,
      'github.com',
      '/acme/secret.git/info/refs?service=git-upload-pack',
      {
        ca: boxCa(),
      },
    );
    expect(r.status).toBe(403);
    expect(r.headers['x-agentbox-deny']).toBe('github_repo_not_allowed');
  });

  it('GitHub: API outside the listed repository, and a dot-segment escape → github_repo_not_allowed', async () => {
    for (const p of ['/user', '/repos/acme/widgets/../../other/repo/issues', '/graphql']) {
      const r = await proxyHttps(h.proxyPort, 'api.github.com', p, { ca: boxCa() });
      expect(r.headers['x-agentbox-deny']).toBe('github_repo_not_allowed');
    }
  });

  it('GitHub: the listed repository passes (case-insensitive), and reaches the upstream', async () => {
    const r = await proxyHttps(
      h.proxyPort,
      'github.com',
      '/Acme/Widgets.git/info/refs?service=git-upload-pack',
      {
        ca: boxCa(),
      },
    );
    expect(r.status).toBe(200);
    expect(secure.seen.at(-1)?.url).toBe('/Acme/Widgets.git/info/refs?service=git-upload-pack');
    const api = await proxyHttps(h.proxyPort, 'api.github.com', '/repos/acme/widgets/pulls', { ca: boxCa() });
    expect(api.status).toBe(200);
  });

  it('a client that does not trust the box CA cannot be intercepted silently (TLS fails)', async () => {
    await expect(proxyHttps(h.proxyPort, 'api.anthropic.com', '/', { ca: [ca.certPem] })).rejects.toThrow();
  });
});

describe('what is allowed works, untouched where no rule applies', () => {
  it('plain HTTP to a mapped allowed host; hop-by-hop and proxy headers are not forwarded', async () => {
    const r = await proxyHttp(h.proxyPort, 'http://plain.test/path?q=1', {
      headers: { 'proxy-authorization': 'Basic eDp5', 'proxy-connection': 'keep-alive', 'x-custom': 'kept' },
    });
    expect(r.status).toBe(200);
    const seen = plain.seen.at(-1)!;
    expect(seen.url).toBe('/path?q=1');
    expect(seen.headers.host).toBe('plain.test');
    expect(seen.headers['x-custom']).toBe('kept');
    expect(seen.headers['proxy-authorization']).toBeUndefined();
    expect(seen.headers['proxy-connection']).toBeUndefined();
    const record = await h.audit.waitFor((x) => x.mode === 'http' && x.path === '/path');
    expect(record).toMatchObject({ decision: 'allow', code: 'allowed', method: 'GET' });
    expect(record.bytesDown).toBeGreaterThan(0);
  });

  it('HTTPS to a host without a rule is tunnelled: the upstream certificate reaches the client', async () => {
    const r = await proxyHttps(h.proxyPort, 'allowed.test', '/hello', { ca: [ca.certPem] });
    expect(r.status).toBe(200);
    expect(r.peerCertIssuer).toBe('agentbox test upstream CA');
    const record = await h.audit.waitFor((x) => x.mode === 'tunnel' && x.host === 'allowed.test');
    expect(record.bytesUp).toBeGreaterThan(0);
    expect(record.bytesDown).toBeGreaterThan(0);
  });

  it('HTTPS to a rule host is terminated with the box CA', async () => {
    const r = await proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/models', { ca: [h.box.caCertPem] });
    expect(r.status).toBe(200);
    expect(r.peerCertIssuer).toBe('agentbox box-test000001 egress CA');
  });

  it('the upstream map is test-only: a gateway without allowUpstreamMap refuses such a policy', async () => {
    const { createEgressGateway } = await import('../../src/index.js');
    const gateway = createEgressGateway();
    await expect(
      gateway.openBox({ boxId: 'box-nomap00001', policy: { upstreams: { 'a.test': '127.0.0.1:1' } } }),
    ).rejects.toMatchObject({ code: 'invalid_request' });
    await expect(
      gateway.openBox({ boxId: 'box-bad0000001', policy: { allowDomains: ['*'] } }),
    ).rejects.toMatchObject({
      code: 'invalid_request',
    });
  });

  it('a raw client sending garbage gets a 400 and the gateway keeps serving', async () => {
    const socket = net.connect(h.proxyPort, '127.0.0.1');
    socket.write('NOT HTTP AT ALL\r\n\r\n');
    const reply = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (c: Buffer) => (text += c.toString()));
      socket.on('close', () => resolve(text));
    });
    expect(reply).toMatch(/^HTTP\/1.1 400/);
    expect((await proxyHttp(h.proxyPort, 'http://plain.test/')).status).toBe(200);
  });
});

describe('curl as the client (a real proxy client)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'egress-curl-'));
    await writeFile(path.join(dir, 'box-ca.pem'), h.box.caCertPem);
    await writeFile(path.join(dir, 'test-ca.pem'), ca.certPem);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  async function curl(args: string[]): Promise<{ code: string; headers: string; body: string }> {
    const out = await execFileP('curl', [
      '-s',
      '-D',
      '-',
      '-x',
      `http://127.0.0.1:${h.proxyPort}`,
      '--noproxy',
      '',
      '-w',
      '\n%{http_code} %{http_connect}',
      ...args,
    ]).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
    const lines = out.stdout.trimEnd().split('\n');
    const codes = lines.pop() ?? '';
    const text = lines.join('\n');
    return { code: codes, headers: text, body: text };
  }

  it('curl -x to an allowed plain-HTTP host works', async () => {
    const r = await curl(['http://plain.test/from-curl']);
    expect(r.code.split(' ')[0]).toBe('200');
    expect(plain.seen.at(-1)?.url).toBe('/from-curl');
  });

  it('curl -x https through the box CA to a rule host works', async () => {
    const r = await curl(['--cacert', path.join(dir, 'box-ca.pem'), 'https://api.anthropic.com/v1/ping']);
    expect(r.code.split(' ')[0]).toBe('200');
  });

  it('curl -x to a denied domain gets the 403 on CONNECT', async () => {
    const r = await curl(['--cacert', path.join(dir, 'test-ca.pem'), 'https://evil.test/']);
    expect(r.code.split(' ')[1]).toBe('403');
    expect(r.headers.toLowerCase()).toContain('x-agentbox-deny: domain_not_allowed');
  });

  it('curl -x to the metadata IP over plain HTTP gets 403 ip_literal_not_allowed', async () => {
    const r = await curl(['http://169.254.169.254/latest/meta-data/']);
    expect(r.code.split(' ')[0]).toBe('403');
    expect(r.headers.toLowerCase()).toContain('x-agentbox-deny: ip_literal_not_allowed');
  });
});
