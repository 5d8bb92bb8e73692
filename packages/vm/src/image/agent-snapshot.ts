import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { runCommand } from '../command.js';
import { cacheDir } from '../paths.js';
import { AGENT_NODE_FLAGS, NODE_VERSION } from './recipe.js';
import { fetchNode } from './rootfs.js';

/**
 * The guest agent's V8 startup snapshot (`node --build-snapshot`): the bundle's modules evaluated
 * once, at image build time, so a box's agent starts by deserializing a heap instead of compiling
 * and running ~0.5 MB of JavaScript (zod schemas above all) — under emulation that is ~2 s of
 * every cold boot. A snapshot only loads into the very node binary that wrote it, so it is made by
 * the guest's own node (the official x64 build the rootfs ships), run here on the host; it holds
 * no machine code, so the guest's emulated CPU does not matter (verified: built here, loaded under
 * TCG `-cpu max`).
 */

export type SnapshotResult = { built: true } | { built: false; reason: string };

/** The guest's node binary, unpacked once from the cached npm tarball. */
export async function guestNodeBinary(home: string): Promise<string> {
  const dir = path.join(cacheDir(home), 'node', `node-${NODE_VERSION}`);
  const bin = path.join(dir, 'node');
  if (fs.existsSync(bin)) return bin;
  const tgz = await fetchNode(home);
  const tmp = `${dir}.tmp-${process.pid}`;
  await fsp.rm(tmp, { recursive: true, force: true });
  await fsp.mkdir(tmp, { recursive: true });
  try {
    await runCommand('tar', ['-xzf', tgz, '-C', tmp, '--strip-components=2', 'package/bin/node']);
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.rename(tmp, dir);
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
  return bin;
}

/**
 * Writes the snapshot of `bundle` to `out` and checks that it starts (the agent answers
 * `--version` from it). On a host that cannot run the guest's node (not x64 Linux) there is none,
 * and the box starts the plain bundle.
 */
export async function buildAgentSnapshot(
  home: string,
  bundle: string,
  out: string,
  expectedVersion: string,
): Promise<SnapshotResult> {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return {
      built: false,
      reason: `this host (${process.platform}/${process.arch}) cannot run the guest's x64 node`,
    };
  }
  const node = await guestNodeBinary(home);
  // No NODE_OPTIONS and friends from this host: they would change the snapshot's flags.
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  try {
    await runCommand(node, ['--snapshot-blob', out, '--build-snapshot', bundle], {
      env,
      cwd: path.dirname(out),
    });
    // Started as init.sh starts it, so a flag the snapshot does not load with fails here.
    const { stdout } = await runCommand(
      node,
      [...AGENT_NODE_FLAGS, '--no-rehash-snapshot', '--snapshot-blob', out, '--', '--version'],
      { env },
    );
    if (stdout.trim() !== expectedVersion) {
      throw new Error(`the snapshot answered ${JSON.stringify(stdout.trim())} to --version`);
    }
    return { built: true };
  } catch (err) {
    await fsp.rm(out, { force: true });
    return { built: false, reason: (err as Error).message };
  }
}
