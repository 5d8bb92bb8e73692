import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiKey } from '@agentbox/protocol';
import { errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

/**
 * `/v1/keys`: what `agentbox keys` does, over HTTP; a secret is shown once. That only admin keys
 * reach these routes is checked with every admin route in auth-and-scoping.test.ts.
 */
describe('/v1/keys', () => {
  let h: FakeHost;
  beforeAll(async () => {
    h = await fakeHost();
    h.host.keys.create({ name: 'tenant', scope: 'user' });
  });
  afterAll(() => h.close());

  it('makes a key whose secret works and is never shown again; lists, grants and revokes it', async () => {
    const made = await h.admin_({
      method: 'POST',
      url: '/v1/keys',
      payload: { name: 'ci', grants: { repos: ['Acme/*'], maxBoxes: 1 } },
    });
    expect(made.statusCode, made.body).toBe(201);
    const key = made.json<ApiKey & { key: string }>();
    expect(key).toMatchObject({
      name: 'ci',
      scope: 'user',
      grants: { repos: ['acme/*'], maxBoxes: 1, maxTasks: null },
    });
    const asNew = await h.call({ method: 'GET', url: '/v1/boxes', headers: { 'x-api-key': key.key } });
    expect(asNew.statusCode).toBe(200);

    const list = await h.admin_({ method: 'GET', url: '/v1/keys' });
    expect(list.body).not.toContain(key.key);
    expect(list.json<{ keys: ApiKey[] }>().keys.map((k) => k.name)).toEqual(['test admin', 'tenant', 'ci']);

    const granted = await h.admin_({
      method: 'PUT',
      url: `/v1/keys/${key.id}/grants`,
      payload: { maxTasks: 2 },
    });
    expect(granted.json<ApiKey>().grants).toEqual({
      repos: ['acme/*'],
      maxBoxes: 1,
      maxTasks: 2,
      maxMemoryMib: null,
      maxDiskGib: null,
      maxSpendUsd: null,
    });
    const capped = await h.admin_({
      method: 'PUT',
      url: `/v1/keys/${key.id}/grants`,
      payload: { maxSpendUsd: 20 },
    });
    expect(capped.json<ApiKey>()).toMatchObject({ grants: { maxTasks: 2, maxSpendUsd: 20 }, spentUsd: 0 });
    expect(key.spentSince).toBe(key.createdAt);
    h.host.keys.addSpend(key.id, 4.5);
    const reset = await h.admin_({ method: 'POST', url: `/v1/keys/${key.id}/spend/reset` });
    expect(reset.statusCode, reset.body).toBe(200);
    expect(reset.json<ApiKey>()).toMatchObject({ spentUsd: 0, grants: { maxSpendUsd: 20 } });
    expect(reset.json<ApiKey>().spentSince).toBeGreaterThanOrEqual(key.createdAt);
    const asTenant = await h.call({
      method: 'POST',
      url: `/v1/keys/${key.id}/spend/reset`,
      headers: { 'x-api-key': key.key },
    });
    expect(asTenant.statusCode).toBe(403);
    const unknown = await h.admin_({ method: 'POST', url: '/v1/keys/key_000000000000/spend/reset' });
    expect(unknown.statusCode).toBe(404);

    const revoked = await h.admin_({ method: 'DELETE', url: `/v1/keys/${key.id}` });
    expect(revoked.statusCode).toBe(200);
    expect(revoked.json<ApiKey>().revokedAt).toEqual(expect.any(Number));
    expect(
      (await h.call({ method: 'GET', url: '/v1/boxes', headers: { 'x-api-key': key.key } })).statusCode,
    ).toBe(401);
    const again = await h.admin_({ method: 'DELETE', url: `/v1/keys/${key.id}` });
    expect([again.statusCode, errorCode(again)]).toEqual([409, 'invalid_state']);
  });

  it('bad input: 400 naming the field, 404 for a key that does not exist; nothing changes', async () => {
    const before = h.host.keys.list();
    for (const payload of [
      { scope: 'root' },
      { grants: { repos: ['acme'] } },
      { grants: { maxBoxes: -1 } },
      { name: '' },
      { secret: 'mine' },
    ]) {
      const r = await h.admin_({ method: 'POST', url: '/v1/keys', payload });
      expect([JSON.stringify(payload), r.statusCode, errorCode(r)]).toEqual([
        JSON.stringify(payload),
        400,
        'invalid_request',
      ]);
    }
    const { id } = before[1]!;
    const bad = await h.admin_({ method: 'PUT', url: `/v1/keys/${id}/grants`, payload: { repos: ['*/x'] } });
    expect(bad.json<{ error: { message: string } }>().error.message).toMatch(/repos\.0/);
    const missing = await h.admin_({ method: 'PUT', url: '/v1/keys/key_000000000000/grants', payload: {} });
    expect([missing.statusCode, errorCode(missing)]).toEqual([404, 'key_not_found']);
    const badId = await h.admin_({ method: 'DELETE', url: '/v1/keys/nope' });
    expect([badId.statusCode, errorCode(badId)]).toEqual([400, 'invalid_request']);
    expect(h.host.keys.list()).toEqual(before);
  });
});
