import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

describe('GET /metrics: host-wide counts, for admin keys only', () => {
  let h: FakeHost;
  let user: string;

  beforeAll(async () => {
    h = await fakeHost();
    user = h.host.keys.create({ name: 'user', scope: 'user' }).secret;
    // Another key's box: a user key must not learn of it through the host-wide gauges.
    expect((await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} })).statusCode).toBe(201);
  });
  afterAll(() => h.close());

  it('answers 403 forbidden to a user key, without the metrics', async () => {
    const r = await h.call({ method: 'GET', url: '/metrics', headers: { 'x-api-key': user } });
    expect(r.statusCode).toBe(403);
    expect(errorCode(r)).toBe('forbidden');
    expect(r.body).not.toContain('agentbox_boxes');
  });

  it('serves them to an admin key', async () => {
    const r = await h.admin_({ method: 'GET', url: '/metrics' });
    expect(r.statusCode).toBe(200);
    expect(r.body).toMatch(/agentbox_boxes\{state="running"\} 1/);
  });

  it('is documented as admin-only in the OpenAPI document (a 403 response)', async () => {
    const spec = (await h.admin_({ method: 'GET', url: '/openapi.json' })).json<{
      paths: Record<string, { get: { summary: string; responses: Record<string, unknown> } }>;
    }>();
    expect(spec.paths['/metrics']!.get.responses).toHaveProperty('403');
    expect(spec.paths['/metrics']!.get.summary).toMatch(/\(admin\)/);
  });
});
