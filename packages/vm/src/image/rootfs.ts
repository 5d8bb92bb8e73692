import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import { runCommand } from '../command.js';
import { cacheDir } from '../paths.js';
import { agentsKey, agentsLayerPath, buildAgentsLayer } from './agents.js';
import {
  AGENT_CLIS,
  DEBIAN_SUITE,
  DPKG_EXCLUDES,
  IMAGE_BUILDER_REVISION,
  NODE_NPM_PACKAGE,
  NODE_VERSION,
  NPM_VERSION,
  ROOTFS_HOOKS,
  ROOTFS_PACKAGES,
  type AgentCli,
} from './recipe.js';

/**
 * The rootfs is built in cached layers, so a different agent set or agent version does not run
 * mmdebstrap again: the Debian base (a tar), the agent CLIs (a tar, see agents.ts), and the ext4
 * image made from both.
 */

function sha256(data: string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Key of the Debian base layer: packages, hooks and node, nothing about the agents. */
export function baseKey(): string {
  return sha256(
    JSON.stringify({
      DEBIAN_SUITE,
      ROOTFS_PACKAGES,
      DPKG_EXCLUDES,
      ROOTFS_HOOKS,
      NODE_NPM_PACKAGE,
      NODE_VERSION,
      NPM_VERSION,
    }),
  ).slice(0, 24);
}

/** Key of the rootfs image: its two layers and how they are put together. */
export function rootfsKey(agents: readonly AgentCli[]): string {
  return sha256(JSON.stringify({ IMAGE_BUILDER_REVISION, base: baseKey(), agents: agentsKey(agents) })).slice(
    0,
    24,
  );
}

/** Where the Debian base layer is cached (the same for every agent set). */
export function baseLayerPath(home: string): string {
  return path.join(cacheDir(home), 'rootfs', `base-${baseKey()}.tar`);
}

/** Where the rootfs image and its two layers are cached for this agent set. */
export function rootfsCachePaths(
  home: string,
  agents: readonly AgentCli[],
): { image: string; base: string; agents: string } {
  return {
    image: path.join(cacheDir(home), 'rootfs', `${rootfsKey(agents)}.img`),
    base: baseLayerPath(home),
    agents: agentsLayerPath(home, agents),
  };
}

/** The first `deb` URI in the host's apt sources, so the rootfs comes from the mirror apt already uses. */
export function hostMirror(): string {
  const candidates = ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list'];
  for (const file of candidates) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    const deb822 = /^URIs:\s*(\S+)/m.exec(text)?.[1];
    if (deb822 && !/security/.test(deb822)) return deb822;
    const classic = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+/m.exec(text)?.[1];
    if (classic) return classic;
  }
  return 'http://deb.debian.org/debian';
}

/** The npm tarball of `name@version` (`npm pack`), cached by version. */
async function fetchPackage(home: string, name: string, version: string): Promise<string> {
  const dir = path.join(cacheDir(home), 'node');
  const tgz = path.join(dir, `${name}-${version}.tgz`);
  if (fs.existsSync(tgz)) return tgz;
  await fsp.mkdir(dir, { recursive: true });
  await runCommand('npm', ['pack', '--silent', `${name}@${version}`, '--pack-destination', dir]);
  if (!fs.existsSync(tgz))
    throw new AgentboxError('internal', `npm pack ${name}@${version} produced no ${tgz}`);
  return tgz;
}

/** The npm tarball of the guest's node, cached by version. */
export function fetchNode(home: string): Promise<string> {
  return fetchPackage(home, NODE_NPM_PACKAGE, NODE_VERSION);
}

