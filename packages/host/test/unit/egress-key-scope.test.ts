import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { REVOKED_KEY_POLICY, userPolicyExcess } from '@agentbox/egress';
import { EgressPolicySchema, type AgentKind, type EgressPolicyInput, type Task } from '@agentbox/protocol';
import { FakeBackend } from '@agentbox/vm/fake';
import { processStartTime } from '@agentbox/vm';
import { createBoxService, createBoxStore, openDatabase, type Db } from '../../src/index.js';
import {
  widenPolicy,
  type BoxEgress,
  type BoxServiceDeps,
  type EgressWidening,
} from '../../src/services/box-service.js';
import { AGENT_PRESETS } from '../../src/services/task-service.js';
import { NO_GRANTS } from '../../src/store/key-store.js';
import { agentBundlePath, errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

/**
 * Who may open what to a box: a `user` key's box reaches public destinations on the default ports
 * only; the LAN, the host, private or local allowIPs, other ports and the test-only upstream map
 * need an admin key, at every way in that takes a policy.
 */

/** Each request goes beyond a user key in one field (named as the 403 names it). */
const TOO_WIDE: [string, EgressPolicyInput][] = [
  ['egress.allowLan', { allowLan: true }],
  ['egress.allowHost', { allowHost: true }],
  ['egress.allowIPs.0', { allowIPs: ['10.0.0.0/8'] }],
  ['egress.allowIPs.0', { allowIPs: ['192.168.0.0/16'] }],
  ['egress.allowIPs.1', { allowIPs: ['8.8.8.8', '192.168.1.10'] }],
  ['egress.allowIPs.0', { allowIPs: ['100.64.0.0/10'] }],
  ['egress.allowIPs.0', { allowIPs: ['fd00::/8'] }],
  ['egress.allowIPs.0', { allowIPs: ['127.0.0.1'] }],
  ['egress.allowPorts', { allowPorts: [22] }],
  ['egress.allowPorts', { allowPorts: [443, 5432] }],
  ['egress.allowPorts', { allowPorts: [6379] }],
  ['egress.upstreams', { upstreams: { 'api.anthropic.com': '10.0.0.5:22' } }],
];

describe('egress a key may ask for, over HTTP', () => {
  let h: FakeHost;
  let alice: string;
  beforeAll(async () => {
    h = await fakeHost({ maxConcurrentTasks: 2 });
    alice = h.host.keys.create({ name: 'alice', scope: 'user' }).secret;
  });
  afterAll(() => h.close());

  const asAlice = (method: 'GET' | 'POST', url: string, payload?: object) =>
    h.call({ method, url, headers: { 'x-api-key': alice }, ...(payload ? { payload } : {}) });

  it.each(TOO_WIDE)('POST /v1/boxes by a user key: %s → 403 forbidden, no box', async (field, egress) => {
    const before = h.host.store.live().length;
    const r = await asAlice('POST', '/v1/boxes', { egress });
    expect(r.statusCode, r.body).toBe(403);
    expect(errorCode(r)).toBe('forbidden');
    const { message, details } = r.json<{ error: { message: string; details: { fields: string[] } } }>()
      .error;
    expect(message).toContain(`${field} needs an admin key`);
    expect(details.fields).toEqual([field]);
    expect(h.host.store.live()).toHaveLength(before);
  });

  it('names every field that goes too far', async () => {
    const r = await asAlice('POST', '/v1/boxes', {
      userId: 'alice-lan',
      egress: { allowLan: true, allowHost: true, allowIPs: ['192.168.0.0/16'], allowPorts: [22, 443] },
    });
    expect(r.statusCode).toBe(403);
    expect(r.json<{ error: { details: { fields: string[] } } }>().error.details.fields).toEqual([
      'egress.allowLan',
      'egress.allowHost',
      'egress.allowIPs.0',
      'egress.allowPorts',
    ]);
    // the refused request took no user id either
    expect(h.host.store.findLiveByUserOfAnyKey('alice-lan')[0]).toBeUndefined();
  });

  it('a user key may ask for public destinations on the default ports, and its granted repos: 201', async () => {
    const egress = {
      allowDomains: ['example.com', '*.example.org'],
      presets: ['github', 'npm'],
      repos: ['acme/widgets'],
      allowIPs: ['8.8.8.8', '2606:4700::/32'],
      allowPorts: [443],
    };
    // No repository granted yet: the host's GitHub token is not the key's to use.
    const refused = await asAlice('POST', '/v1/boxes', { egress });
    expect(refused.statusCode, refused.body).toBe(403);
    expect(refused.json()).toMatchObject({
      error: { code: 'forbidden', details: { fields: ['egress.repos.0'] } },
    });
    const aliceId = h.host.keys.list().find((k) => k.name === 'alice')!.id;
    h.host.keys.update(aliceId, { repos: ['acme/*'] });
    const r = await asAlice('POST', '/v1/boxes', { egress });
    expect(r.statusCode, r.body).toBe(201);
  });

  it('an admin key may ask for all of it: 201', async () => {
    const r = await h.admin_({
      method: 'POST',
      url: '/v1/boxes',
      payload: {
        egress: {
          allowLan: true,
          allowHost: true,
          allowIPs: ['10.0.0.0/8', '192.168.0.0/16', '100.64.0.0/10', 'fd00::/8'],
          allowPorts: [22, 443, 5432, 6379],
        },
      },
    });
    expect(r.statusCode, r.body).toBe(201);
  });

  it('the seed create takes no policy: a user key gets the default one, and cannot slip one in', async () => {
    const made = await asAlice('POST', '/create_microvm', {
      user_id: 'alice-seed',
      runtime: 'bash',
      env_vars: {},
    });
    expect(made.statusCode, made.body).toBe(200);
    const sneaky = await asAlice('POST', '/create_microvm', {
      user_id: 'alice-seed-2',
      runtime: 'bash',
      egress: { allowLan: true },
    });
    expect(sneaky.statusCode).toBe(400);
    expect(errorCode(sneaky)).toBe('invalid_request');
    expect(h.host.store.findLiveByUserOfAnyKey('alice-seed-2')[0]).toBeUndefined();
  });

  it("a user key's task on a fresh box runs: the daemon's own policy for it is within the key's scope", async () => {
    const r = await asAlice('POST', '/v1/tasks', { agent: 'shell', prompt: 'echo in a fresh box' });
    expect(r.statusCode, r.body).toBe(201);
    const id = r.json<Task>().id;
    await asAlice('GET', `/v1/tasks/${id}/events`); // follows until the task ends
    const done = (await asAlice('GET', `/v1/tasks/${id}`)).json<Task>();
    expect(done, JSON.stringify(done)).toMatchObject({ state: 'succeeded' });
    // The task's box goes with it: wait, so closing the host does not race its delete.
    for (const end = Date.now() + 5_000; h.host.store.get(done.boxId!)?.state !== 'deleted';) {
      if (Date.now() > end) throw new Error('the task box was not deleted');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });

  it('a task cannot carry a policy either', async () => {
    const r = await asAlice('POST', '/v1/tasks', {
      agent: 'shell',
      prompt: 'true',
      egress: { allowLan: true },
    });
    expect(r.statusCode).toBe(400);
    expect(errorCode(r)).toBe('invalid_request');
  });
});

describe('egress a key may ask for, in the box service (egress on)', () => {
  const dirs: string[] = [];
  const dbs: Db[] = [];
  afterEach(() => {
    for (const db of dbs.splice(0)) if (db.open) db.close();
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  /** A box service whose egress only records the policies it is given. */
  function service(keys?: BoxServiceDeps['keys']) {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-egress-scope-'));
    dirs.push(dataDir);
    const db = openDatabase(dataDir);
    dbs.push(db);
    const attached: EgressPolicyInput[] = [];
    const updated: EgressPolicyInput[] = [];
    const egress: BoxEgress = {
      attach: (_id, policy) => {
        attached.push(policy);
        return Promise.resolve();
      },
      isCredential: () => false,
      detach: () => Promise.resolve(),
      updatePolicy: (_id, policy) => void updated.push(policy),
    };
    const boxes = createBoxService({
      store: createBoxStore(db),
      backend: new FakeBackend({ agentBundlePath }),
      image: {} as never,
      boxDir: (id) => path.join(dataDir, 'boxes', id),
      guestLayout: (id) => ({
        workspace: path.join(dataDir, 'guest', id, 'workspace'),
        envFile: path.join(dataDir, 'guest', id, 'env.json'),
      }),
      limits: { maxBoxes: 4, defaults: { memoryMib: 512, vcpus: 1, diskGib: 2 } },
      metrics: { observeBoot: () => undefined },
      log: { info: () => undefined, warn: () => undefined },
      probe: { startTime: processStartTime, killMentioning: async () => undefined },
      egress,
      ...(keys ? { keys } : {}),
    });
    return { boxes, attached, updated };
  }
  const user = { keyId: 'key-user', scope: 'user' as const };
  /** A user key's box as a task makes it: the agent's API only. */
  const agentBox = (boxes: ReturnType<typeof service>['boxes']) =>
    boxes.create({ actor: user, runtime: 'claude-agent', egressPolicy: { presets: ['anthropic'] } });
  const granted = { ...user, grants: { ...NO_GRANTS, repos: ['acme/widgets'] } };
  const admin = { keyId: 'key-admin', scope: 'admin' as const };

  it('refuses a user key before any box exists; gives an admin key what it asked for', async () => {
    const { boxes, attached } = service();
    await expect(
      boxes.create({ actor: user, runtime: 'bash', egressPolicy: { allowHost: true } }),
    ).rejects.toMatchObject({ code: 'forbidden', details: { fields: ['egress.allowHost'] } });
    expect(boxes.list({ actor: admin })).toEqual([]);
    expect(attached).toEqual([]);
    const box = await boxes.create({
      actor: admin,
      runtime: 'bash',
      egressPolicy: { allowLan: true, allowHost: true, allowPorts: [22] },
    });
    try {
      expect(attached).toHaveLength(1);
      expect(box.egressPolicy).toMatchObject({ allowLan: true, allowHost: true, allowPorts: [22] });
    } finally {
      await boxes.remove({ actor: admin, id: box.id });
    }
  });

  it("a task's widening adds names and repositories only, never the LAN, the host, addresses or ports", async () => {
    const { boxes, updated } = service();
    const box = await agentBox(boxes);
    try {
      // Whatever else an object carries, only presets, domains and repos are read from it.
      const widening = {
        presets: ['github'],
        repos: ['acme/widgets'],
        domains: ['git.example.com'],
        allowLan: true,
        allowHost: true,
        allowIPs: ['10.0.0.0/8'],
        allowPorts: [22],
      } as EgressWidening;
      await boxes.widenEgress({ actor: granted, id: box.id, ...widening });
      expect(updated).toHaveLength(1);
      const next = EgressPolicySchema.parse(updated[0]);
      expect(next).toMatchObject({
        presets: ['anthropic', 'github'],
        repos: ['acme/widgets'],
        allowDomains: ['git.example.com'],
        allowLan: false,
        allowHost: false,
        allowIPs: [],
        allowPorts: [80, 443],
      });
      expect(next.upstreams).toBeUndefined();
      expect(userPolicyExcess(next)).toEqual([]);
    } finally {
      await boxes.remove({ actor: user, id: box.id });
    }
  });

  it("a box's egress follows its key: a grant taken back narrows it, a revoked key cuts it", async () => {
    let active = true;
    let repos = ['acme/*'];
    const { boxes, attached, updated } = service({
      isActive: () => active,
      grantsFor: () => ({ ...NO_GRANTS, repos }),
    });
    const box = await boxes.create({
      actor: { ...user, grants: { ...NO_GRANTS, repos } },
      runtime: 'bash',
      egressPolicy: { presets: ['github'], repos: ['acme/widgets', 'acme/gadgets'] },
    });
    const last = () => EgressPolicySchema.parse(updated.at(-1));
    try {
      expect(attached[0]).toMatchObject({ repos: ['acme/widgets', 'acme/gadgets'] });
      boxes.startEgressKeyCheck(5);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(updated).toEqual([]); // nothing moved, nothing sent
      repos = ['acme/widgets'];
      await vi.waitFor(() => expect(updated).toHaveLength(1));
      expect(last()).toMatchObject({ presets: ['github'], repos: ['acme/widgets'] });
      // Cut to nothing, the list stays: GitHub refused, not reached as the public does.
      repos = [];
      await vi.waitFor(() => expect(updated).toHaveLength(2));
      expect(last().repos).toEqual([]);
      repos = ['acme/*'];
      await vi.waitFor(() => expect(updated).toHaveLength(3));
      expect(last().repos).toEqual(['acme/widgets', 'acme/gadgets']);
      active = false;
      await vi.waitFor(() => expect(updated).toHaveLength(4));
      expect(last()).toEqual(REVOKED_KEY_POLICY);
      expect(last()).toMatchObject({ allowDomains: [], presets: [], allowIPs: [] });
      // What the box asked for stays on record; only what its session enforces moved.
      expect(boxes.get({ actor: admin, id: box.id }).egressPolicy).toMatchObject({
        repos: ['acme/widgets', 'acme/gadgets'],
      });
    } finally {
      await boxes.close();
      await boxes.remove({ actor: admin, id: box.id });
    }
  });

  it('every attach (create, re-adopt, wake) gives the session the policy the key allows now', async () => {
    // The grant was taken back between the request's authentication and the box's attach.
    const { boxes, attached } = service({
      isActive: () => true,
      grantsFor: () => ({ ...NO_GRANTS, repos: ['acme/widgets'] }),
    });
    const box = await boxes.create({
      actor: { ...user, grants: { ...NO_GRANTS, repos: ['acme/*'] } },
      runtime: 'bash',
      egressPolicy: { presets: ['github'], repos: ['acme/widgets', 'acme/gadgets'] },
    });
    try {
      expect(EgressPolicySchema.parse(attached[0]).repos).toEqual(['acme/widgets']);
    } finally {
      await boxes.remove({ actor: admin, id: box.id });
    }
  });

  it("a task's repository the key has no grant for is reached without the token: github, no repos", async () => {
    const { boxes, updated } = service();
    const box = await agentBox(boxes);
    try {
      await boxes.widenEgress({ actor: user, id: box.id, presets: ['github'], repos: ['acme/widgets'] });
      expect(EgressPolicySchema.parse(updated[0])).toMatchObject({ presets: ['anthropic', 'github'] });
      expect(EgressPolicySchema.parse(updated[0]).repos).toBeUndefined();
      // An admin key's task may use any repository.
      await boxes.widenEgress({ actor: admin, id: box.id, presets: ['github'], repos: ['other/thing'] });
      expect(EgressPolicySchema.parse(updated[1]).repos).toEqual(['other/thing']);
    } finally {
      await boxes.remove({ actor: user, id: box.id });
    }
  });
});

describe("the daemon's own task policies", () => {
  it.each(Object.keys(AGENT_PRESETS) as AgentKind[])(
    '%s: the fresh box and its widening for a repository stay within a user key',
    (agent) => {
      const fresh: EgressPolicyInput = { presets: AGENT_PRESETS[agent] };
      expect(userPolicyExcess(EgressPolicySchema.parse(fresh))).toEqual([]);
      const widened = widenPolicy(fresh, {
        presets: [...AGENT_PRESETS[agent], 'github'],
        repos: ['acme/widgets'],
        domains: ['git.example.com'],
      });
      expect(userPolicyExcess(EgressPolicySchema.parse(widened))).toEqual([]);
    },
  );
});
