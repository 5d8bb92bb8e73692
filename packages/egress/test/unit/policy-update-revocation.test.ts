import http from 'node:http';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EgressPolicyInput } from '@agentbox/protocol';
import { compilePolicy, DEFAULT_INJECTION_RULES, type CertificateAuthority } from '../../src/index.js';
import { redecideOpen, type OpenFacts } from '../../src/open-connections.js';
import type { ConnectTarget } from '../../src/upstream.js';
import {
  connect,
  createTestCa,
  startHarness,
  startHttpUpstream,
  startHttpsUpstream,
  type FakeUpstream,
  type Harness,
} from '../helpers/egress-harness.js';

/**
 * A policy update takes back what the new policy no longer allows: open tunnels, terminated TLS
 * sessions and requests in flight are decided again (redecideOpen, pure) and cut, each cut audited
 * as a denial; what is still allowed stays open. Later requests on kept-alive connections are
 * decided one by one anyway.
 */

// ---- the pure decision ----

const PUBLIC = '93.184.216.34';
const target = (host: string, extra: Partial<ConnectTarget> = {}): ConnectTarget => ({
  host,
  port: 443,
  connectPort: 443,
  addresses: [PUBLIC],
  mapped: false,
  ...extra,
});
const policy = (input: EgressPolicyInput) =>
  compilePolicy(input, { rules: DEFAULT_INJECTION_RULES.filter((r) => r.secret === 'GITHUB_TOKEN') });
const tlsRequest = (host: string, path: string, method = 'GET') => ({
  stage: 'tls_request' as const,
  host,
  port: 443,
  sni: host,
  hostHeader: host,
  method,
  path,
});

interface Row {
  name: string;
  open: OpenFacts;
  policy: EgressPolicyInput;
  code: string;
}

const ROWS: Row[] = [
  {
    name: 'a tunnel the new policy still allows stays',
    open: { mode: 'tunnel', target: target('example.com') },
    policy: { allowDomains: ['example.com'] },
    code: 'allowed',
  },
  {
    name: 'a tunnel to a domain no longer listed is cut',
    open: { mode: 'tunnel', target: target('example.com') },
    policy: { allowDomains: ['other.com'] },
    code: 'domain_not_allowed',
  },
  {
    name: 'a tunnel to a domain now denied is cut',
    open: { mode: 'tunnel', target: target('a.example.com') },
    policy: { allowDomains: ['*.example.com'], denyDomains: ['a.example.com'] },
    code: 'domain_denied',
  },
  {
    name: 'a tunnel to a port no longer allowed is cut',
    open: { mode: 'tunnel', target: target('example.com', { port: 8443, connectPort: 8443 }) },
    policy: { allowDomains: ['example.com'] },
    code: 'port_not_allowed',
  },
  {
    name: 'a tunnel to a LAN address, after allowLan is dropped, is cut (the dialled addresses are checked)',
    open: { mode: 'tunnel', target: target('nas.example.com', { addresses: ['10.0.0.5'] }) },
    policy: { allowDomains: ['nas.example.com'] },
    code: 'address_not_allowed',
  },
  {
    name: 'an IP literal tunnel after its CIDR is dropped is cut',
    open: { mode: 'tunnel', target: target('203.0.113.9', { addresses: ['203.0.113.9'] }) },
    policy: { allowIPs: ['198.51.100.0/24'] },
    code: 'ip_literal_not_allowed',
  },
  {
    name: 'an opaque tunnel to GitHub, once `repos` governs it, is cut (it would bypass the path checks)',
    open: { mode: 'tunnel', target: target('github.com') },
    policy: { presets: ['github'], repos: ['acme/widgets'] },
    code: 'github_repo_not_allowed',
  },
  {
    name: 'a terminated TLS session to GitHub stays when `repos` is dropped (each request is still decided)',
    open: { mode: 'intercept', target: target('github.com') },
    policy: { presets: ['github'] },
    code: 'allowed',
  },
  {
    name: 'a git fetch in flight for a repository removed from `repos` is cut',
    open: {
      mode: 'intercept',
      target: target('github.com'),
      request: tlsRequest('github.com', '/acme/widgets.git/git-upload-pack', 'POST'),
    },
    policy: { presets: ['github'], repos: ['acme/other'] },
    code: 'github_repo_not_allowed',
  },
  {
    name: 'a git fetch in flight for a repository still listed stays',
    open: {
      mode: 'intercept',
      target: target('github.com'),
      request: tlsRequest('github.com', '/acme/widgets.git/git-upload-pack', 'POST'),
    },
    policy: { presets: ['github'], repos: ['acme/widgets', 'acme/other'] },
    code: 'allowed',
  },
  {
    name: 'a judged GraphQL request whose operation is no longer listed is cut',
    open: {
      mode: 'intercept',
      target: target('api.github.com'),
      request: tlsRequest('api.github.com', '/graphql', 'POST'),
      graphql: { operation: 'query RepositoryInfo', repos: ['acme/widgets'] },
    },
    policy: { presets: ['github'], repos: ['acme/widgets'], githubGraphqlOperations: ['Other'] },
    code: 'github_repo_not_allowed',
  },
  {
    name: 'a judged GraphQL request naming a repository no longer listed is cut',
    open: {
      mode: 'intercept',
      target: target('api.github.com'),
      request: tlsRequest('api.github.com', '/graphql', 'POST'),
      graphql: { operation: 'query RepositoryInfo', repos: ['acme/widgets'] },
    },
    policy: { presets: ['github'], repos: ['acme/other'], githubGraphqlOperations: ['RepositoryInfo'] },
    code: 'github_repo_not_allowed',
  },
  {
    name: 'a judged GraphQL request still allowed stays',
    open: {
      mode: 'intercept',
      target: target('api.github.com'),
      request: tlsRequest('api.github.com', '/graphql', 'POST'),
      graphql: { operation: 'query RepositoryInfo', repos: ['acme/widgets'] },
    },
    policy: { presets: ['github'], repos: ['acme/widgets'], githubGraphqlOperations: ['RepositoryInfo'] },
    code: 'allowed',
  },
  {
    name: 'a plain-HTTP request in flight to a domain no longer listed is cut',
    open: {
      mode: 'http',
      target: target('example.com', { port: 80, connectPort: 80 }),
      request: { stage: 'http', host: 'example.com', port: 80, method: 'GET', path: '/big' },
    },
    policy: { allowDomains: ['other.com'] },
    code: 'domain_not_allowed',
  },
  {
    name: 'a connection through the upstream map, after the map sends the name elsewhere, is cut',
    open: {
      mode: 'tunnel',
      target: target('example.com', { connectPort: 4000, addresses: ['127.0.0.1'], mapped: true }),
    },
    policy: { allowDomains: ['example.com'], upstreams: { 'example.com': '127.0.0.1:4001' } },
    code: 'address_not_allowed',
  },
  {
    name: 'a connection through the upstream map, with the same mapping, stays',
    open: {
      mode: 'tunnel',
      target: target('example.com', { connectPort: 4000, addresses: ['127.0.0.1'], mapped: true }),
    },
    policy: { allowDomains: ['example.com'], upstreams: { 'example.com': '127.0.0.1:4000' } },
    code: 'allowed',
  },
  {
    name: 'a resolved connection to a name the map now redirects is cut',
    open: { mode: 'tunnel', target: target('example.com') },
    policy: { allowDomains: ['example.com'], upstreams: { 'example.com': '127.0.0.1:4000' } },
    code: 'address_not_allowed',
  },
];

