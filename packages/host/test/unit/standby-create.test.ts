import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeBackend } from '@agentbox/vm/fake';
import type { Vm, VmTemplate } from '@agentbox/vm';
import type { TemplateBackend } from '../../src/services/box-templates.js';
import { agentBundlePath, fakeHost, type FakeHost } from '../helpers/fake-host.js';

/**
 * A create through the daemon takes the standby clone: templates over the fake driver, whose VMs
 * get a preload() (the real one loads a snapshot; here it only counts), and whose standby start
 * can be made to fail, as a restore from a broken template would.
 */
function templateBackend(opts: { failStandbyStart?: boolean } = {}) {
  const fake = new FakeBackend({ agentBundlePath });
  // The runtime dirs the QEMU driver would make (the standby's is marked in it).
  const boxesRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-standby-'));
  const boxDir = (id: string) => path.join(boxesRoot, id);
  const preloaded: string[] = [];
  const discarded: string[] = [];
  let templates = 0;
  const backend: TemplateBackend = {
    async create(spec) {
      const vm = (await fake.create(spec)) as Vm & { preload?: () => Promise<void> };
      fs.mkdirSync(boxDir(spec.id), { recursive: true });
      const destroy = vm.destroy.bind(vm);
      vm.destroy = async () => {
        await destroy();
        fs.rmSync(boxDir(spec.id), { recursive: true, force: true });
      };
      vm.preload = () => {
        preloaded.push(spec.id);
        if (opts.failStandbyStart) {
          vm.start = () => Promise.reject(new Error('restore failed: state does not load'));
        }
        return Promise.resolve();
      };
      return vm;
    },
    // The first template at once; a rebuild takes a while, as a cold boot does.
    ensureTemplate: (_image, resources) => {
      const template = { id: `tpl-${++templates}`, resources, dir: '/nonexistent' } as unknown as VmTemplate;
      return templates === 1
        ? Promise.resolve(template)
        : new Promise((r) => setTimeout(() => r(template), 3_000).unref());
    },
    discardTemplate: (t) => {
      discarded.push(t.id);
      return Promise.resolve();
    },
  };
  return { fake, backend, boxesRoot, boxDir, preloaded, discarded };
}

const hosts: FakeHost[] = [];
const roots: string[] = [];
afterEach(async () => {
  for (const h of hosts.splice(0)) await h.close();
  for (const r of roots.splice(0)) fs.rmSync(r, { recursive: true, force: true });
});

async function hostOver(t: ReturnType<typeof templateBackend>): Promise<FakeHost> {
  const h = await fakeHost({ backend: t.fake, boxDir: t.boxDir, templates: { backend: t.backend } });
  hosts.push(h);
  roots.push(t.boxesRoot);
  return h;
}

async function waitFor<T>(get: () => T | undefined, what: string): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = get();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`never: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('create takes the standby clone', () => {
  it('the box is the standby (its id, started as a clone), and the next standby is made after', async () => {
    const t = templateBackend();
    const h = await hostOver(t);
    const standbyId = await waitFor(() => t.preloaded[0], 'a standby');
    expect(fs.existsSync(path.join(t.boxDir(standbyId), '.warm-pool'))).toBe(true);
    const readyStandbys = async () =>
      /agentbox_ready_clones\{kind="standby"\} (\d)/.exec(
        (await h.admin_({ method: 'GET', url: '/metrics' })).body,
      )?.[1];
    for (let i = 0; i < 50 && (await readyStandbys()) !== '1'; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await readyStandbys()).toBe('1');

    const r = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} });
    expect(r.statusCode).toBe(201);
    expect(r.json()).toMatchObject({ id: standbyId, state: 'running', startMode: 'clone' });
    expect(fs.existsSync(path.join(t.boxDir(standbyId), '.warm-pool'))).toBe(false);
    await waitFor(() => t.preloaded[1], 'the next standby');

    // Another size is not the standby's: an on-demand clone with an id of its own.
    const other = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { memoryMib: 512 } });
    expect(other.statusCode).toBe(201);
    expect(t.preloaded).not.toContain(other.json<{ id: string }>().id);
  });

  it('a standby that does not start: the template is dropped and the box boots cold, same id', async () => {
    const t = templateBackend({ failStandbyStart: true });
    const h = await hostOver(t);
    const standbyId = await waitFor(() => t.preloaded[0], 'a standby');

    const r = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} });
    expect(r.statusCode).toBe(201);
    expect(r.json()).toMatchObject({ id: standbyId, state: 'running', startMode: 'cold' });
    expect(t.discarded).toEqual(['tpl-1']);
    const exec = await h.admin_({
      method: 'POST',
      url: `/v1/boxes/${standbyId}/exec?stream=false`,
      payload: { command: 'echo up' },
    });
    expect(Buffer.from(exec.json<{ stdout: string }>().stdout, 'base64').toString()).toBe('up\n');
  });
});
