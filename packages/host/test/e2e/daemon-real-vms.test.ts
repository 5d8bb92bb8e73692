import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Box, ExecEvent, ExecResult } from '@agentbox/protocol';
import { client, leftoversIn, startDaemon, stopDaemonClean, type Daemon } from '../helpers/daemon.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const NO_IDLE = ['--idle-pause-seconds', '0'];
const unb64 = (s: string) => Buffer.from(s, 'base64').toString();

/**
 * The daemon as a user runs it (`agentbox serve`, real QEMU VMs under TCG): the seed curl flow, the
 * /v1 flow, then `kill -9` of the daemon with 3 boxes running (one of whose VMs dies meanwhile), a
 * restart that re-adopts the live ones and fails the dead one, and nothing left behind at the end.
 * Three boots in all.
 */
describe('agentbox serve with real VMs', () => {
  let dataDir: string;
  let daemon: Daemon;
  let key: string;
  let api: ReturnType<typeof client>;
  let seedBox: string;
  let v1Box: string;
  let doomedBox: string;

  beforeAll(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-daemon-e2e-'));
    // Boxes stay running however long the suite takes (idle pause is tested apart).
    daemon = await startDaemon(dataDir, NO_IDLE);
    expect(daemon.initialKey).toMatch(/^abk_/);
    key = daemon.initialKey!;
    api = client(daemon.url, key);
  });

  afterAll(async () => {
    // Whatever happened above: delete every box through the API, stop the daemon, check for orphans.
    await stopDaemonClean(daemon, api, dataDir);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('seed curl flow: health, create, list files, download, processes, status', async () => {
    const health = await fetch(`${daemon.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok' });
    expect((await fetch(`${daemon.url}/status`)).status).toBe(401);

    const created = await api('POST', '/create_microvm', {
      user_id: 'test-claude-1',
      runtime: 'claude-agent',
      env_vars: { ANTHROPIC_API_KEY: 'sk-test-value', APP_MODE: 'seed-test' },
    });
    expect(created.status).toBe(200);
    const body = (await created.json()) as { status: string; vm_ip: null; pid: number };
    expect(body).toEqual({ status: 'created', vm_ip: null, pid: expect.any(Number) });
    const again = await api('POST', '/create_microvm', { user_id: 'test-claude-1', runtime: 'claude-agent' });
    expect(await again.json()).toEqual({ ...body, status: 'exists' });

    const status = (await (await api('GET', '/status')).json()) as {
      microvms: Record<string, { box_id: string; alive: boolean; pid: number }>;
    };
    expect(status.microvms['test-claude-1']).toMatchObject({ alive: true, pid: body.pid });
    seedBox = status.microvms['test-claude-1']!.box_id;

    // The workspace exists and the env vars reach commands; put a file there as an agent would.
    const made = await api('POST', `/v1/boxes/${seedBox}/exec?stream=false`, {
      command:
        'pwd; printf "print(\\"hello\\")\\n" > hello.py; mkdir -p out/node_modules; echo 1 > out/r.txt; echo $APP_MODE; echo $ANTHROPIC_API_KEY',
    });
    const result = (await made.json()) as ExecResult;
    // A credential among env_vars stays on the host: the box sees its placeholder.
    expect(unb64(result.stdout)).toMatch(/^\/workspace\nseed-test\nagentbox-ph-[0-9a-f]{32}\n$/);

    const files = await api('GET', '/list_workspace_files?user_id=test-claude-1');
    expect(await files.json()).toEqual({ files: ['hello.py', 'out/r.txt'] });
    const download = await api('GET', '/download_file?user_id=test-claude-1&filename=hello.py');
    expect(download.status).toBe(200);
    expect(await download.text()).toBe('print("hello")\n');
    const traversal = await api('GET', '/download_file?user_id=test-claude-1&filename=../etc/passwd');
    expect(traversal.status).toBe(400);
    expect(await traversal.json()).toMatchObject({ error: { code: 'path_outside_workspace' } });

    const processes = (await (await api('GET', '/list_processes?user_id=test-claude-1')).json()) as {
      processes: { pid: number; cmd: string; args: string[] }[];
    };
    expect(processes.processes.some((p) => p.pid === 1)).toBe(true);
  });

  it('/v1 flow: create, exec (streamed and collected), write and read a file', async () => {
    const created = await api('POST', '/v1/boxes', { memoryMib: 512, labels: { suite: 'e2e' } });
    expect(created.status).toBe(201);
    const box = (await created.json()) as Box;
    expect(box).toMatchObject({ state: 'running', memoryMib: 512, labels: { suite: 'e2e' } });
    v1Box = box.id;

    const streamed = await api('POST', `/v1/boxes/${v1Box}/exec`, {
      command: 'uname -s; echo warn >&2; exit 4',
    });
    expect(streamed.headers.get('content-type')).toMatch(/ndjson/);
    const events = (await streamed.text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as ExecEvent);
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 4 });
    const out = events.flatMap((e) => (e.type === 'stdout' ? [unb64(e.data)] : [])).join('');
    expect(out).toBe('Linux\n');

    const data = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) % 256));
    const put = await api('PUT', `/v1/boxes/${v1Box}/files?path=data/blob.bin`, data);
    expect(await put.json()).toEqual({ path: '/workspace/data/blob.bin', bytes: data.length });
    const get = await api('GET', `/v1/boxes/${v1Box}/files?path=/workspace/data/blob.bin`);
    expect(Buffer.from(await get.arrayBuffer()).equals(data)).toBe(true);
    const sum = (await (
      await api('POST', `/v1/boxes/${v1Box}/exec?stream=false`, {
        argv: ['sh', '-c', 'wc -c < data/blob.bin'],
        stdin: b64(''),
      })
    ).json()) as ExecResult;
    expect(unb64(sum.stdout).trim()).toBe(String(data.length));
  });

  it('daemon kill -9 with 3 boxes running: live VMs re-adopted and usable, the dead one failed and cleaned', async () => {
    const third = (await (await api('POST', '/v1/boxes', { memoryMib: 512 })).json()) as Box;
    doomedBox = third.id;
    const running = ((await (await api('GET', '/v1/boxes')).json()) as { boxes: Box[] }).boxes;
    expect(running.map((b) => b.state)).toEqual(['running', 'running', 'running']);

    daemon.process.kill('SIGKILL');
    await daemon.exited;
    // The VMs outlive the daemon (own process group) …
    for (const box of running) expect(process.kill(box.pid!, 0)).toBe(true);
    // … one of them dies while no daemon watches, and another's QEMU is frozen (a loaded host, a
    // guest that stalls): it cannot be re-adopted until it runs again.
    process.kill(third.pid!, 'SIGKILL');
    const frozen = running.find((b) => b.id === seedBox)!.pid!;
    process.kill(frozen, 'SIGSTOP');
    let frozenCall: Promise<Response>;
    try {
      daemon = await startDaemon(dataDir, NO_IDLE, {}, { untilListening: true });
      api = client(daemon.url, key);
      // The new daemon serves meanwhile: the other box answers …
      const served = await api('POST', `/v1/boxes/${v1Box}/exec?stream=false`, { command: 'echo served' });
      expect(unb64(((await served.json()) as ExecResult).stdout)).toBe('served\n');
      // … and a call to the frozen box waits for its re-adoption instead of failing.
      frozenCall = api('POST', `/v1/boxes/${seedBox}/exec?stream=false`, { command: 'echo $APP_MODE' });
      await new Promise((r) => setTimeout(r, 500));
      expect(daemon.stdout()).toMatch(/listening on .*; re-adopting 3 boxes/);
      expect(daemon.stdout()).not.toMatch(/serving on/);
    } finally {
      process.kill(frozen, 'SIGCONT');
    }
    await daemon.serving;
    expect(daemon.initialKey).toBeUndefined();
    expect(daemon.stdout(), daemon.stdout() + daemon.stderr()).toMatch(/2 boxes re-adopted, 1 failed/);
    expect(unb64(((await (await frozenCall).json()) as ExecResult).stdout)).toBe('seed-test\n');

    const after = ((await (await api('GET', '/v1/boxes')).json()) as { boxes: Box[] }).boxes;
    const byId = new Map(after.map((b) => [b.id, b]));
    expect(byId.get(seedBox)).toMatchObject({ state: 'running' });
    expect(byId.get(v1Box)).toMatchObject({ state: 'running' });
    expect(byId.get(doomedBox)).toMatchObject({ state: 'failed', failureReason: 'the VM died', pid: null });
    expect(fs.existsSync(path.join(dataDir, 'boxes', doomedBox))).toBe(false);

    // Usable: the file written before the restart is there, env vars survived, seed calls work.
    const get = await api('GET', `/v1/boxes/${v1Box}/files?path=data/blob.bin`);
    expect((await get.arrayBuffer()).byteLength).toBe(300_000);
    const env = (await (
      await api('POST', `/v1/boxes/${seedBox}/exec?stream=false`, { command: 'echo $APP_MODE' })
    ).json()) as ExecResult;
    expect(unb64(env.stdout)).toBe('seed-test\n');
    const files = await api('GET', '/list_workspace_files?user_id=test-claude-1');
    expect(await files.json()).toEqual({ files: ['hello.py', 'out/r.txt'] });
    const exists = await api('POST', '/create_microvm', {
      user_id: 'test-claude-1',
      runtime: 'claude-agent',
    });
    expect(await exists.json()).toMatchObject({ status: 'exists' });
  });

  it('kill and maintenance leave no orphan qemu process, socket or overlay', async () => {
    const killed = await api('POST', '/kill_microvm', { user_id: 'test-claude-1' });
    expect(await killed.json()).toEqual({ status: 'killed', user_id: 'test-claude-1' });
    const deleted = await api('DELETE', `/v1/boxes/${v1Box}`);
    expect(await deleted.json()).toMatchObject({ id: v1Box, state: 'deleted' });
    const maintenance = await api('POST', '/maintenance');
    expect(maintenance.status).toBe(200);
    expect(await maintenance.json()).toEqual({ checked: 0, reaped: [] });
    // The standby clone the daemon keeps ready goes when it stops (checked in afterAll).
    expect(leftoversIn(dataDir, { exceptStandby: true })).toEqual({ processes: [], dirs: [] });
    const metrics = await (await api('GET', '/metrics')).text();
    expect(metrics).toMatch(/agentbox_boxes\{state="deleted"\} 2/);
    expect(metrics).toMatch(/agentbox_boxes\{state="failed"\} 1/);
  });
});
