import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { processStartTime, type Vm } from '@agentbox/vm';
import { createBoxService, createBoxStore, openDatabase, type BoxBackend } from '../../src/index.js';
import { HOST_ENV_FILE } from '../../src/services/box-service.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A pid that surely belongs to no process any more. */
function deadPid(): number {
  return spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim() as unknown as number;
}

function setup(backend: Partial<BoxBackend> = {}) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-reconcile-'));
  dirs.push(dataDir);
  const db = openDatabase(dataDir);
  const store = createBoxStore(db);
  const killed: string[] = [];
  const boxes = createBoxService({
    store,
    backend: { create: () => Promise.reject(new Error('no boots here')), ...backend },
    image: {} as never,
    boxDir: (id) => path.join(dataDir, 'boxes', id),
    limits: { maxBoxes: 10, defaults: { memoryMib: 512, vcpus: 1, diskGib: 2 } },
    metrics: { observeBoot: () => undefined },
    log: { info: () => undefined, warn: () => undefined },
    probe: {
      startTime: processStartTime,
      killMentioning: async (text) => void killed.push(text),
    },
  });
  const record = (
    id: string,
    state: 'creating' | 'running' | 'stopped',
    pid: number | null,
    startTime: number | null,
    userId: string | null = null,
  ) => {
    const dir = path.join(dataDir, 'boxes', id);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'disk.qcow2'), 'overlay');
    store.insert(
      {
        id,
        ownerKeyId: 'k',
        userId,
        runtime: 'bash',
        memoryMib: 512,
        vcpus: 1,
        diskGib: 2,
        ttlSeconds: null,
        labels: {},
        dir,
        egressPolicy: null,
      },
      { maxLive: 10 },
    );
    if (state !== 'creating')
      store.transition(id, 'running', { from: ['creating'], patch: { pid, pidStartTime: startTime } });
    if (state === 'stopped') store.transition(id, 'stopped', { from: ['running'] });
    return dir;
  };
  return { store, boxes, record, killed, db };
}

