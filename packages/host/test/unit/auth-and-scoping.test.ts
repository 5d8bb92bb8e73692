import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

describe('API keys: authentication, admin routes, per-key box scoping', () => {
  let h: FakeHost;
  let alice: string;
  let bob: string;
  let aliceBox: string;

  beforeAll(async () => {
    h = await fakeHost();
    alice = h.host.keys.create({ name: 'alice', scope: 'user' }).secret;
    bob = h.host.keys.create({ name: 'bob', scope: 'user' }).secret;
    const r = await h.call({
      method: 'POST',
      url: '/v1/boxes',
      headers: { 'x-api-key': alice },
      payload: {},
    });
    expect(r.statusCode).toBe(201);
    aliceBox = r.json<{ id: string }>().id;
  });
  afterAll(() => h.close());

  const everyRoute = () =>
    h.host.routes.map((r) => ({
      method: r.method,
      url: r.url.replace(':id', aliceBox).replace(':pid', '1'),
      auth: r.auth,
    }));

  it('answers 401 unauthorized on every route but /health without a key', async () => {
    for (const route of everyRoute()) {
      const r = await h.call({ method: route.method, url: route.url });
      if (route.auth === 'none') {
        expect(r.statusCode, route.url).toBe(200);
      } else {
        expect(r.statusCode, `${route.method} ${route.url}`).toBe(401);
        expect(errorCode(r)).toBe('unauthorized');
      }
    }
  });

  it('checks the key before reading the body: a caller without one cannot make the daemon parse it', async () => {
    for (const headers of [{}, { 'x-api-key': 'abk_nope' }]) {
      const r = await h.call({
        method: 'POST',
        url: '/v1/tasks',
        headers: { ...headers, 'content-type': 'application/json' },
        payload: '{"prompt": not json at all',
      });
      expect(r.statusCode).toBe(401); // not 400: the body was never parsed
      expect(errorCode(r)).toBe('unauthorized');
    }
  });

  it('answers 401 for a wrong key and for a revoked one', async () => {
    const wrong = await h.call({ method: 'GET', url: '/v1/boxes', headers: { 'x-api-key': 'abk_nope' } });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json()).toMatchObject({
      error: { code: 'unauthorized', message: 'unknown or revoked API key' },
    });
    const made = h.host.keys.create({ name: 'short-lived', scope: 'admin' });
    expect(
      (await h.call({ method: 'GET', url: '/v1/boxes', headers: { 'x-api-key': made.secret } })).statusCode,
    ).toBe(200);
    h.host.keys.revoke(made.key.id);
    const revoked = await h.call({ method: 'GET', url: '/v1/boxes', headers: { 'x-api-key': made.secret } });
    expect(revoked.statusCode).toBe(401);
  });

  it('stores only a hash of each key', () => {
    const listed = JSON.stringify(h.host.keys.list());
    expect(listed).not.toContain(alice);
    expect(listed).toContain(alice.slice(0, 10));
  });

  it('keeps admin routes for admin keys (403 forbidden otherwise), every one the route table marks', async () => {
    const adminRoutes = everyRoute().filter((route) => route.auth === 'admin');
    expect(adminRoutes.map((route) => `${route.method} ${route.url}`)).toEqual(
      expect.arrayContaining([
        'GET /status',
        'POST /maintenance',
        'GET /metrics',
        'GET /v1/keys',
        'POST /v1/keys',
        `PUT /v1/keys/${aliceBox}/grants`,
        `DELETE /v1/keys/${aliceBox}`,
      ]),
    );
    const keysBefore = h.host.keys.list();
    for (const route of adminRoutes) {
      const r = await h.call({ method: route.method, url: route.url, headers: { 'x-api-key': alice } });
      expect(r.statusCode, `${route.method} ${route.url}`).toBe(403);
      expect(errorCode(r)).toBe('forbidden');
    }
    expect(h.host.keys.list()).toEqual(keysBefore);
    expect((await h.admin_({ method: 'GET', url: '/status' })).statusCode).toBe(200);
  });

  it('shows a user key only the boxes it created; admin sees all', async () => {
    const mine = await h.call({ method: 'GET', url: '/v1/boxes', headers: { 'x-api-key': alice } });
    expect(mine.json<{ boxes: { id: string }[] }>().boxes.map((b) => b.id)).toEqual([aliceBox]);
    const theirs = await h.call({ method: 'GET', url: '/v1/boxes', headers: { 'x-api-key': bob } });
    expect(theirs.json()).toEqual({ boxes: [] });
    for (const [method, url] of [
      ['GET', `/v1/boxes/${aliceBox}`],
      ['DELETE', `/v1/boxes/${aliceBox}`],
      ['GET', `/v1/boxes/${aliceBox}/processes`],
      ['GET', `/v1/boxes/${aliceBox}/files?path=/`],
    ] as const) {
      const r = await h.call({ method, url, headers: { 'x-api-key': bob } });
      expect(r.statusCode, url).toBe(404);
      expect(errorCode(r)).toBe('box_not_found');
    }
    const exec = await h.call({
      method: 'POST',
      url: `/v1/boxes/${aliceBox}/exec`,
      headers: { 'x-api-key': bob },
      payload: { command: 'true' },
    });
    expect(errorCode(exec)).toBe('box_not_found');
    const all = await h.admin_({ method: 'GET', url: '/v1/boxes' });
    expect(all.json<{ boxes: unknown[] }>().boxes).toHaveLength(1);
    // A task runs as the key that submitted it: an admin's in another key's box is refused at
    // once, not accepted and then failed when it starts.
    const task = await h.admin_({
      method: 'POST',
      url: '/v1/tasks',
      payload: { agent: 'shell', boxId: aliceBox, prompt: 'true' },
    });
    expect(task.statusCode).toBe(404);
    expect(errorCode(task)).toBe('box_not_found');
  });

  it("keeps a seed user id to the key that made it: another key's same id is another box", async () => {
    const seed = (key: string, method: 'GET' | 'POST', url: string, payload?: object) =>
      h.call({ method, url, headers: { 'x-api-key': key }, ...(payload ? { payload } : {}) });
    const made = await seed(alice, 'POST', '/create_microvm', {
      user_id: 'carol',
      runtime: 'bash',
      env_vars: {},
    });
    expect(made.json()).toMatchObject({ status: 'created' });
    // Bob learns nothing of alice's carol, and is not kept from the id: he gets a box of his own.
    expect((await seed(bob, 'GET', '/list_processes?user_id=carol')).statusCode).toBe(404);
    const other = await seed(bob, 'POST', '/create_microvm', {
      user_id: 'carol',
      runtime: 'bash',
      env_vars: {},
    });
    expect(other.statusCode, other.body).toBe(200);
    expect(other.json()).toMatchObject({ status: 'created' });
    expect(other.json<{ pid: number }>().pid).not.toBe(made.json<{ pid: number }>().pid);
    const again = await seed(alice, 'POST', '/create_microvm', {
      user_id: 'carol',
      runtime: 'bash',
      env_vars: {},
    });
    expect(again.json()).toEqual({ status: 'exists', vm_ip: null, pid: made.json<{ pid: number }>().pid });

    const keyIdOf = (name: string) => h.host.keys.list().find((k) => k.name === name)!.id;
    const ownersOfCarol = () => h.host.store.findLiveByUserOfAnyKey('carol').map((b) => b.ownerKeyId);
    expect(ownersOfCarol()).toEqual([keyIdOf('alice'), keyIdOf('bob')]);
    // Each key's seed calls reach its own box: bob deleting his carol leaves alice's.
    expect((await seed(bob, 'POST', '/kill_microvm', { user_id: 'carol' })).statusCode).toBe(200);
    expect(ownersOfCarol()).toEqual([keyIdOf('alice')]);

    // An admin's lookup by user id: its own box first; else the one box of that id; never a guess.
    const status = await h.admin_({ method: 'GET', url: '/status' });
    expect(Object.keys(status.json<{ microvms: object }>().microvms)).toContain('carol');
    await seed(bob, 'POST', '/create_microvm', { user_id: 'carol', runtime: 'bash', env_vars: {} });
    const ambiguous = await h.admin_({ method: 'GET', url: '/list_processes?user_id=carol' });
    expect(ambiguous.statusCode).toBe(409);
    expect(errorCode(ambiguous)).toBe('invalid_state');
    const keyed = Object.keys(
      (await h.admin_({ method: 'GET', url: '/status' })).json<{ microvms: object }>().microvms,
    );
    expect(keyed.filter((k) => k.endsWith('/carol')).sort()).toEqual(
      [`${keyIdOf('alice')}/carol`, `${keyIdOf('bob')}/carol`].sort(),
    );
    expect(keyed).not.toContain('carol');
  });

  it('puts a request id in every error body and in X-Request-Id', async () => {
    const r = await h.call({ method: 'GET', url: '/v1/boxes' });
    const body = r.json<{ error: { requestId: string } }>();
    expect(r.headers['x-request-id']).toBe(body.error.requestId);
  });
});
