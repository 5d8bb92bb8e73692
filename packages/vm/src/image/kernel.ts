import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import { runCommand } from '../command.js';
import { cacheDir } from '../paths.js';
import { KERNEL_CONFIG, missingOptions, requiredOptions } from './kernel-config.js';
import { KERNEL_SOURCE_PACKAGE } from './recipe.js';

/**
 * The guest kernel, built from Debian's own kernel source package (`linux-source-6.1`, the same
 * patched source as Debian's kernel images) with agentbox's configuration (kernel-config.ts):
 * everything a box needs built in, no modules, no drivers for hardware a microVM lacks. Under
 * emulation Debian's generic kernel and its modules took ~2.5 s of every cold boot; this one
 * ~0.3 s (docs/performance.md). Built once per source version + configuration (~7 min on two
 * cores) and cached under $AGENTBOX_HOME/cache/kernel.
 */

export interface KernelSource {
  package: string;
  version: string;
}

export interface BuiltKernel {
  /** The ELF vmlinux (QEMU boots it through its PVH entry). */
  vmlinux: string;
  /** `uname -r` in the box. */
  release: string;
  /** Hash of the configuration fragment it was built with. */
  configSha256: string;
}

export type KernelProgress = (message: string) => void;

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function kernelConfigKey(): string {
  return sha256(KERNEL_CONFIG).slice(0, 16);
}

/** What apt's candidate version depends on: its package lists and its configuration. */
export const APT_STATE_PATHS = [
  '/var/lib/apt/lists',
  '/etc/apt/sources.list',
  '/etc/apt/sources.list.d',
  '/etc/apt/preferences',
  '/etc/apt/preferences.d',
];

/** The mtimes of `paths` (an `apt-get update` renames new lists into their dir): changes when they do. */
export function aptStateStamp(paths: readonly string[] = APT_STATE_PATHS): string {
  return paths
    .map((p) => {
      try {
        return `${p}@${fs.statSync(p).mtimeMs}`;
      } catch {
        return `${p}@-`;
      }
    })
    .join('|');
}

/** The version apt would fetch of the kernel source package (after an `apt-get update` if unknown). */
async function aptCandidate(): Promise<string> {
  const candidate = async () =>
    /Candidate: (\S+)/.exec((await runCommand('apt-cache', ['policy', KERNEL_SOURCE_PACKAGE])).stdout)?.[1];
  let version = await candidate().catch(() => undefined);
  if (!version || version === '(none)') {
    await runCommand('apt-get', ['update', '-qq']);
    version = await candidate();
  }
  if (!version || version === '(none)')
    throw new AgentboxError(
      'prerequisite_missing',
      `apt knows no ${KERNEL_SOURCE_PACKAGE}; agentbox builds its kernel from it (Debian 12's main archive has it)`,
    );
  return version;
}

/**
 * The kernel source an image is built from. Every `agentbox run`, `serve` or `bench` asks (an
 * image's id includes it), and `apt-cache policy` costs ~0.6 s: the answer is kept under
 * `home`'s cache until apt's lists or configuration change.
 */
export async function resolveKernelSource(
  home?: string,
  options: { query?: () => Promise<string>; aptPaths?: readonly string[] } = {},
): Promise<KernelSource> {
  const query = options.query ?? aptCandidate;
  const cacheFile = home ? path.join(cacheDir(home), 'kernel-source.json') : undefined;
  // Taken before asking: lists that change meanwhile make the next call ask again.
  const stamp = aptStateStamp(options.aptPaths);
  if (cacheFile) {
    try {
      const cached = JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as { stamp?: unknown; version?: unknown };
      if (cached.stamp === stamp && typeof cached.version === 'string' && cached.version)
        return { package: KERNEL_SOURCE_PACKAGE, version: cached.version };
    } catch {
      // none yet, or unreadable: ask apt
    }
  }
  const version = await query();
  if (cacheFile) {
    try {
      fs.mkdirSync(path.dirname(cacheFile), { recursive: true });
      const tmp = `${cacheFile}.${process.pid}`;
      fs.writeFileSync(tmp, JSON.stringify({ stamp, version }) + '\n');
      fs.renameSync(tmp, cacheFile);
    } catch {
      // a cache only
    }
  }
  return { package: KERNEL_SOURCE_PACKAGE, version };
}

function kernelDir(home: string, source: KernelSource): string {
  return path.join(
    cacheDir(home),
    'kernel',
    `${source.package}_${source.version}_${kernelConfigKey()}`.replace(/[^\w.+-]/g, '_'),
  );
}

