import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentboxClient, Sandbox } from '../../../sdk/src/index.js';
import { sharedRuntime } from '../../../../test/helpers.js';
import { DEFAULT_BOX_RESOURCES } from '../../src/index.js';
import { client, startDaemon, stopDaemonClean, type Daemon } from '../helpers/daemon.js';

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A background command in a real VM: it runs past its request, holds its box awake against the
 * idle policy, and outlives a `kill -9` of the daemon — an SDK client following its output across
 * the restart gets every line once, and the next daemon records its exit. Nothing is mocked.
 */
describe('background commands in a real box, across a daemon kill -9', () => {
  let dataDir: string;
  let daemon: Daemon;
  let port: number;
  let args: string[];
  /** The first daemon's key (the next one prints none: the store has it). */
  let key: string;

  beforeAll(async () => {
    const rt = await sharedRuntime();
    await rt.backend.ensureTemplate(rt.image, DEFAULT_BOX_RESOURCES);
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-commands-e2e-'));
    port = await freePort();
    // The same port after the restart: the SDK's follow reconnects to it.
    args = ['--port', String(port), '--idle-pause-seconds', '1'];
    daemon = await startDaemon(dataDir, args);
    key = daemon.initialKey!;
  });

  afterAll(async () => {
    if (daemon) await stopDaemonClean(daemon, client(daemon.url, key), dataDir);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('runs on past its request and the daemon, its output followed whole, its exit recorded', async () => {
    const sdk = new AgentboxClient({ url: daemon.url, apiKey: key });
    const box = await Sandbox.create({ client: sdk });
    const cmd = await box.commands.start(
      'i=0; while [ ! -e /workspace/stop ]; do i=$((i+1)); echo "tick $i"; sleep 0.2; done; echo done >&2; exit 5',
    );
    expect(cmd).toMatchObject({ state: 'running', boxId: box.id });

    // Idle pause is 1 s, but the command holds its box awake.
    await new Promise((r) => setTimeout(r, 3000));
    expect((await sdk.boxes.get(box.id)).state).toBe('running');
    const sofar = await box.commands.output(cmd.id);
    expect(sofar.exit).toBeNull();
    expect(sofar.stdout).toMatch(/^tick 1\ntick 2\n/);

    const following = box.commands.follow(cmd.id, { reconnect: { attempts: 200, delayMs: 100 } });
    daemon.process.kill('SIGKILL');
    await daemon.exited;
    daemon = await startDaemon(dataDir, args);
    const after = await box.commands.get(cmd.id);
    expect(after).toMatchObject({ state: 'running', pid: cmd.pid });

    await box.files.write('stop', 'now');
    const result = await following;
    expect(result).toMatchObject({ exitCode: 5, stderr: 'done\n' });
    const ticks = result.stdout.trimEnd().split('\n');
    expect(ticks.length).toBeGreaterThan(15);
    // Every line once, in order, none lost or repeated across the restart.
    expect(ticks).toEqual(ticks.map((_, i) => `tick ${i + 1}`));

    // The new daemon's own watch recorded the exit, and the box is let idle again.
    for (let i = 0; ; i++) {
      const c = await box.commands.get(cmd.id);
      if (c.state === 'exited') {
        expect(c).toMatchObject({ exitCode: 5, signal: null });
        break;
      }
      expect(i, 'the exit was never recorded').toBeLessThan(100);
      await new Promise((r) => setTimeout(r, 100));
    }
    for (let i = 0; (await sdk.boxes.get(box.id)).state !== 'paused'; i++) {
      expect(i, 'the box was never paused once its command ended').toBeLessThan(100);
      await new Promise((r) => setTimeout(r, 100));
    }
    await box.commands.remove(cmd.id);
    expect(await box.commands.list()).toEqual([]);

    // Read whole again and again: 150 MiB from its journal to the host. Sent as JavaScript writes
    // to the VM's port, this put the frame stream out of step about one run in two ("bad frame
    // magic"); it goes by sendfile now.
    const MiB = 1024 * 1024;
    const big = await box.commands.start(`head -c ${6 * MiB} /dev/zero | tr '\\0' y; echo END`);
    for (let i = 0; i < 25; i++) {
      const out = await box.commands.output(big.id);
      if (!out.exit) {
        i--;
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      expect(out.stdout.length, `read ${i}`).toBe(6 * MiB + 4);
      expect(out.stdout.endsWith('yyEND\n')).toBe(true);
    }

    // One reads what a client sends to its stdin, in order, until the client closes it.
    const reader = await box.commands.start('sha256sum', { stdinOpen: true });
    const input = Buffer.alloc(3 * MiB);
    for (let i = 0; i < input.length; i++) input[i] = (i * 7) % 251;
    // More than the box holds unread: sent as the command reads it.
    await box.commands.sendStdin(reader.id, input);
    await box.commands.closeStdin(reader.id);
    const digest = await box.commands.follow(reader.id);
    expect(digest.stdout).toBe(`${createHash('sha256').update(input).digest('hex')}  -\n`);

    // A chatty one keeps only its last output on the box's disk (punched out with fallocate).
    const chatty = await box.commands.start(`head -c ${6 * MiB} /dev/zero | tr '\\0' x; echo END`, {
      keepOutputBytes: MiB,
    });
    const skipped: number[] = [];
    for (let i = 0; ; i++) {
      skipped.length = 0;
      const out = await box.commands.output(chatty.id, { onSkipped: (_, offset) => skipped.push(offset) });
      // Trimmed in 1 MiB steps while it printed: read once the pass after its exit ran (≥ 3 MiB).
      if (out.exit && skipped.length > 0 && skipped[0]! >= 3 * MiB) {
        expect(out.stdout.length).toBe(6 * MiB + 4 - skipped[0]!);
        expect(out.stdout.endsWith('xxEND\n')).toBe(true);
        expect(out.stdoutOffset).toBe(6 * MiB + 4);
        break;
      }
      expect(i, 'its output was never trimmed').toBeLessThan(100);
      await new Promise((r) => setTimeout(r, 200));
    }
    // The hole is punched just after dropped.json is written: the disk blocks go a moment later.
    for (let i = 0; ; i++) {
      const du = await box.commands.run(['du', '-k', `/var/lib/agentbox/exec/${chatty.id}/stdout`]);
      if (Number(du.stdout.split(/\s/)[0]) < 3 * 1024) break;
      expect(i, `its output still takes ${du.stdout}`).toBeLessThan(50);
      await new Promise((r) => setTimeout(r, 100));
    }
  });
});