describe('redecideOpen (pure)', () => {
  it.each(ROWS)('$name → $code', ({ open, policy: input, code }) => {
    expect(redecideOpen(open, policy(input)).code).toBe(code);
  });

  it('the table covers allow and deny, tunnel, intercept and http (not vacuous)', () => {
    const codes = new Set(ROWS.map((r) => r.code));
    expect(codes.has('allowed') && codes.size).toBeGreaterThanOrEqual(6);
    expect(new Set(ROWS.map((r) => r.open.mode)).size).toBe(3);
  });
});

// ---- through the gateway ----

let ca: CertificateAuthority;
let plain: FakeUpstream;
let secure: FakeUpstream;
let h: Harness;
const sockets: Duplex[] = [];

const fullPolicy = (): EgressPolicyInput => ({
  allowDomains: ['plain.test', 'keep.test'],
  presets: ['anthropic'],
  allowPorts: [80, 443],
  upstreams: {
    'plain.test': `127.0.0.1:${plain.port}`,
    'keep.test': `127.0.0.1:${plain.port}`,
    'api.anthropic.com': `127.0.0.1:${secure.port}`,
  },
});
/** plain.test and api.anthropic.com revoked; keep.test still allowed (same map). */
const revokedPolicy = (): EgressPolicyInput => ({
  ...fullPolicy(),
  allowDomains: ['keep.test'],
  presets: [],
});

beforeAll(async () => {
  ca = await createTestCa();
  plain = await startHttpUpstream();
  secure = await startHttpsUpstream(ca, ['api.anthropic.com']);
});
afterAll(async () => {
  await plain.close();
  await secure.close();
});

async function harness(): Promise<Harness> {
  // A credential for api.anthropic.com, so the gateway terminates TLS to it.
  h = await startHarness({
    upstreamCaPem: ca.certPem,
    secrets: { ANTHROPIC_API_KEY: 'sk-ant-api-revocation-test' },
    policy: fullPolicy(),
  });
  return h;
}

/** Resolves when the socket closes; rejects if it is still open after `ms` (no idle timeout is that short). */
function closed(socket: Duplex, ms = 1_000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return resolve();
    const timer = setTimeout(() => reject(new Error(`still open after ${ms} ms`)), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** One HTTP/1.1 exchange written raw on an open socket (tunnel or TLS); the answer has a length. */
function exchange(socket: Duplex, host: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let data = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      data = Buffer.concat([data, chunk]);
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = data.subarray(0, end).toString();
      const length = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
      if (data.length < end + 4 + length) return;
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve({
        status: Number(head.split(' ')[1]),
        body: data.subarray(end + 4, end + 4 + length).toString(),
      });
    };
    const onClose = (): void => reject(new Error('connection closed'));
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  });
}

