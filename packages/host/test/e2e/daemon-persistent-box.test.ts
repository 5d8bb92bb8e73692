import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Box, ExecResult } from '@agentbox/protocol';
import { sharedRuntime } from '../../../../test/helpers.js';
import { processesMentioning } from '@agentbox/vm';
import { DEFAULT_BOX_RESOURCES } from '../../src/index.js';
import { CLI, client, standbyDirsIn, startDaemon, stopDaemonClean, type Daemon } from '../helpers/daemon.js';

const unb64 = (s: string) => Buffer.from(s, 'base64').toString();
const USER = 'e2e-persistent-user';

/**
 * The per-user persistent box through the daemon, with real VMs: it is a clone of the template,
 * pauses and hibernates when idle, wakes on the next request, and survives `kill -9` of the daemon
 * — hibernated (woken from its snapshot), and with its VM gone too, as after a host reboot (booted
 * from its disk) — with its files.
 */
describe('agentbox serve: the persistent user box across idle, hibernate and daemon restarts', () => {
  let dataDir: string;
  let daemon: Daemon;
  let key: string;
  let api: ReturnType<typeof client>;
  let boxId: string;
  const idleArgs = ['--idle-pause-seconds', '2', '--idle-hibernate-seconds', '3'];

  const box = async () => (await (await api('GET', `/v1/boxes/${boxId}`)).json()) as Box;
  /** Waits for a state; for `hibernated`, until the snapshot is written (the record says so first). */
  const waitForState = async (state: Box['state'], timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const b = await box();
      if (b.state === state && (state !== 'hibernated' || b.pid === null)) return b;
      if (Date.now() > deadline) throw new Error(`box stayed ${b.state}, never ${state}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };
  const workspaceFiles = async () =>
    ((await (await api('GET', `/list_workspace_files?user_id=${USER}`)).json()) as { files: string[] }).files;

  beforeAll(async () => {
    // The daemon finds the template this builds (same home, image and size) and clones from it.
    const rt = await sharedRuntime();
    await rt.backend.ensureTemplate(rt.image, DEFAULT_BOX_RESOURCES);
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-persistent-e2e-'));
    daemon = await startDaemon(dataDir, idleArgs);
    key = daemon.initialKey!;
    api = client(daemon.url, key);
  });

  afterAll(async () => {
    await stopDaemonClean(daemon, api, dataDir);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  /**
   * The daemon's standby clone (QEMU up, template loaded, guest not run), once it has made one: its
   * dir is marked while it is being made, the metric says when it is ready.
   */
  const standby = async (timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const dirs = standbyDirsIn(dataDir);
      const metrics = await (await api('GET', '/metrics')).text();
      if (dirs.length === 1 && /agentbox_ready_clones\{kind="standby"\} 1/.test(metrics)) return dirs[0]!;
      if (Date.now() > deadline) throw new Error(`standby clones: ${JSON.stringify(dirs)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  it('creates the user box as a clone; pause/resume/hibernate by CLI; idle pause then hibernate', async () => {
    // The template is there: the daemon keeps a clone of it loaded, and the create starts that one.
    const ready = await standby();
    const created = await api('POST', '/create_microvm', { user_id: USER, runtime: 'bash' });
    expect(created.status).toBe(200);
    const status = (await (await api('GET', '/status')).json()) as {
      microvms: Record<string, { box_id: string }>;
    };
    boxId = status.microvms[USER]!.box_id;
    expect(boxId).toBe(ready);
    expect(await box()).toMatchObject({ state: 'running', startMode: 'clone' });
    expect(await standby()).not.toBe(boxId);
    const made = (await (
      await api('POST', `/v1/boxes/${boxId}/exec?stream=false`, {
        command: 'echo "keep me" > notes.txt && sync && hostname',
      })
    ).json()) as ExecResult;
    expect(unb64(made.stdout)).toBe(`${boxId}\n`);

    const cli = (...args: string[]) =>
      execFileSync(process.execPath, [CLI, ...args, boxId, '--url', daemon.url, '--key', key], {
        encoding: 'utf8',
      });
    expect(cli('pause')).toMatch(new RegExp(`^${boxId} paused`));
    expect(cli('resume')).toMatch(new RegExp(`^${boxId} running`));
    expect(JSON.parse(cli('hibernate', '--json'))).toMatchObject({
      id: boxId,
      state: 'hibernated',
      pid: null,
    });
    expect(await workspaceFiles()).toEqual(['notes.txt']);
    expect(await box()).toMatchObject({ state: 'running', startMode: 'wake' });

    // Nobody uses it: paused after 2 s, hibernated 3 s later.
    await waitForState('paused', 30_000);
    await waitForState('hibernated', 60_000);
  });

  it('daemon kill -9 while the box is hibernated: the new daemon wakes it on the next request', async () => {
    const orphan = await standby();
    daemon.process.kill('SIGKILL');
    await daemon.exited;
    daemon = await startDaemon(dataDir, idleArgs);
    api = client(daemon.url, key);
    expect(daemon.stdout(), daemon.stderr()).toMatch(/0 boxes re-adopted, 0 failed, 1 hibernated/);
    // The dead daemon's standby clone is not a box: the new daemon killed it and removed its dir.
    expect(processesMentioning(path.join(dataDir, 'boxes', orphan))).toEqual([]);
    expect(fs.existsSync(path.join(dataDir, 'boxes', orphan))).toBe(false);
    expect(await box()).toMatchObject({ state: 'hibernated' });
    expect(await workspaceFiles()).toEqual(['notes.txt']);
    expect(await box()).toMatchObject({ state: 'running', startMode: 'wake' });
    const cat = (await (
      await api('POST', `/v1/boxes/${boxId}/exec?stream=false`, { command: 'cat notes.txt' })
    ).json()) as ExecResult;
    expect(unb64(cat.stdout)).toBe('keep me\n');
  });

  it('daemon and VM both killed (a host reboot): the box boots from its disk with its files', async () => {
    // A request makes sure it runs (the idle policy may have paused it since).
    const identity = async () =>
      unb64(
        (
          (await (
            await api('POST', `/v1/boxes/${boxId}/exec?stream=false`, {
              command: 'sync && hostname && cat /etc/hostname /etc/machine-id',
            })
          ).json()) as ExecResult
        ).stdout,
      );
    const before = await identity();
    expect(before).toMatch(new RegExp(`^${boxId}\n${boxId}\n[0-9a-f]{32}\n$`));
    const pid = (await box()).pid!;
    daemon.process.kill('SIGKILL');
    await daemon.exited;
    process.kill(pid, 'SIGKILL');
    daemon = await startDaemon(dataDir, idleArgs);
    api = client(daemon.url, key);
    expect(daemon.stdout(), daemon.stderr()).toMatch(/0 boxes re-adopted, 0 failed, 1 hibernated/);
    expect(await workspaceFiles()).toEqual(['notes.txt']);
    expect(await box()).toMatchObject({ state: 'running', startMode: 'disk' });
    // The same machine: its name and machine-id, from its disk and the daemon, not the image's.
    expect(await identity()).toBe(before);
    const again = await api('POST', '/create_microvm', { user_id: USER, runtime: 'bash' });
    expect(await again.json()).toMatchObject({ status: 'exists' });
  });
});
