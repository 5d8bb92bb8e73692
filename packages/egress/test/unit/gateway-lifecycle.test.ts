import http from 'node:http';
import { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EgressAuditRecordSchema } from '@agentbox/protocol';
import {
  createEgressGateway,
  MemoryAuditSink,
  SecretStore,
  type CertificateAuthority,
} from '../../src/index.js';
import {
  connect,
  createTestCa,
  proxyHttp,
  proxyHttps,
  startHarness,
  startHttpUpstream,
  startHttpsUpstream,
  type FakeUpstream,
} from '../helpers/egress-harness.js';

/**
 * Two connected in-memory Duplex ends, like the VM channel's streams (no net.Socket anywhere).
 * Delivery is asynchronous, as over the channel: node's TLS over a JS stream stalls when the peer
 * pushes synchronously from inside write().
 */
function duplexPair(): [Duplex, Duplex] {
  const make = (): Duplex & { peer?: Duplex } =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, done) {
        const peer = (this as Duplex & { peer?: Duplex }).peer!;
        setImmediate(() => peer.push(chunk));
        done();
      },
      final(done) {
        const peer = (this as Duplex & { peer?: Duplex }).peer!;
        setImmediate(() => peer.push(null));
        done();
      },
    });
  const a = make();
  const b = make();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

let ca: CertificateAuthority;
let plain: FakeUpstream;
let secure: FakeUpstream;

beforeAll(async () => {
  ca = await createTestCa();
  plain = await startHttpUpstream();
  secure = await startHttpsUpstream(ca, ['api.anthropic.com']);
});
afterAll(async () => {
  await plain.close();
  await secure.close();
});

const policyFor = () => ({
  allowDomains: ['plain.test'],
  presets: ['anthropic' as const],
  upstreams: {
    'plain.test': `127.0.0.1:${plain.port}`,
    'api.anthropic.com': `127.0.0.1:${secure.port}`,
  },
});

describe('the gateway over a plain Duplex (the VM channel shape)', () => {
  it('serves a plain-HTTP proxy request and a refusal over in-memory streams', async () => {
    const gateway = createEgressGateway({ allowUpstreamMap: true, hostAddresses: () => [] });
    const box = await gateway.openBox({ boxId: 'box-duplex00001', policy: policyFor() });
    try {
      const ask = (path: string) =>
        new Promise<{ status: number; deny?: string }>((resolve, reject) => {
          const [guestSide, hostSide] = duplexPair();
          box.handleConnection(hostSide);
          const req = http.request({
            createConnection: () => guestSide,
            path,
            headers: { host: 'x' },
          });
          req.on('response', (res) => {
            res.resume();
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                deny: res.headers['x-agentbox-deny'] as string | undefined,
              }),
            );
          });
          req.on('error', reject);
          req.end();
        });
      expect(await ask('http://plain.test/over-duplex')).toEqual({ status: 200, deny: undefined });
      expect(plain.seen.at(-1)?.url).toBe('/over-duplex');
      expect(await ask('http://elsewhere.test/')).toEqual({ status: 403, deny: 'domain_not_allowed' });
    } finally {
      await gateway.close();
    }
  });
});

describe('terminated TLS over a plain Duplex', () => {
  it('CONNECT, TLS with the box CA and injection all work over in-memory streams', async () => {
    const secrets = new SecretStore();
    secrets.set('ANTHROPIC_API_KEY', 'sk-duplex-real');
    const gateway = createEgressGateway({
      allowUpstreamMap: true,
      hostAddresses: () => [],
      secrets,
      upstreamCaPem: ca.certPem,
    });
    const box = await gateway.openBox({ boxId: 'box-duplex00002', policy: policyFor() });
    try {
      const [guestSide, hostSide] = duplexPair();
      box.handleConnection(hostSide);
      guestSide.write('CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n');
      const head = await new Promise<string>((resolve) => {
        let text = '';
        const onData = (c: Buffer): void => {
          text += c.toString('latin1');
          if (text.includes('\r\n\r\n')) {
            guestSide.removeListener('data', onData);
            guestSide.pause();
            resolve(text);
          }
        };
        guestSide.on('data', onData);
      });
      expect(head).toMatch(/^HTTP\/1.1 200/);
      const { connect: tlsConnect } = await import('node:tls');
      const secureSocket = tlsConnect({
        socket: guestSide,
        servername: 'api.anthropic.com',
        ca: [box.caCertPem],
      });
      await new Promise<void>((resolve, reject) => {
        secureSocket.once('secureConnect', () => resolve());
        secureSocket.once('error', reject);
      });
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request({
          createConnection: () => secureSocket,
          path: '/v1/messages',
          headers: { host: 'api.anthropic.com', 'x-api-key': box.env.ANTHROPIC_API_KEY! },
        });
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      });
      expect(status).toBe(200);
      expect(secure.seen.at(-1)?.headers['x-api-key']).toBe('sk-duplex-real');
      secureSocket.destroy();
    } finally {
      await gateway.close();
    }
  });
});

