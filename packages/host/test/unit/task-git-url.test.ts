import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { EgressPolicySchema, type Task, type TaskEvent } from '@agentbox/protocol';
import { widenPolicy } from '../../src/services/box-service.js';
import { errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

/**
 * A task's repository is reached by host name: the task opens its box's egress to that name, and
 * never to an address. A URL whose host the egress policy could not list is refused when the task
 * is submitted (400 naming gitRepoUrl and why), not accepted and then failed with a raw schema error.
 */
describe('POST /v1/tasks: the host of gitRepoUrl', () => {
  let h: FakeHost;
  let boxId: string;
  beforeAll(async () => {
    // Egress stays off: the fake driver's "guest" is this host, whose trust store a box's CA
    // install would write to. What the task opens is read from the call that would widen it.
    h = await fakeHost();
    const box = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } });
    expect(box.statusCode, box.body).toBe(201);
    boxId = box.json<{ id: string }>().id;
  });
  afterAll(() => h.close());

  const submit = (gitRepoUrl: string) =>
    h.admin_({
      method: 'POST',
      url: '/v1/tasks',
      payload: { agent: 'shell', boxId, prompt: 'true', gitRepoUrl },
    });
  const taskCount = () => h.host.tasks.list({ actor: { keyId: 'test', scope: 'admin' } }).tasks.length;
  const message = (r: { json: <T>() => T }) => r.json<{ error: { message: string } }>().error.message;

  it.each([
    ['https://10.0.0.1/x.git', '10.0.0.1'],
    ['https://[::1]/x.git', '[::1]'],
    ['https://[2001:db8::7]:8443/team/x.git', '[2001:db8::7]'],
    // Legacy IPv4 spellings are addresses too (the URL parser reads them as 127.0.0.1).
    ['https://0x7f.1/x.git', '127.0.0.1'],
    ['https://2130706433/x.git', '127.0.0.1'],
  ])('%s: 400 invalid_request, one sentence naming the field and why', async (url, shown) => {
    const before = taskCount();
    const r = await submit(url);
    expect(r.statusCode, r.body).toBe(400);
    expect(errorCode(r)).toBe('invalid_request');
    expect(message(r)).toBe(
      `invalid body: gitRepoUrl: must name a host, not an IP address (${shown}): a task's box may reach its repository only by host name`,
    );
    expect(r.json()).toMatchObject({ error: { details: { issues: [{ field: 'gitRepoUrl' }] } } });
    expect(taskCount()).toBe(before);
  });

  it.each(['https://*.example.com/x.git', 'https://a+b.example.com/x.git'])(
    '%s: a host the egress policy could not list is refused too, naming it',
    async (url) => {
      const r = await submit(url);
      expect(r.statusCode, r.body).toBe(400);
      expect(errorCode(r)).toBe('invalid_request');
      expect(message(r)).toMatch(/^invalid body: gitRepoUrl: must name a valid host \(.*\), not \S+$/);
    },
  );

  it('keeps the earlier refusals as they were', async () => {
    for (const url of ['http://github.com/a/b', 'https://user:pw@github.com/a/b', 'not a url']) {
      const r = await submit(url);
      expect(r.statusCode).toBe(400);
      expect(message(r)).toBe('invalid body: gitRepoUrl: must be an https:// URL without credentials');
    }
  });

  it('takes a host name: the task runs, its box may reach that name, and the clone is tried', async () => {
    const widen = vi.spyOn(h.host.boxes, 'widenEgress');
    const r = await submit('https://Git.Example.com./team/x.git');
    expect(r.statusCode, r.body).toBe(201);
    const id = r.json<Task>().id;
    const events = (await h.admin_({ method: 'GET', url: `/v1/tasks/${id}/events` })).body
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as TaskEvent);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'status', content: expect.objectContaining({ state: 'cloning' }) }),
    );
    // No VM network here, so the clone itself fails: a clone error, not a schema one.
    expect(events.at(-1)).toMatchObject({ type: 'error', content: { code: 'clone_failed' } });
    expect(widen).toHaveBeenCalledTimes(1);
    const widening = widen.mock.calls[0]![0];
    widen.mockRestore();
    expect(widening.id).toBe(boxId);
    expect(EgressPolicySchema.parse(widenPolicy({}, widening)).allowDomains).toEqual(['git.example.com']);
  });

  it("keeps a box's copy of the repository, and refuses a directory of that name holding another", async () => {
    const workspace = path.join(h.dataDir, 'guest', boxId, 'workspace');
    const repoAt = (dir: string, origin: string) => {
      execFileSync('git', ['init', '--quiet', path.join(workspace, dir)]);
      execFileSync('git', ['-C', path.join(workspace, dir), 'remote', 'add', 'origin', origin]);
    };
    const lastEvent = async (url: string) => {
      const r = await submit(url);
      expect(r.statusCode, r.body).toBe(201);
      const body = (await h.admin_({ method: 'GET', url: `/v1/tasks/${r.json<Task>().id}/events` })).body;
      return JSON.parse(body.trim().split('\n').at(-1)!) as TaskEvent;
    };
    repoAt('tools', 'https://git.example.com/team/tools.git');
    // The same repository (spelled with or without .git): no clone, the task runs in it.
    expect(await lastEvent('https://git.example.com/team/tools')).toMatchObject({ type: 'completion' });
    repoAt('other', 'https://git.example.com/someone-else/other.git');
    expect(await lastEvent('https://git.example.com/team/other.git')).toMatchObject({
      type: 'error',
      content: { code: 'clone_failed', message: expect.stringMatching(/already holds another repository/) },
    });
  });
});
