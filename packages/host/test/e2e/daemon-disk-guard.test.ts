import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Box, ExecResult } from '@agentbox/protocol';
import { sharedRuntime } from '../../../../test/helpers.js';
import { DEFAULT_BOX_RESOURCES } from '../../src/index.js';
import { client, startDaemon, stopDaemonClean, type Daemon } from '../helpers/daemon.js';

const MIB = 1024 ** 2;
const WRITE_BYTES = 800_000_000;

/**
 * The host's disk reserve held against a real box: the daemon's data dir is a 2 GiB tmpfs with a
 * 1 GiB reserve, a host file leaves ~200 MiB above it, and the box writes 800 MB (more than it can
 * write in the guard's 1 s between passes; on a fast host 400 MB were once all written first). The
 * box is paused as it passes the reserve, requests to it are refused with the reason, and once the
 * host file is deleted it runs on by itself: its write completes whole.
 */
describe('agentbox serve: the disk guard against a box filling the host', () => {
  let dataDir: string;
  let daemon: Daemon;
  let api: ReturnType<typeof client>;

  const freeBytes = () => fs.statfsSync(dataDir).bavail * fs.statfsSync(dataDir).bsize;

  beforeAll(async () => {
    const rt = await sharedRuntime();
    await rt.backend.ensureTemplate(rt.image, DEFAULT_BOX_RESOURCES);
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-disk-guard-e2e-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2g', 'tmpfs', dataDir]);
    daemon = await startDaemon(dataDir, ['--min-free-disk-gib', '1', '--no-standby']);
    api = client(daemon.url, daemon.initialKey!);
  });

  afterAll(async () => {
    await stopDaemonClean(daemon, api, dataDir);
    execFileSync('umount', [dataDir]);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('pauses the writing box at the reserve, refuses its requests, and lets it finish once space is freed', async () => {
    const created = await api('POST', '/v1/boxes', {});
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as Box;
    const state = async () => ((await (await api('GET', `/v1/boxes/${id}`)).json()) as Box).state;

    const filler = path.join(dataDir, 'host-file');
    const fillerBytes = freeBytes() - 1024 * MIB - 200 * MIB;
    execFileSync('fallocate', ['-l', String(fillerBytes), filler]);
    const write = api('POST', `/v1/boxes/${id}/exec?stream=false`, {
      command: `head -c ${WRITE_BYTES} /dev/zero > big && sync && stat -c %s big`,
      timeoutMs: 600_000,
    });

    for (const deadline = Date.now() + 120_000; (await state()) !== 'paused';) {
      if (Date.now() > deadline) throw new Error(`the box never paused; ${freeBytes() / MIB} MiB free`);
      await new Promise((r) => setTimeout(r, 250));
    }
    // Paused short of the reserve's end: the host keeps what it needs (its store, snapshots).
    expect(freeBytes()).toBeGreaterThan(512 * MIB);
    const refused = await api('POST', `/v1/boxes/${id}/exec?stream=false`, { command: 'true' });
    expect(refused.status).toBe(429);
    const body = (await refused.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('capacity_exhausted');
    expect(body.error.message).toContain('short of disk space');
    const early = await Promise.race([
      write.then(() => 'answered'),
      new Promise((r) => setTimeout(r, 2_000)),
    ]);
    expect(early).toBeUndefined();

    fs.rmSync(filler);
    const result = (await (await write).json()) as ExecResult;
    expect([result.exitCode, Buffer.from(result.stdout, 'base64').toString()]).toEqual([
      0,
      `${WRITE_BYTES}\n`,
    ]);
    expect(await state()).toBe('running');
  });
});