/** The cached kernel for this source and configuration, if it was built. */
export function cachedKernel(home: string, source: KernelSource): BuiltKernel | undefined {
  const dir = kernelDir(home, source);
  try {
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'kernel.json'), 'utf8')) as { release: string };
    const vmlinux = path.join(dir, 'vmlinux');
    if (fs.existsSync(vmlinux))
      return { vmlinux, release: meta.release, configSha256: sha256(KERNEL_CONFIG) };
  } catch {
    // not built (or half-built by a process that died)
  }
  return undefined;
}

/** Builds (or finds) the kernel; the source tree is removed afterwards, only vmlinux is kept. */
export async function buildKernel(
  home: string,
  source: KernelSource,
  onProgress: KernelProgress = () => undefined,
): Promise<BuiltKernel> {
  const found = cachedKernel(home, source);
  if (found) return found;
  const dir = kernelDir(home, source);
  const work = `${dir}.tmp-${process.pid}`;
  await fsp.rm(work, { recursive: true, force: true });
  await fsp.mkdir(work, { recursive: true });
  try {
    onProgress(`fetching ${source.package} ${source.version}`);
    await runCommand('apt-get', ['download', `${source.package}=${source.version}`], { cwd: work });
    const deb = (await fsp.readdir(work)).find((f) => f.endsWith('.deb'));
    if (!deb) throw new AgentboxError('internal', `apt-get download ${source.package} produced no .deb`);
    await runCommand('dpkg-deb', ['-x', path.join(work, deb), path.join(work, 'deb')]);
    await fsp.rm(path.join(work, deb));
    const tarball = (await fsp.readdir(path.join(work, 'deb/usr/src'))).find((f) => /\.tar\.xz$/.test(f));
    if (!tarball) throw new AgentboxError('internal', `${source.package} holds no source tarball`);
    onProgress('unpacking the kernel source');
    await runCommand('tar', ['-xJf', path.join(work, 'deb/usr/src', tarball), '-C', work]);
    await fsp.rm(path.join(work, 'deb'), { recursive: true, force: true });
    const tree = path.join(work, tarball.replace(/\.tar\.xz$/, ''));

    const fragment = path.join(work, 'agentbox.config');
    await fsp.writeFile(fragment, KERNEL_CONFIG);
    await runCommand('make', ['-C', tree, 'tinyconfig'], { env: buildEnv() });
    await runCommand(
      'sh',
      ['-c', `cd "${tree}" && scripts/kconfig/merge_config.sh -m .config "${fragment}"`],
      {
        env: buildEnv(),
      },
    );
    await runCommand('make', ['-C', tree, 'olddefconfig'], { env: buildEnv() });
    const missing = missingOptions(
      await fsp.readFile(path.join(tree, '.config'), 'utf8'),
      requiredOptions(KERNEL_CONFIG),
    );
    if (missing.length > 0) {
      throw new AgentboxError(
        'internal',
        `the kernel configuration did not take: ${missing.join(', ')} (a dependency is missing in kernel-config.ts)`,
      );
    }

    const jobs = os.availableParallelism() + 1;
    let compiled = 0;
    let lastReport = 0;
    await runCommand('make', ['-C', tree, `-j${jobs}`, 'vmlinux'], {
      env: buildEnv(),
      onLine: (line) => {
        if (!/^\s+CC\s/.test(line)) return;
        compiled += 1;
        if (performance.now() - lastReport > 2000) {
          lastReport = performance.now();
          onProgress(`compiling the kernel: ${compiled} files (about 1,100 in all)`);
        }
      },
    });
    const release = (
      await runCommand('make', ['-s', '-C', tree, 'kernelrelease'], { env: buildEnv() })
    ).stdout.trim();
    await fsp.copyFile(path.join(tree, 'vmlinux'), path.join(work, 'vmlinux'));
    await fsp.copyFile(path.join(tree, '.config'), path.join(work, 'config'));
    await fsp.rm(tree, { recursive: true, force: true });
    await fsp.writeFile(
      path.join(work, 'kernel.json'),
      JSON.stringify({ ...source, release }, null, 2) + '\n',
    );
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.rename(work, dir);
    return { vmlinux: path.join(dir, 'vmlinux'), release, configSha256: sha256(KERNEL_CONFIG) };
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

/** A reproducible build: no host-specific make or compiler settings leak in. */
function buildEnv(): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    LANG: 'C.UTF-8',
    KBUILD_BUILD_USER: 'agentbox',
    KBUILD_BUILD_HOST: 'agentbox',
    KBUILD_BUILD_TIMESTAMP: '1970-01-01',
  };
}
