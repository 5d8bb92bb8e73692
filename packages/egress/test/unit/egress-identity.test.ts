import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createCertificateAuthority,
  loadCertificateAuthority,
  type CertificateAuthority,
  type EgressIdentity,
} from '../../src/index.js';
import {
  createTestCa,
  proxyHttps,
  startHarness,
  startHttpsUpstream,
  type FakeUpstream,
  type Harness,
} from '../helpers/egress-harness.js';

const REAL_KEY = 'sk-ant-real-identity-0123456789';

// A daemon restart opens every box's egress again. What already runs in a box (a task's agent)
// trusts only the CA it loaded when it started and holds the placeholders it was given then: the
// next gateway must serve the box with both.
describe("a box's egress identity across gateways", () => {
  let upstreamCa: CertificateAuthority;
  let upstream: FakeUpstream;
  const harnesses: Harness[] = [];
  const policy = () => ({
    presets: ['anthropic' as const],
    upstreams: { 'api.anthropic.com': `127.0.0.1:${upstream.port}` },
  });
  const open = async (identity?: EgressIdentity) => {
    const h = await startHarness({
      upstreamCaPem: upstreamCa.certPem,
      secrets: { ANTHROPIC_API_KEY: REAL_KEY },
      policy: policy(),
      ...(identity ? { identity } : {}),
    });
    harnesses.push(h);
    return h;
  };

  beforeAll(async () => {
    upstreamCa = await createTestCa();
    upstream = await startHttpsUpstream(upstreamCa, ['api.anthropic.com']);
  });
  afterAll(async () => {
    for (const h of harnesses) await h.close();
    await upstream.close();
  });

  it('the next gateway opened with it has the same CA and placeholders, and swaps the old placeholder', async () => {
    const first = await open();
    const identity = first.box.identity;
    expect(identity.placeholders).toEqual(first.box.env);
    expect(identity.ca.certPem).toBe(first.box.caCertPem);
    expect(identity.ca.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    await first.close();

    const next = await open(identity);
    expect(next.box.caCertPem).toBe(first.box.caCertPem);
    expect(next.box.env).toEqual(first.box.env);
    // A client that trusts only the first gateway's CA, with the first gateway's placeholder.
    const r = await proxyHttps(next.proxyPort, 'api.anthropic.com', '/v1/messages', {
      ca: [first.box.caCertPem],
      method: 'POST',
      headers: { 'x-api-key': first.box.env.ANTHROPIC_API_KEY!, 'content-type': 'application/json' },
      body: '{}',
    });
    expect(r.status).toBe(200);
    expect(upstream.seen.at(-1)!.headers['x-api-key']).toBe(REAL_KEY);
  });

  it('a box opened without one gets a CA and placeholders of its own', async () => {
    const a = await open();
    const b = await open();
    expect(b.box.caCertPem).not.toBe(a.box.caCertPem);
    expect(b.box.env.ANTHROPIC_API_KEY).not.toBe(a.box.env.ANTHROPIC_API_KEY);
  });

  it('a kept CA about to expire is replaced; what is not a placeholder is not taken for one', async () => {
    const now = new Date();
    const soon = await createCertificateAuthority({
      commonName: 'expiring',
      validityDays: 0.5,
      exportable: true,
    });
    const next = await open({
      ca: soon.keyPair!,
      placeholders: { ANTHROPIC_API_KEY: 'not-a-placeholder' },
    });
    expect(next.box.caCertPem).not.toBe(soon.certPem);
    expect(Date.parse(new X509Certificate(next.box.caCertPem).validTo)).toBeGreaterThan(
      now.getTime() + 86_400_000,
    );
    expect(next.box.env.ANTHROPIC_API_KEY).toMatch(/^agentbox-ph-[0-9a-f]{32}$/);
  });

  it('a loaded CA issues leaves that chain to the kept certificate', async () => {
    const made = await createCertificateAuthority({ commonName: 'kept', exportable: true });
    const loaded = await loadCertificateAuthority(made.keyPair!);
    const leaf = new X509Certificate((await loaded.issue('api.anthropic.com')).certPem);
    expect(leaf.verify(new X509Certificate(made.certPem).publicKey)).toBe(true);
    // Not exportable unless asked: a test CA's key stays in its process.
    expect((await createCertificateAuthority({ commonName: 'plain' })).keyPair).toBeUndefined();
  });
});