/** The Debian base (mmdebstrap + hooks) as a tar, cached by `baseKey`. */
async function buildBaseLayer(home: string, onLine: (line: string) => void): Promise<string> {
  const out = baseLayerPath(home);
  if (fs.existsSync(out)) return out;
  await fsp.mkdir(path.dirname(out), { recursive: true });
  const nodeTgz = await fetchNode(home);
  const npmTgz = await fetchPackage(home, 'npm', NPM_VERSION);
  const tmp = `${out}.tmp-${process.pid}`;
  const mirror = hostMirror();
  try {
    await runCommand(
      'mmdebstrap',
      [
        '--variant=minbase',
        '--mode=root',
        '--format=tar',
        `--include=${ROOTFS_PACKAGES.join(',')}`,
        ...DPKG_EXCLUDES.map((p) => `--dpkgopt=path-exclude=${p}`),
        ...ROOTFS_HOOKS.map((hook) => `--customize-hook=${hook}`),
        DEBIAN_SUITE,
        tmp,
        `deb ${mirror} ${DEBIAN_SUITE} main`,
        `deb ${mirror} ${DEBIAN_SUITE}-updates main`,
      ],
      { onLine, env: { ...process.env, AGENTBOX_NODE_TGZ: nodeTgz, AGENTBOX_NPM_TGZ: npmTgz } },
    );
    await fsp.rename(tmp, out);
    return out;
  } finally {
    await fsp.rm(tmp, { force: true });
  }
}

export interface RootfsProgress {
  layer: 'base' | 'agents' | 'filesystem';
  message: string;
}

/**
 * The ext4 root filesystem for this agent set, cached by `rootfsKey`: the Debian base and the
 * agents layer (built side by side when missing) unpacked into one tree, then `mkfs.ext4 -d`.
 */
export async function buildRootfs(
  home: string,
  agents: readonly AgentCli[],
  onProgress: (progress: RootfsProgress) => void,
): Promise<string> {
  const cached = rootfsCachePaths(home, agents);
  const out = cached.image;
  if (fs.existsSync(out)) return out;
  await fsp.mkdir(path.dirname(out), { recursive: true });
  const names = agents.map((a) => `${a} ${AGENT_CLIS[a].version}`).join(', ');
  if (!fs.existsSync(cached.base))
    onProgress({ layer: 'base', message: 'building the Debian rootfs (mmdebstrap, a few minutes)' });
  if (agents.length > 0 && !fs.existsSync(cached.agents))
    onProgress({ layer: 'agents', message: `installing ${names} from npm` });
  const [baseTar, agentsTar] = await Promise.all([
    buildBaseLayer(home, (line) => {
      if (/^I: /.test(line)) onProgress({ layer: 'base', message: line.slice(3) });
    }),
    buildAgentsLayer(home, agents),
  ]);

  const tree = `${out}.tree-${process.pid}`;
  const tmpImg = `${out}.tmp-${process.pid}`;
  await fsp.rm(tree, { recursive: true, force: true });
  await fsp.mkdir(tree);
  try {
    onProgress({ layer: 'filesystem', message: 'writing the ext4 root filesystem' });
    await runCommand('tar', ['-C', tree, '--numeric-owner', '-xpf', baseTar]);
    // --no-overwrite-dir: the layer's directories (etc, root, usr/local, …) keep the base's modes.
    await runCommand('tar', ['-C', tree, '--numeric-owner', '--no-overwrite-dir', '-xpf', agentsTar]);
    const { stdout } = await runCommand('du', ['-sk', tree]);
    const usedMiB = Number(stdout.split('\t')[0]) / 1024;
    // ext4 metadata and journal plus room for the first writes; each box's disk grows past this
    // (resize2fs at boot) into its own overlay.
    const sizeMiB = Math.ceil(usedMiB * 1.08) + 192;
    await runCommand('mkfs.ext4', [
      '-F',
      '-q',
      '-L',
      'root',
      '-E',
      'root_owner=0:0',
      '-d',
      tree,
      tmpImg,
      `${sizeMiB}M`,
    ]);
    await fsp.rename(tmpImg, out);
    return out;
  } finally {
    await fsp.rm(tree, { recursive: true, force: true });
    await fsp.rm(tmpImg, { force: true });
  }
}

/** Package → version of what the rootfs holds (Debian packages, read from the image without mounting it). */
export async function readComponents(rootfsImg: string): Promise<Record<string, string>> {
  const { stdout } = await runCommand('debugfs', ['-R', 'cat /etc/agentbox-packages', rootfsImg]);
  const components: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const [name, version] = line.split('\t');
    if (name && version) components[name] = version;
  }
  return components;
}
