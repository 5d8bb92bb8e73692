import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EgressAuditRecord } from '@agentbox/protocol';
import { errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

// The audit route reads what the gateway recorded; here the records are put in the store directly
// (the fake driver's daemon runs without a gateway, its "guest" being this host).
describe('GET /v1/boxes/:id/egress', () => {
  let h: FakeHost;
  let id: string;
  let other: string;
  const record = (boxId: string, host: string, decision: 'allow' | 'deny'): EgressAuditRecord => ({
    boxId,
    ts: new Date().toISOString(),
    host,
    port: 443,
    method: 'CONNECT',
    mode: 'tunnel',
    decision,
    code: decision === 'allow' ? 'allowed' : 'domain_not_allowed',
    reason: decision === 'allow' ? 'allowed by allowDomains' : `${host} is not in allowDomains`,
    bytesUp: 10,
    bytesDown: 20,
    placeholderLeak: false,
  });

  beforeAll(async () => {
    h = await fakeHost();
    id = (await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} })).json<{
      id: string;
      egress: null;
    }>().id;
    other = (await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} })).json<{ id: string }>().id;
    for (let i = 0; i < 5; i++) h.host.audit.record(record(id, `h${i}.test`, i % 2 ? 'deny' : 'allow'));
    h.host.audit.record(record(other, 'other.test', 'allow'));
  });
  afterAll(() => h.close());

  it("returns the box's records oldest first, and pages with after/next", async () => {
    const first = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/egress?limit=3` });
    expect(first.statusCode).toBe(200);
    const page = first.json<{ records: (EgressAuditRecord & { seq: number })[]; next: number | null }>();
    expect(page.records.map((r) => r.host)).toEqual(['h0.test', 'h1.test', 'h2.test']);
    expect(page.records[1]).toMatchObject({ decision: 'deny', code: 'domain_not_allowed' });
    const rest = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/egress?after=${page.next}` });
    const tail = rest.json<{ records: { host: string }[]; next: number | null }>();
    expect(tail.records.map((r) => r.host)).toEqual(['h3.test', 'h4.test']);
    expect(tail.next).toBeNull();
  });

  it('reports a box with egress disabled as egress: null', async () => {
    const box = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}` });
    expect(box.json<{ egress: unknown }>().egress).toBeNull();
  });

  it('refuses bad queries and unknown boxes with the right codes', async () => {
    const bad = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/egress?limit=0` });
    expect(bad.statusCode).toBe(400);
    expect(errorCode(bad)).toBe('invalid_request');
    const extra = await h.admin_({ method: 'GET', url: `/v1/boxes/${id}/egress?since=1` });
    expect(extra.statusCode).toBe(400);
    const missing = await h.admin_({ method: 'GET', url: '/v1/boxes/box-0000000000/egress' });
    expect(missing.statusCode).toBe(404);
    expect(errorCode(missing)).toBe('box_not_found');
    const noKey = await h.call({ method: 'GET', url: `/v1/boxes/${id}/egress` });
    expect(noKey.statusCode).toBe(401);
  });

  it("a user key sees only its own boxes' audit", async () => {
    const user = h.host.keys.create({ name: 'u', scope: 'user' }).secret;
    const r = await h.call({
      method: 'GET',
      url: `/v1/boxes/${other}/egress`,
      headers: { 'x-api-key': user },
    });
    expect(r.statusCode).toBe(404);
  });
});
