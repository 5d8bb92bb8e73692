import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Task } from '@agentbox/protocol';
import { errorCode, fakeHost, slowCreateBackend, type FakeHost } from '../helpers/fake-host.js';
import { NO_GRANTS } from '../../src/store/key-store.js';

/**
 * What an operator grants a key beyond seeing its own boxes: the repositories the host's GitHub
 * token may serve its boxes, and how many boxes and tasks it may hold at once. A user key starts
 * with none of the first and no limits of its own; grants changed by `agentbox keys update` (another
 * process, the same database) apply from the key's next request.
 */
describe('key grants', () => {
  let h: FakeHost;
  let secret: string;
  let keyId: string;
  beforeAll(async () => {
    h = await fakeHost({ maxConcurrentTasks: 1 });
    ({
      secret,
      key: { id: keyId },
    } = h.host.keys.create({ name: 'tenant', scope: 'user' }));
  });
  afterAll(() => h.close());

  const as = (key: string, method: 'GET' | 'POST' | 'DELETE', url: string, payload?: object) =>
    h.call({ method, url, headers: { 'x-api-key': key }, ...(payload ? { payload } : {}) });
  const fields = (r: { json: <T>() => T }) =>
    r.json<{ error: { details: { fields: string[] } } }>().error.details.fields;

  it('the key store checks grants, keeps them canonical, and hands them to each request', () => {
    const made = h.host.keys.create({
      name: 'g',
      scope: 'user',
      grants: { repos: ['Acme/Widgets.git', 'acme/*', 'acme/*'], maxBoxes: 2 },
    });
    expect(made.key.grants).toEqual({
      repos: ['acme/*', 'acme/widgets'],
      maxBoxes: 2,
      maxTasks: null,
      maxMemoryMib: null,
      maxDiskGib: null,
      maxSpendUsd: null,
    });
    expect(h.host.keys.authenticate(made.secret)?.grants).toEqual(made.key.grants);
    // Fields left out stay; null takes a limit back.
    expect(h.host.keys.update(made.key.id, { maxTasks: 3 }).grants).toMatchObject({
      maxBoxes: 2,
      maxTasks: 3,
    });
    expect(h.host.keys.update(made.key.id, { maxBoxes: null, repos: [] }).grants).toEqual({
      repos: [],
      maxBoxes: null,
      maxTasks: 3,
      maxMemoryMib: null,
      maxDiskGib: null,
      maxSpendUsd: null,
    });
    expect(h.host.keys.update(made.key.id, { maxSpendUsd: 2.5 }).grants.maxSpendUsd).toBe(2.5);
    for (const bad of [-1, Infinity, NaN])
      expect(() => h.host.keys.update(made.key.id, { maxSpendUsd: bad })).toThrow(
        /maxSpendUsd must be a number of dollars >= 0/,
      );
    // What its boxes spent, the host's count: only grows, shown with the key.
    h.host.keys.addSpend(made.key.id, 0.25);
    h.host.keys.addSpend(made.key.id, -5);
    h.host.keys.addSpend(made.key.id, NaN);
    expect(h.host.keys.get(made.key.id)?.spentUsd).toBe(0.25);
    expect(h.host.keys.spendOf(made.key.id)).toEqual({
      spentUsd: 0.25,
      maxSpendUsd: 2.5,
      spentSince: made.key.createdAt,
    });
    expect(h.host.keys.spendOf('key_nope')).toBeUndefined();
    for (const bad of [['acme'], ['acme/*/x'], ['*/widgets'], ['../etc'], ['acme/wid gets']]) {
      expect(() => h.host.keys.update(made.key.id, { repos: bad })).toThrow(
        /--repo .*: a GitHub repository grant/,
      );
    }
    expect(() => h.host.keys.update(made.key.id, { maxBoxes: -1 })).toThrow(
      /maxBoxes must be a whole number/,
    );
    expect(() => h.host.keys.update(made.key.id, { maxTasks: 1.5 })).toThrow(
      /maxTasks must be a whole number/,
    );
    expect(() => h.host.keys.update('key_nope', { maxTasks: 1 })).toThrow(/no API key with id key_nope/);
    // An admin key covers any repository whatever its row says; an unknown key covers none.
    const admin = h.host.keys.create({ name: 'a', scope: 'admin' }).key;
    expect(h.host.keys.grantsFor(admin.id).repos).toEqual(['*']);
    expect(h.host.keys.grantsFor('key_nope')).toEqual(NO_GRANTS);
  });

  it("repos: only what the key was granted, the operator's update applies on the next request", async () => {
    const ask = (repos: string[], githubGraphqlOperations?: string[]) =>
      as(secret, 'POST', '/v1/boxes', {
        runtime: 'bash',
        egress: {
          presets: ['github'],
          repos,
          ...(githubGraphqlOperations ? { githubGraphqlOperations } : {}),
        },
      });
    const none = await ask(['acme/widgets']);
    expect(none.statusCode, none.body).toBe(403);
    expect(errorCode(none)).toBe('forbidden');
    expect(fields(none)).toEqual(['egress.repos.0']);
    expect(none.json<{ error: { message: string } }>().error.message).toBe(
      'egress.repos.0: acme/widgets is not among the repositories granted to this key ' +
        `(the operator grants it: agentbox keys update ${keyId} --repo …)`,
    );

    h.host.keys.update(keyId, { repos: ['acme/*', 'solo/one'] });
    const mixed = await ask(['acme/widgets', 'other/thing', 'solo/one', 'solo/two']);
    expect(fields(mixed)).toEqual(['egress.repos.1', 'egress.repos.3']);
    // GraphQL is not held to repos (a mutation names node ids, a query walks to a repository's
    // parent): only a key granted every repository may list an operation.
    const graphql = await ask(['acme/widgets'], ['query Issues', 'mutation CreateIssue']);
    expect(fields(graphql)).toEqual(['egress.githubGraphqlOperations.0', 'egress.githubGraphqlOperations.1']);

    const ok = await ask(['ACME/Widgets', 'acme/gadgets', 'solo/one'], []);
    expect(ok.statusCode, ok.body).toBe(201);
    await as(secret, 'DELETE', `/v1/boxes/${ok.json<{ id: string }>().id}`);

    h.host.keys.update(keyId, { repos: ['*'] });
    const any = await ask(['other/thing'], ['mutation CreateIssue']);
    expect(any.statusCode, any.body).toBe(201);
    await as(secret, 'DELETE', `/v1/boxes/${any.json<{ id: string }>().id}`);
    h.host.keys.update(keyId, { repos: [] });
    // An admin key needs no grant.
    const admin = await h.admin_({
      method: 'POST',
      url: '/v1/boxes',
      payload: {
        runtime: 'bash',
        egress: { repos: ['other/thing'], githubGraphqlOperations: ['mutation X'] },
      },
    });
    expect(admin.statusCode, admin.body).toBe(201);
    await h.admin_({ method: 'DELETE', url: `/v1/boxes/${admin.json<{ id: string }>().id}` });
  });

  it('maxBoxes: a key at its limit gets 429 naming it; other keys and the host are not held back', async () => {
    h.host.keys.update(keyId, { maxBoxes: 1 });
    try {
      const first = await as(secret, 'POST', '/v1/boxes', { runtime: 'bash' });
      expect(first.statusCode, first.body).toBe(201);
      const second = await as(secret, 'POST', '/v1/boxes', { runtime: 'bash' });
      expect(second.statusCode).toBe(429);
      expect(second.json()).toMatchObject({
        error: {
          code: 'capacity_exhausted',
          message: `API key ${keyId} already holds 1 of at most 1 live boxes; delete one or retry later`,
          details: { limit: 1, scope: 'key' },
        },
      });
      // The seed API's persistent boxes count too, and nothing was half made.
      const seed = await as(secret, 'POST', '/create_microvm', { user_id: 'u1', runtime: 'bash' });
      expect(seed.statusCode).toBe(429);
      expect(h.host.store.findLiveByUserOfAnyKey('u1')).toEqual([]);
      const other = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } });
      expect(other.statusCode, other.body).toBe(201);
      await h.admin_({ method: 'DELETE', url: `/v1/boxes/${other.json<{ id: string }>().id}` });
      await as(secret, 'DELETE', `/v1/boxes/${first.json<{ id: string }>().id}`);
      const again = await as(secret, 'POST', '/v1/boxes', { runtime: 'bash' });
      expect(again.statusCode, again.body).toBe(201);
      await as(secret, 'DELETE', `/v1/boxes/${again.json<{ id: string }>().id}`);
    } finally {
      h.host.keys.update(keyId, { maxBoxes: null });
    }
  });

  it("maxMemoryMib and maxDiskGib: a key's live boxes together stay within them", async () => {
    h.host.keys.update(keyId, { maxMemoryMib: 1536, maxDiskGib: 10 });
    const create = (memoryMib: number, diskGib: number) =>
      as(secret, 'POST', '/v1/boxes', { runtime: 'bash', memoryMib, diskGib });
    try {
      const first = await create(1024, 4);
      expect(first.statusCode, first.body).toBe(201);
      // 1024 + 1024 > 1536: deleting a box makes room, so 429.
      const second = await create(1024, 4);
      expect(second.statusCode).toBe(429);
      expect(second.json()).toMatchObject({
        error: {
          code: 'capacity_exhausted',
          message:
            `API key ${keyId} holds 1024 of at most 1536 MiB of memory in its live boxes, and this box ` +
            'asks for 1024; delete a box or retry later',
          details: { limit: 1536, scope: 'key', resource: 'memoryMib', asked: 1024, held: 1024 },
        },
      });
      // 4 + 7 > 10 GiB of disk, though the memory fits.
      const disk = await create(512, 7);
      expect(disk.statusCode).toBe(429);
      expect(disk.json()).toMatchObject({
        error: { code: 'capacity_exhausted', details: { resource: 'diskGib', limit: 10, held: 4 } },
      });
      // Larger than the cap on its own: no retry helps, so 403.
      const huge = await create(2048, 4);
      expect(huge.statusCode).toBe(403);
      expect(huge.json()).toMatchObject({
        error: {
          code: 'forbidden',
          message: `API key ${keyId} may hold at most 1536 MiB of memory in all, and this box asks for 2048`,
        },
      });
      // The seed API's persistent boxes count too; what fits is made.
      const seed = await as(secret, 'POST', '/create_microvm', { user_id: 'u-size', runtime: 'bash' });
      expect(seed.statusCode).toBe(429); // the default 1024 MiB does not fit beside the first box
      expect(h.host.store.findLiveByUserOfAnyKey('u-size')).toEqual([]);
      const fits = await create(512, 6);
      expect(fits.statusCode, fits.body).toBe(201);
      // A raised cap holds from the next request; a deleted box frees its share.
      h.host.keys.update(keyId, { maxMemoryMib: null });
      await as(secret, 'DELETE', `/v1/boxes/${fits.json<{ id: string }>().id}`);
      const more = await create(4096, 6);
      expect(more.statusCode, more.body).toBe(201);
      for (const r of [first, more]) await as(secret, 'DELETE', `/v1/boxes/${r.json<{ id: string }>().id}`);
    } finally {
      h.host.keys.update(keyId, { maxMemoryMib: null, maxDiskGib: null });
    }
  });

  it('maxTasks: queued and running tasks of the key count; one that ended frees its place', async () => {
    const box = await as(secret, 'POST', '/v1/boxes', { runtime: 'bash' });
    const boxId = box.json<{ id: string }>().id;
    h.host.keys.update(keyId, { maxTasks: 2 });
    try {
      const submit = (prompt: string) => as(secret, 'POST', '/v1/tasks', { agent: 'shell', boxId, prompt });
      const running = await submit('sleep 30');
      const queued = await submit('echo queued');
      expect([running.statusCode, queued.statusCode]).toEqual([201, 201]);
      const third = await submit('echo third');
      expect(third.statusCode).toBe(429);
      expect(third.json()).toMatchObject({
        error: { code: 'capacity_exhausted', details: { limit: 2, scope: 'key' } },
      });
      expect(third.json<{ error: { message: string } }>().error.message).toContain(
        `API key ${keyId} already has 2 of at most 2 tasks queued or running`,
      );
      await as(secret, 'POST', `/v1/tasks/${running.json<Task>().id}/cancel`);
      await as(secret, 'GET', `/v1/tasks/${queued.json<Task>().id}/events`); // follows until it ends
      const fourth = await submit('echo fourth');
      expect(fourth.statusCode, fourth.body).toBe(201);
      await as(secret, 'GET', `/v1/tasks/${fourth.json<Task>().id}/events`);
    } finally {
      h.host.keys.update(keyId, { maxTasks: null });
      await as(secret, 'DELETE', `/v1/boxes/${boxId}`);
    }
  });

  it("a task acts with its owner's grants as they stand when it starts", async () => {
    const box = await as(secret, 'POST', '/v1/boxes', { runtime: 'bash' });
    const boxId = box.json<{ id: string }>().id;
    const widen = vi.spyOn(h.host.boxes, 'widenEgress');
    try {
      h.host.keys.update(keyId, { repos: ['acme/widgets'] });
      const t = await as(secret, 'POST', '/v1/tasks', { agent: 'shell', boxId, prompt: 'true' });
      await as(secret, 'GET', `/v1/tasks/${t.json<Task>().id}/events`);
      expect(widen).toHaveBeenCalledTimes(1);
      expect(widen.mock.calls[0]![0].actor).toEqual({
        keyId,
        scope: 'user',
        grants: { ...NO_GRANTS, repos: ['acme/widgets'] },
      });
    } finally {
      widen.mockRestore();
      h.host.keys.update(keyId, { repos: [] });
      await as(secret, 'DELETE', `/v1/boxes/${boxId}`);
    }
  });
});

describe('key grants: a seed user box made twice at once', () => {
  it("at the key's box limit, the second call gets the box the first made, not a 429", async () => {
    const h = await fakeHost({ backend: slowCreateBackend(100) });
    try {
      const { secret } = h.host.keys.create({ name: 'one-box', scope: 'user', grants: { maxBoxes: 1 } });
      const create = () =>
        h.call({
          method: 'POST',
          url: '/create_microvm',
          headers: { 'x-api-key': secret },
          payload: { user_id: 'u1', runtime: 'bash' },
        });
      const answers = await Promise.all([create(), create()]);
      expect(answers.map((r) => r.statusCode)).toEqual([200, 200]);
      expect(answers.map((r) => r.json<{ status: string }>().status).sort()).toEqual(['created', 'exists']);
      expect(h.host.store.findLiveByUserOfAnyKey('u1')).toHaveLength(1);
    } finally {
      await h.close();
    }
  });
});
