import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Box, ExecResult } from '@agentbox/protocol';
import { availableMemoryBytes, VM_OOM_SCORE_ADJ } from '@agentbox/vm';
import { sharedRuntime } from '../../../../test/helpers.js';
import { DEFAULT_BOX_RESOURCES } from '../../src/index.js';
import { client, startDaemon, stopDaemonClean, type Daemon } from '../helpers/daemon.js';

const MIB = 1024 ** 2;
/** What other tests running beside this one may take of the host's memory while it runs. */
const HEADROOM = 4096 * MIB;

/**
 * The host's memory reserve held against real boxes and real memory pressure: the daemon keeps
 * free what the host has now less 4 GiB, and a tmpfs file takes the host below that. No box is
 * made meanwhile; the idle box is hibernated (its VM process ended, its memory freed); once the
 * file is gone, its next request wakes it with its files.
 */
describe('agentbox serve: the memory guard against a host short of memory', () => {
  let dataDir: string;
  let fillDir: string;
  let daemon: Daemon;
  let api: ReturnType<typeof client>;
  let reserveBytes: number;
  let mounted = false;

  beforeAll(async () => {
    const rt = await sharedRuntime();
    await rt.backend.ensureTemplate(rt.image, DEFAULT_BOX_RESOURCES);
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-memory-guard-e2e-'));
    fillDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-memory-fill-'));
    reserveBytes = availableMemoryBytes()! - HEADROOM;
    const reserveMib = Math.floor(reserveBytes / MIB);
    daemon = await startDaemon(dataDir, [
      '--min-free-memory-mib',
      String(reserveMib),
      '--idle-pause-seconds',
      '1',
      '--no-standby',
    ]);
    api = client(daemon.url, daemon.initialKey!);
  });

  afterAll(async () => {
    if (mounted) execFileSync('umount', [fillDir]);
    fs.rmSync(fillDir, { recursive: true, force: true });
    await stopDaemonClean(daemon, api, dataDir);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const boxOf = async (id: string) => (await (await api('GET', `/v1/boxes/${id}`)).json()) as Box;

  async function until(what: string, check: () => Promise<boolean>, ms = 60_000): Promise<void> {
    for (const end = Date.now() + ms; !(await check()); await new Promise((r) => setTimeout(r, 250)))
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
  }

  it('refuses creates and hibernates the idle box while the host is short; the box wakes with its files after', async () => {
    const created = await api('POST', '/v1/boxes', {});
    expect(created.status).toBe(201);
    const { id, pid } = (await created.json()) as Box;
    // Should the host run out all the same, the kernel ends a box first.
    expect(fs.readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim()).toBe(String(VM_OOM_SCORE_ADJ));
    const wrote = await api('POST', `/v1/boxes/${id}/exec?stream=false`, {
      command: 'echo kept > /workspace/kept.txt && sync',
    });
    expect(wrote.status).toBe(200);
    await until('the idle box to pause', async () => (await boxOf(id)).state === 'paused');

    // Take the host 512 MiB below the reserve with memory nothing can reclaim (tmpfs pages).
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${HEADROOM * 2}`, 'tmpfs', fillDir]);
    mounted = true;
    const fillBytes = availableMemoryBytes()! - reserveBytes + 512 * MIB;
    execFileSync('fallocate', ['-l', String(fillBytes), path.join(fillDir, 'filler')]);
    expect(availableMemoryBytes()!).toBeLessThan(reserveBytes);

    const refused = await api('POST', '/v1/boxes', {});
    expect(refused.status).toBe(429);
    const body = (await refused.json()) as { error: { code: string; details: object } };
    expect(body.error).toMatchObject({
      code: 'capacity_exhausted',
      details: { resource: 'memory', minAvailableBytes: Math.floor(reserveBytes / MIB) * MIB },
    });
    await until('the idle box to hibernate', async () => {
      const box = await boxOf(id);
      return box.state === 'hibernated' && box.pid === null;
    });
    expect(fs.existsSync(`/proc/${pid}`)).toBe(false);

    execFileSync('umount', [fillDir]);
    mounted = false;
    const read = await api('POST', `/v1/boxes/${id}/exec?stream=false`, {
      command: 'cat /workspace/kept.txt',
    });
    const result = (await read.json()) as ExecResult;
    expect([result.exitCode, Buffer.from(result.stdout, 'base64').toString()]).toEqual([0, 'kept\n']);
    expect(await boxOf(id)).toMatchObject({ state: 'running', startMode: 'wake' });
    expect((await api('POST', '/v1/boxes', {})).status).toBe(201);
  });
});
