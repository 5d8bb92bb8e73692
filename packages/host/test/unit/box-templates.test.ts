import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Vm, VmExit, VmResources, VmSpec, VmState, VmTemplate } from '@agentbox/vm';
import { createBoxTemplates, type TemplateBackend } from '../../src/services/box-templates.js';

const DEFAULTS: VmResources = { memoryMib: 1024, vcpus: 1, diskGib: 4 };
const dirs: string[] = [];
afterEach(() => {
  RecordingVm.preloadGate = undefined;
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A VM double with the lifecycle BoxTemplates drives: preload → start, pause, destroy, exit. */
class RecordingVm {
  state: VmState = 'created';
  preloaded = false;
  readonly exited: Promise<VmExit>;
  exit!: (e: VmExit) => void;
  constructor(
    readonly id: string,
    readonly spec: VmSpec,
    private readonly dir: string,
  ) {
    this.exited = new Promise((r) => (this.exit = r));
    fs.mkdirSync(dir, { recursive: true });
  }
  /** Set to hold preload() until the test releases it. */
  static preloadGate: Promise<void> | undefined;
  async preload(): Promise<void> {
    await RecordingVm.preloadGate;
    this.preloaded = true;
  }
  start(): Promise<void> {
    this.state = 'running';
    return Promise.resolve();
  }
  pause(): Promise<void> {
    this.state = 'paused';
    return Promise.resolve();
  }
  destroy(): Promise<void> {
    this.state = 'destroyed';
    fs.rmSync(this.dir, { recursive: true, force: true });
    this.exit({ code: 0, signal: null });
    return Promise.resolve();
  }
}

function setup(
  opts: {
    standby?: boolean;
    canPreload?: boolean;
    buildHangs?: boolean;
    warmPool?: number;
    hostShort?: () => boolean;
  } = {},
) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-templates-'));
  dirs.push(home);
  const boxDir = (id: string) => path.join(home, 'boxes', id);
  const vms: RecordingVm[] = [];
  let templates = 0;
  let hung: { promise: Promise<VmTemplate>; reject: (err: Error) => void } | undefined;
  if (opts.buildHangs) {
    let reject!: (err: Error) => void;
    hung = { promise: new Promise<VmTemplate>((_, r) => (reject = r)), reject: (err) => reject(err) };
  }
  const template = (): VmTemplate =>
    ({ id: `tpl-${++templates}`, resources: DEFAULTS, dir: home }) as unknown as VmTemplate;
  const backend: TemplateBackend = {
    create(spec) {
      const vm = new RecordingVm(spec.id, spec, boxDir(spec.id));
      if (opts.canPreload === false) (vm as { preload?: unknown }).preload = undefined;
      vms.push(vm);
      return Promise.resolve(vm as unknown as Vm);
    },
    ensureTemplate: () => (hung ? hung.promise : Promise.resolve(template())),
    discardTemplate: () => Promise.resolve(),
    abortTemplateBuilds: () => {
      hung?.reject(new Error('template build aborted'));
      return hung
        ? hung.promise.then(
            () => undefined,
            () => undefined,
          )
        : Promise.resolve();
    },
  };
  let ids = 0;
  const warnings: string[] = [];
  const t = createBoxTemplates({
    backend,
    image: {} as never,
    defaults: DEFAULTS,
    warmPool: opts.warmPool ?? 0,
    ...(opts.standby !== undefined ? { standby: opts.standby } : {}),
    ...(opts.hostShort ? { hostShort: opts.hostShort } : {}),
    log: { info: () => undefined, warn: (_o, msg) => void warnings.push(msg) },
    newId: () => `box-${++ids}`,
    boxDir,
    probe: { startTime: () => undefined, killMentioning: async () => undefined },
  });
  return { t, vms, boxDir, warnings };
}

const settle = () => new Promise((r) => setTimeout(r, 20));

describe('BoxTemplates: no clone ahead while the host is short of memory', () => {
  it('makes no standby and fills no pool then; both once it has room again', async () => {
    const host = { short: true };
    const { t, vms } = setup({ warmPool: 1, hostShort: () => host.short });
    t.start();
    await settle();
    expect(vms).toHaveLength(0);
    host.short = false;
    // The standby comes with the next create done; the pool's refill tries again by itself.
    t.standbyDone();
    await settle();
    expect(vms.filter((v) => v.preloaded)).toHaveLength(1);
    for (const end = Date.now() + 8_000; vms.length < 2 && Date.now() < end;) await settle();
    // (This double cannot be warmed up, so the pool's clone goes again; it was tried, which is the point.)
    expect(vms.length).toBeGreaterThanOrEqual(2);
    await t.close();
  }, 15_000);
});

describe('BoxTemplates: the standby clone', () => {
  it('keeps one clone of the default template loaded, hands it out once, and makes the next', async () => {
    const { t, vms, boxDir } = setup();
    t.start();
    await settle();
    expect(vms).toHaveLength(1);
    expect(vms[0]!.preloaded).toBe(true);
    expect(vms[0]!.state).toBe('created');
    // Marked, so that a daemon that dies leaves it to the next one's sweep.
    expect(fs.existsSync(path.join(boxDir('box-1'), '.warm-pool'))).toBe(true);

    const taken = t.takeWarm(DEFAULTS)!;
    expect(taken).toMatchObject({ id: 'box-1', state: 'loaded', template: { id: 'tpl-1' } });
    expect(fs.existsSync(path.join(boxDir('box-1'), '.warm-pool'))).toBe(false);
    // The next is made once the create that took it is done (not while that box is set up).
    await settle();
    expect(vms).toHaveLength(1);
    expect(t.takeWarm(DEFAULTS)).toBeUndefined();
    t.standbyDone();
    await settle();
    expect(vms.map((v) => v.id)).toEqual(['box-1', 'box-2']);
    expect(t.takeWarm(DEFAULTS)?.id).toBe('box-2');
    await t.close();
  });

  it('only for the default size', async () => {
    const { t } = setup();
    t.start();
    await settle();
    expect(t.takeWarm({ ...DEFAULTS, memoryMib: 2048 })).toBeUndefined();
    expect(t.takeWarm(DEFAULTS)?.state).toBe('loaded');
    await t.close();
  });

  it('drops the standby of a template that failed to restore, and of one that exited', async () => {
    const { t, vms, warnings } = setup();
    t.start();
    await settle();
    const first = vms[0]!;
    t.failed(t.template(DEFAULTS)!, new Error('restore failed'));
    await settle();
    expect(first.state).toBe('destroyed');
    // The rebuilt template gets a standby of its own.
    await settle();
    const second = vms.at(-1)!;
    expect(second).not.toBe(first);
    expect(t.takeWarm(DEFAULTS)?.template.id).toBe('tpl-2');
    t.standbyDone();
    await settle();
    const third = vms.at(-1)!;
    third.exit({ code: null, signal: 'SIGKILL' });
    await settle();
    expect(warnings).toContain('the standby clone exited');
    expect(t.takeWarm(DEFAULTS)).toBeUndefined();
    await t.close();
  });

  it('a standby given back is kept, unless there is one again already', async () => {
    const { t, vms } = setup();
    t.start();
    await settle();
    // Given back while the next is being made: it stays, the new one goes.
    const first = t.takeWarm(DEFAULTS)!;
    t.standbyDone();
    t.returnWarm(first);
    await settle();
    expect(vms.map((v) => [v.id, v.state])).toEqual([
      ['box-1', 'created'],
      ['box-2', 'destroyed'],
    ]);
    const taken = t.takeWarm(DEFAULTS)!;
    expect(taken.id).toBe('box-1');
    t.standbyDone();
    await settle(); // box-3 is the standby now
    t.returnWarm(taken);
    expect(vms[0]!.state).toBe('destroyed');
    expect(t.takeWarm(DEFAULTS)?.id).toBe('box-3');
    await t.close();
  });

  it('close() destroys the standby; sweepOrphans spares it', async () => {
    const { t, vms } = setup();
    t.start();
    await settle();
    expect(await t.sweepOrphans(new Set())).toEqual([]);
    expect(vms[0]!.state).toBe('created');
    await t.close();
    expect(vms[0]!.state).toBe('destroyed');
  });

  it('close() waits for a standby still being made and destroys it: no QEMU outlives the daemon', async () => {
    const { t, vms, boxDir } = setup();
    let release!: () => void;
    RecordingVm.preloadGate = new Promise((r) => (release = r));
    t.start();
    await settle();
    expect(vms).toHaveLength(1);
    let closed = false;
    const closing = t.close().then(() => (closed = true));
    await settle();
    expect(closed).toBe(false);
    release();
    await closing;
    expect(vms[0]!.state).toBe('destroyed');
    expect(fs.existsSync(boxDir('box-1'))).toBe(false);
  });

  it('close() aborts a template build in flight, quietly', async () => {
    const { t, vms, warnings } = setup({ buildHangs: true });
    t.start();
    await settle();
    const waiting = t.ensure(DEFAULTS);
    await t.close();
    expect(await waiting).toBeUndefined();
    await settle();
    expect(vms).toHaveLength(0);
    expect(warnings).toEqual([]);
  });

  it('none with standby: false, nor with a backend whose VMs cannot preload', async () => {
    const off = setup({ standby: false });
    off.t.start();
    await settle();
    expect(off.vms).toHaveLength(0);
    expect(off.t.takeWarm(DEFAULTS)).toBeUndefined();

    const fake = setup({ canPreload: false });
    fake.t.start();
    await settle();
    expect(fake.vms).toHaveLength(1);
    expect(fake.vms[0]!.state).toBe('destroyed');
    expect(fake.t.takeWarm(DEFAULTS)).toBeUndefined();
    await settle();
    expect(fake.vms).toHaveLength(1); // not tried again
  });
});