describe('upstream TLS is verified', () => {
  it('an upstream whose certificate the gateway does not trust gets nothing: 502 upstream_failed', async () => {
    const h = await startHarness({ secrets: { ANTHROPIC_API_KEY: 'sk-never-sent' }, policy: policyFor() });
    try {
      const before = secure.seen.length;
      const r = await proxyHttps(h.proxyPort, 'api.anthropic.com', '/v1/messages', {
        ca: [h.box.caCertPem],
        headers: { 'x-api-key': h.box.env.ANTHROPIC_API_KEY! },
      });
      expect(r.status).toBe(502);
      expect(r.headers['x-agentbox-error']).toBe('upstream_failed');
      expect(r.body).not.toContain('sk-never-sent');
      expect(secure.seen.length).toBe(before);
      const record = await h.audit.waitFor((x) => x.code === 'upstream_failed');
      expect(record.decision).toBe('error');
    } finally {
      await h.close();
    }
  });
});

describe('box lifecycle', () => {
  it('updatePolicy applies to new requests; an invalid policy is refused and the old one stays', async () => {
    const h = await startHarness({ policy: policyFor() });
    try {
      expect((await proxyHttp(h.proxyPort, 'http://plain.test/')).status).toBe(200);
      h.box.updatePolicy({ ...policyFor(), denyDomains: ['plain.test'] });
      expect((await proxyHttp(h.proxyPort, 'http://plain.test/')).headers['x-agentbox-deny']).toBe(
        'domain_denied',
      );
      expect(() => h.box.updatePolicy({ allowDomains: ['*.com'] })).toThrow(/wildcard too broad/);
      expect((await proxyHttp(h.proxyPort, 'http://plain.test/')).headers['x-agentbox-deny']).toBe(
        'domain_denied',
      );
    } finally {
      await h.close();
    }
  });

  it('close() cuts live tunnels and refuses new connections', async () => {
    const h = await startHarness({
      policy: { ...policyFor(), allowDomains: ['plain.test'], allowPorts: [80] },
    });
    const tunnel = await connect(h.proxyPort, 'plain.test:80');
    expect(tunnel.status).toBe(200);
    const closed = new Promise<void>((resolve) => tunnel.socket!.on('close', () => resolve()));
    tunnel.socket!.on('error', () => undefined);
    await h.box.close();
    await closed;
    const [guestSide, hostSide] = duplexPair();
    h.box.handleConnection(hostSide);
    expect(hostSide.destroyed).toBe(true);
    guestSide.destroy();
    await h.close();
  });

  it('refuses a second session for the same box and unknown secrets', async () => {
    const secrets = new SecretStore();
    secrets.set('ANTHROPIC_API_KEY', 'x');
    const gateway = createEgressGateway({ secrets });
    const box = await gateway.openBox({ boxId: 'box-dup0000001', policy: {} });
    await expect(gateway.openBox({ boxId: 'box-dup0000001', policy: {} })).rejects.toMatchObject({
      code: 'invalid_state',
    });
    await expect(
      gateway.openBox({ boxId: 'box-dup0000002', policy: {}, secrets: ['NOPE'] }),
    ).rejects.toMatchObject({
      code: 'invalid_request',
    });
    expect(gateway.box('box-dup0000001')).toBe(box);
    await gateway.close();
    expect(gateway.box('box-dup0000001')).toBeUndefined();
  });

  it('every audit record the gateway writes matches the protocol schema; a throwing sink loses only the record', async () => {
    const errors: string[] = [];
    const sink = new MemoryAuditSink();
    let calls = 0;
    const gateway = createEgressGateway({
      allowUpstreamMap: true,
      hostAddresses: () => [],
      audit: {
        record: (r) => {
          calls++;
          if (calls === 1) throw new Error('sink down');
          sink.record(r);
        },
      },
      onError: (_err, context) => errors.push(context),
    });
    const box = await gateway.openBox({ boxId: 'box-audit000001', policy: policyFor() });
    const http2 = await import('node:net').then((net) => {
      const server = net.createServer((s) => box.handleConnection(s));
      return new Promise<{ port: number; close: () => void }>((resolve) =>
        server.listen(0, '127.0.0.1', () =>
          resolve({ port: (server.address() as { port: number }).port, close: () => server.close() }),
        ),
      );
    });
    try {
      expect((await proxyHttp(http2.port, 'http://plain.test/a')).status).toBe(200);
      await proxyHttp(http2.port, 'http://nope.test/');
      await connect(http2.port, '10.0.0.1:443');
      await proxyHttp(http2.port, 'http://plain.test/b');
      await sink.waitFor((r) => r.path === '/b');
      expect(errors).toEqual(['egress audit sink failed']);
      expect(sink.records.length).toBeGreaterThanOrEqual(3);
      for (const record of sink.records) expect(EgressAuditRecordSchema.safeParse(record).success).toBe(true);
    } finally {
      http2.close();
      await gateway.close();
    }
  });
});