async function tunnel(authority: string): Promise<Duplex> {
  const t = await connect(h.proxyPort, authority);
  expect(t.status).toBe(200);
  t.socket!.on('error', () => undefined);
  sockets.push(t.socket!);
  return t.socket!;
}

const cutRecord = (host: string) =>
  h.audit.waitFor((r) => r.host === host && r.decision === 'deny' && /policy update/.test(r.reason));

describe('updatePolicy cuts what the new policy refuses', () => {
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await h.close();
  });

  it('an open tunnel to a revoked domain is closed; one still allowed keeps working', async () => {
    await harness();
    const revoked = await tunnel('plain.test:80');
    const kept = await tunnel('keep.test:80');
    expect((await exchange(revoked, 'plain.test')).status).toBe(200);
    expect((await exchange(kept, 'keep.test')).status).toBe(200);

    h.box.updatePolicy(revokedPolicy());
    await closed(revoked);
    expect(await cutRecord('plain.test')).toMatchObject({
      method: 'CONNECT',
      port: 80,
      code: 'domain_not_allowed',
      placeholderLeak: false,
    });
    const again = await exchange(kept, 'keep.test', '/after');
    expect(again.status).toBe(200);
    expect(JSON.parse(again.body)).toMatchObject({ url: '/after' });
    expect(kept.destroyed).toBe(false);

    const fresh = await connect(h.proxyPort, 'plain.test:80');
    expect(fresh.status).toBe(403);
    expect(fresh.headers['x-agentbox-deny']).toBe('domain_not_allowed');
  });

  it('a terminated TLS session (kept alive) to a revoked credential host is closed', async () => {
    await harness();
    const raw = await tunnel('api.anthropic.com:443');
    const secureSocket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: raw, servername: 'api.anthropic.com', ca: [h.box.caCertPem] });
      s.once('secureConnect', () => resolve(s));
      s.once('error', reject);
    });
    secureSocket.on('error', () => undefined);
    sockets.push(secureSocket);
    expect((await exchange(secureSocket, 'api.anthropic.com', '/v1/models')).status).toBe(200);

    h.box.updatePolicy(revokedPolicy());
    await closed(secureSocket);
    expect(await cutRecord('api.anthropic.com')).toMatchObject({ code: 'domain_not_allowed' });
    const fresh = await connect(h.proxyPort, 'api.anthropic.com:443');
    expect(fresh.headers['x-agentbox-deny']).toBe('domain_not_allowed');
  });

  it('a plain-HTTP request in flight to a revoked domain is cut; one still allowed completes', async () => {
    await harness();
    const pending: http.ServerResponse[] = [];
    const original = plain.handler;
    const started = new Promise<void>((resolve) => {
      plain.handler = (_req, _body, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first part;');
        pending.push(res);
        if (pending.length === 2) resolve();
      };
    });
    try {
      const get = (url: string) =>
        new Promise<{ body: string; aborted: boolean }>((resolve, reject) => {
          const req = http.get({ host: '127.0.0.1', port: h.proxyPort, path: url, agent: false }, (res) => {
            let body = '';
            res.on('data', (c: Buffer) => (body += c.toString()));
            res.on('end', () => resolve({ body, aborted: false }));
            res.on('error', () => resolve({ body, aborted: true }));
            res.on('aborted', () => resolve({ body, aborted: true }));
          });
          req.on('error', reject);
        });
      const revoked = get('http://plain.test/stream');
      const kept = get('http://keep.test/stream');
      await started;

      h.box.updatePolicy(revokedPolicy());
      expect(await revoked).toMatchObject({ aborted: true });
      expect(await cutRecord('plain.test')).toMatchObject({ method: 'GET', path: '/stream' });
      for (const res of pending) if (!res.destroyed) res.end('second part');
      expect(await kept).toEqual({ body: 'first part;second part', aborted: false });
    } finally {
      plain.handler = original;
    }
  });

  it('a kept-alive plain-HTTP connection has each later request decided under the new policy', async () => {
    await harness();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = (url: string) =>
      new Promise<{ status: number; deny?: string; reused: boolean }>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: h.proxyPort, path: url, agent }, (res) => {
          res.resume();
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              ...(res.headers['x-agentbox-deny'] === undefined
                ? {}
                : { deny: String(res.headers['x-agentbox-deny']) }),
              reused: req.reusedSocket,
            }),
          );
        });
        req.on('error', reject);
      });
    try {
      expect(await get('http://plain.test/one')).toEqual({ status: 200, reused: false });
      h.box.updatePolicy(revokedPolicy());
      expect(await get('http://keep.test/two')).toEqual({ status: 200, reused: true });
      expect(await get('http://plain.test/three')).toEqual({
        status: 403,
        deny: 'domain_not_allowed',
        reused: true,
      });
    } finally {
      agent.destroy();
    }
  });
});
