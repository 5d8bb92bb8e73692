import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leftoversIn, startDaemon, type Daemon } from '../../../host/test/helpers/daemon.js';
import {
  AgentboxClient,
  BoxNotFoundError,
  CapacityExhaustedError,
  ForbiddenError,
  InvalidStateError,
  PathOutsideWorkspaceError,
  RouteNotFoundError,
  Sandbox,
} from '../../src/index.js';
import type { TaskEvent } from '../../src/index.js';

/**
 * The SDK against `agentbox serve` with real QEMU VMs (TCG): one box, booted once, driven through
 * every part of the SDK; deleted at the end, and the daemon must leave nothing behind.
 */
describe('@agentbox/sdk against a real daemon', () => {
  let dataDir: string;
  let daemon: Daemon;
  let client: AgentboxClient;
  let box: Sandbox;

  beforeAll(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-sdk-e2e-'));
    daemon = await startDaemon(dataDir);
    expect(daemon.initialKey).toMatch(/^abk_/);
    client = new AgentboxClient({ url: daemon.url, apiKey: daemon.initialKey! });
    box = await Sandbox.create({ client, memoryMib: 512, labels: { suite: 'sdk-e2e' } });
  });

  afterAll(async () => {
    // Whatever happened above: delete every box through the SDK, stop the daemon, check for orphans.
    const boxes = await client?.boxes.list().catch(() => []);
    for (const b of boxes ?? []) await (await client.boxes.connect(b.id)).kill().catch(() => undefined);
    if (daemon) {
      daemon.process.kill('SIGTERM');
      expect(await daemon.exited).toBe(0);
      expect(leftoversIn(dataDir)).toEqual({ processes: [], dirs: [] });
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('boots a running box that connect and list find', async () => {
    expect(box.info).toMatchObject({ state: 'running', memoryMib: 512, labels: { suite: 'sdk-e2e' } });
    expect((await Sandbox.connect(box.id, { client })).id).toBe(box.id);
    expect((await Sandbox.list({ client })).map((b) => b.id)).toEqual([box.id]);
  });

  it('runs a command in the VM with its output streamed as it happens', async () => {
    const chunks: { at: number; text: string }[] = [];
    const started = Date.now();
    const result = await box.commands.run(
      'for i in 1 2 3; do echo line $i; sleep 0.5; done; uname -s; echo warn >&2; exit 2',
      { onStdout: (text) => chunks.push({ at: Date.now() - started, text }) },
    );
    expect(result).toMatchObject({
      exitCode: 2,
      timedOut: false,
      stdout: 'line 1\nline 2\nline 3\nLinux\n',
      stderr: 'warn\n',
    });
    // The first line arrived well before the command ended.
    expect(chunks.length).toBeGreaterThanOrEqual(3);
    expect(chunks[0]!.text).toBe('line 1\n');
    expect(chunks.at(-1)!.at - chunks[0]!.at).toBeGreaterThanOrEqual(900);
    const argv = await box.commands.run(['cat'], { stdin: 'through stdin', cwd: '/tmp' });
    expect(argv.stdout).toBe('through stdin');
  });

  it('files: a binary round trip, listing, removal, and `..` refused', async () => {
    const data = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) % 256));
    expect(await box.files.write('sdk/blob.bin', data)).toEqual({
      path: '/workspace/sdk/blob.bin',
      bytes: data.length,
    });
    expect((await box.files.read('/workspace/sdk/blob.bin')).equals(data)).toBe(true);
    const sum = await box.commands.run('sha256sum sdk/blob.bin | cut -d" " -f1');
    const { createHash } = await import('node:crypto');
    expect(sum.stdout.trim()).toBe(createHash('sha256').update(data).digest('hex'));
    expect((await box.files.list('sdk')).map((e) => [e.name, e.size])).toEqual([['blob.bin', data.length]]);
    await box.files.remove('sdk');
    expect(await box.files.exists('sdk/blob.bin')).toBe(false);
    await expect(box.files.read('../etc/passwd')).rejects.toBeInstanceOf(PathOutsideWorkspaceError);
  });

  it('processes: lists the VM’s processes and kills one', async () => {
    let onStart!: (pid: number) => void;
    const started = new Promise<number>((resolve) => (onStart = resolve));
    const sleeper = box.commands.run(['sleep', '120'], { onStart });
    const pid = await started;
    const list = await box.processes.list();
    expect(list.some((p) => p.pid === 1)).toBe(true);
    expect(list.find((p) => p.pid === pid)?.command).toMatch(/sleep 120/);
    await box.processes.kill(pid);
    expect(await sleeper).toMatchObject({ exitCode: null, signal: 'SIGKILL' });
  });

  it('a shell task through box.tasks.run: events streamed in order, result stored', async () => {
    const run = await box.tasks.run({
      agent: 'shell',
      prompt: 'cat task-input.txt; for i in 1 2 3; do echo step $i; sleep 0.3; done',
      files: { 'task-input.txt': 'given by the spec\n' },
    });
    const events: TaskEvent[] = [];
    for await (const event of run) events.push(event);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(events.filter((e) => e.type === 'text').map((e) => e.content)).toEqual([
      'given by the spec',
      'step 1',
      'step 2',
      'step 3',
    ]);
    expect(events.at(-1)!.type).toBe('completion');
    expect(await run.result()).toMatchObject({ state: 'succeeded', boxId: box.id, result: { exitCode: 0 } });
  });

  it('pause and resume, hibernate and wake: the box keeps its files and runs commands after', async (ctx) => {
    await box.files.write('kept.txt', 'still here\n');
    const paused = await box.pause().catch((err: unknown) => err);
    if (paused instanceof RouteNotFoundError) ctx.skip();
    expect(paused).toMatchObject({ state: 'paused' });
    expect((await box.resume()).state).toBe('running');
    expect((await box.commands.run('cat kept.txt')).stdout).toBe('still here\n');

    expect(await box.hibernate()).toMatchObject({ state: 'hibernated', pid: null });
    // The next request wakes it from its snapshot.
    expect((await box.commands.run('cat kept.txt')).stdout).toBe('still here\n');
    expect(await box.refresh()).toMatchObject({ state: 'running', startMode: 'wake' });
  });

  it("a user key's memory and disk caps hold across its live boxes", async () => {
    const made = await client.keys.create({ name: 'sized', grants: { maxMemoryMib: 768, maxDiskGib: 8 } });
    const tenant = new AgentboxClient({ url: daemon.url, apiKey: made.key });
    const first = await Sandbox.create({ client: tenant, memoryMib: 512, diskGib: 4 });
    try {
      expect((await first.commands.run('echo up')).stdout).toBe('up\n');
      const second = Sandbox.create({ client: tenant, memoryMib: 512, diskGib: 4 });
      await expect(second).rejects.toBeInstanceOf(CapacityExhaustedError);
      await expect(second).rejects.toMatchObject({
        details: { scope: 'key', resource: 'memoryMib', limit: 768, held: 512, asked: 512 },
      });
      await expect(Sandbox.create({ client: tenant, memoryMib: 256, diskGib: 16 })).rejects.toBeInstanceOf(
        ForbiddenError,
      );
      // Nothing was half made: the key holds its one box.
      expect((await Sandbox.list({ client: tenant })).map((b) => b.id)).toEqual([first.id]);
    } finally {
      await first.kill();
    }
  });

  it('kill deletes the box; the SDK reports the states as typed errors after', async () => {
    expect((await box.kill()).state).toBe('deleted');
    await expect(box.commands.run('true')).rejects.toBeInstanceOf(InvalidStateError);
    await expect(Sandbox.connect('box-0000000000', { client })).rejects.toBeInstanceOf(BoxNotFoundError);
    expect(await Sandbox.list({ client })).toEqual([]);
  });
});