describe('reconciler: the store against live VM processes on daemon start', () => {
  it('finishes the cleanup of a box that failed just before the daemon died', async () => {
    const { store, boxes, record, killed } = setup();
    const dir = record('box-00000000f1', 'running', null, null);
    // Marked failed, then the daemon died before its files were removed.
    store.transition('box-00000000f1', 'failed', {
      from: ['running'],
      patch: { failureReason: 'the VM exited' },
    });
    await boxes.reconcile();
    expect(fs.existsSync(dir)).toBe(false);
    expect(killed).toContain(dir);
    expect(store.get('box-00000000f1')).toMatchObject({ state: 'failed', failureReason: 'the VM exited' });
  });

  it('fails boxes whose VM is gone or whose pid now belongs to another process, and cleans their files', async () => {
    const { store, boxes, record, killed, db } = setup();
    const gone = record('box-0000000001', 'running', Number(deadPid()), 12345);
    const reused = record('box-0000000002', 'running', process.pid, 1); // same pid, other start time
    const booting = record('box-0000000003', 'creating', null, null);
    const deleting = record('box-0000000004', 'stopped', null, null);
    const result = await boxes.reconcile();
    expect(result.failed.sort()).toEqual(['box-0000000001', 'box-0000000002', 'box-0000000003']);
    expect(result.deleted).toEqual(['box-0000000004']);
    expect(store.get('box-0000000001')).toMatchObject({ state: 'failed', failureReason: 'the VM died' });
    expect(store.get('box-0000000003')).toMatchObject({
      state: 'failed',
      failureReason: 'the daemon stopped while it booted',
    });
    expect(store.get('box-0000000004')?.state).toBe('deleted');
    for (const dir of [gone, reused, booting, deleting]) expect(fs.existsSync(dir)).toBe(false);
    // leftover processes are looked for by the box dir, never by pid alone
    expect(killed.sort()).toEqual([gone, reused, booting, deleting].sort());
    expect(store.live()).toEqual([]);
    db.close();
  });

  it('re-adopts a box whose VM process (pid + start time) still runs', async () => {
    const adopted: unknown[] = [];
    const vm = {
      id: 'box-0000000005',
      state: 'running',
      pid: process.pid,
      exited: new Promise(() => undefined),
      guest: { readFileBuffer: () => Promise.resolve(Buffer.from('{"TOKEN":"t"}')) },
    } as unknown as Vm;
    const { store, boxes, record, db } = setup({
      adopt: (spec) => (adopted.push(spec), Promise.resolve(vm)),
    });
    const dir = record('box-0000000005', 'running', process.pid, processStartTime(process.pid)!);
    const result = await boxes.reconcile();
    expect(result.adopted).toEqual(['box-0000000005']);
    expect(adopted).toEqual([
      { id: 'box-0000000005', pid: process.pid, startTime: processStartTime(process.pid) },
    ]);
    expect(store.get('box-0000000005')?.state).toBe('running');
    expect(fs.existsSync(dir)).toBe(true);
    expect((await boxes.acquire({ actor: { keyId: 'k', scope: 'user' }, id: 'box-0000000005' })).env).toEqual(
      {
        TOKEN: 't',
      },
    );
    db.close();
  });

  it('a store that cannot record a re-adopted VM fails the start, not the box: its VM and files are kept', async () => {
    const vm = {
      id: 'box-0000000007',
      state: 'paused', // as QEMU stopped on a full disk (io-error) is found
      pid: process.pid,
      exited: new Promise(() => undefined),
      guest: {},
    } as unknown as Vm;
    const { store, boxes, record, killed, db } = setup({ adopt: () => Promise.resolve(vm) });
    const dir = record('box-0000000007', 'running', process.pid, processStartTime(process.pid)!);
    // The store cannot record it (as on a full disk); it could still record a failure.
    db.exec(
      `CREATE TRIGGER full BEFORE UPDATE ON boxes WHEN NEW.state = 'paused'
       BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END`,
    );
    await expect(boxes.reconcile()).rejects.toThrow('database or disk is full');
    db.exec('DROP TRIGGER full');
    expect(store.get('box-0000000007')?.state).toBe('running');
    expect(fs.existsSync(dir)).toBe(true);
    expect(killed).toEqual([]);
    db.close();
  });

  it("takes a re-adopted box's env from the host's copy, not from what its guest rewrote", async () => {
    const vm = {
      id: 'box-0000000006',
      state: 'running',
      pid: process.pid,
      exited: new Promise(() => undefined),
      guest: { readFileBuffer: () => Promise.resolve(Buffer.from('{"MODE":"rewritten by the guest"}')) },
    } as unknown as Vm;
    const { boxes, record, db } = setup({ adopt: () => Promise.resolve(vm) });
    const dir = record('box-0000000006', 'running', process.pid, processStartTime(process.pid)!);
    fs.writeFileSync(path.join(dir, HOST_ENV_FILE), JSON.stringify({ MODE: 'as created' }));
    expect((await boxes.reconcile()).adopted).toEqual(['box-0000000006']);
    expect((await boxes.acquire({ actor: { keyId: 'k', scope: 'user' }, id: 'box-0000000006' })).env).toEqual(
      {
        MODE: 'as created',
      },
    );
    db.close();
  });

  it('serves a re-adopted box while another is still being re-adopted, whose requests wait for it', async () => {
    const vmOf = (id: string) => {
      const vm = {
        id,
        state: 'running',
        pid: process.pid,
        exited: new Promise(() => undefined),
        guest: { readFileBuffer: () => Promise.resolve(Buffer.from(JSON.stringify({ BOX: id }))) },
        pause: () => {
          vm.state = 'paused';
          return Promise.resolve();
        },
      };
      return vm as unknown as Vm;
    };
    // The second VM's QEMU takes its time to reconnect (a loaded host, or a guest that stalls).
    let reconnect!: () => void;
    const slow = new Promise<void>((resolve) => (reconnect = resolve));
    const { store, boxes, record, db } = setup({
      adopt: async (spec) => {
        if (spec.id === 'box-00000000b2') await slow;
        return vmOf(spec.id);
      },
    });
    const startTime = processStartTime(process.pid)!;
    record('box-00000000b1', 'running', process.pid, startTime);
    record('box-00000000b2', 'running', process.pid, startTime);
    const actor = { keyId: 'k', scope: 'user' } as const;
    const reconciled = boxes.reconcile();

    const ready = await boxes.acquire({ actor, id: 'box-00000000b1' });
    expect(ready.env).toEqual({ BOX: 'box-00000000b1' });
    ready.release();
    const settled: string[] = [];
    const lease = boxes.acquire({ actor, id: 'box-00000000b2' }).then((l) => (settled.push('lease'), l));
    const paused = boxes.pause({ actor, id: 'box-00000000b2' }).then((b) => (settled.push('pause'), b));
    // The reaper (and /maintenance) leave a box being re-adopted alone: it has no session yet.
    expect((await boxes.reap()).reaped).toEqual([]);
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toEqual([]);
    expect(store.get('box-00000000b2')?.state).toBe('running');

    reconnect();
    expect((await reconciled).adopted.sort()).toEqual(['box-00000000b1', 'box-00000000b2']);
    expect((await lease).env).toEqual({ BOX: 'box-00000000b2' });
    // The pause waited for the re-adoption, and then paused the adopted VM.
    expect((await paused).state).toBe('paused');
    db.close();
  });

  it('fails a box whose VM runs but does not answer', async () => {
    const { store, boxes, record, db } = setup({
      adopt: () => Promise.reject(new Error('did not reconnect within 15s')),
    });
    record('box-0000000006', 'running', process.pid, processStartTime(process.pid)!);
    expect((await boxes.reconcile()).failed).toEqual(['box-0000000006']);
    expect(store.get('box-0000000006')?.failureReason).toMatch(
      /could not re-adopt the VM: did not reconnect/,
    );
    db.close();
  });

  it("keeps a user's persistent box whose VM runs but does not answer: killed, hibernated, disk kept", async () => {
    const { store, boxes, record, killed, db } = setup({
      adopt: () => Promise.reject(new Error('did not reconnect within 15s')),
      hibernation: () => undefined,
    });
    const dir = record('box-0000000007', 'running', process.pid, processStartTime(process.pid)!, 'u7');
    const result = await boxes.reconcile();
    expect(result).toMatchObject({ failed: [], hibernated: ['box-0000000007'] });
    expect(store.get('box-0000000007')).toMatchObject({
      state: 'hibernated',
      pid: null,
      failureReason: null,
    });
    expect(fs.readFileSync(path.join(dir, 'disk.qcow2'), 'utf8')).toBe('overlay');
    // its VM process goes (looked for by the box dir), its files stay
    expect(killed).toEqual([dir]);
    db.close();
  });
});
