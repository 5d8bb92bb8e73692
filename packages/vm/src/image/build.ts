import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { AgentboxError, IMAGE_API_VERSION } from '@agentbox/protocol';
import { runCommand } from '../command.js';
import { imagesDir } from '../paths.js';
import { agentVersions, parseAgentClis } from './agents.js';
import { loadImage, type Image, type ImageManifest } from './manifest.js';
import {
  DEBIAN_SUITE,
  DEFAULT_AGENT_CLIS,
  GUEST_INIT,
  IMAGE_BUILDER_REVISION,
  INITRAMFS_INIT,
  KERNEL_SOURCE_PACKAGE,
  NODE_VERSION,
  NPM_VERSION,
  ROOTFS_PACKAGES,
  type AgentCli,
} from './recipe.js';
import {
  buildKernel,
  cachedKernel,
  kernelConfigKey,
  resolveKernelSource,
  type KernelSource,
} from './kernel.js';
import { buildRootfs, readComponents, rootfsCachePaths, rootfsKey } from './rootfs.js';
import { buildAgentSnapshot, type SnapshotResult } from './agent-snapshot.js';

export interface BuildProgress {
  step: 'resolve' | 'kernel' | 'rootfs' | 'agents' | 'filesystem' | 'initramfs' | 'assemble' | 'done';
  /** 1-based index of the step among `total`. */
  index: number;
  total: number;
  message: string;
}

export interface BuildImageOptions {
  home: string;
  /** The bundled guest agent (packages/guest/dist/agent.cjs, CommonJS: the snapshot is made from it). */
  agentBundlePath: string;
  agentVersion: string;
  /** The native addon (packages/guest/dist/agentbox.node); without it boxes spawn with node. */
  nativeAddonPath?: string;
  /** The agent CLIs the image holds (default: claude). Each set is its own image. */
  agents?: readonly AgentCli[];
  /** Rebuild the image and its cached rootfs layers (npm's download cache is kept). */
  force?: boolean;
  onProgress?: (progress: BuildProgress) => void;
}

export interface BuildResult {
  image: Image;
  /** False when an identical image already existed and nothing was built. */
  built: boolean;
}

const TOTAL_STEPS = 6;
const INITRD_FILE = 'initrd.cpio';
const BUSYBOX = '/bin/busybox';

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Content address of an image: every input that changes its bytes. */
export function imageId(
  kernel: KernelSource,
  agentSha256: string,
  agents: readonly AgentCli[],
  nativeAddonSha256 = '',
): string {
  return sha256(
    JSON.stringify({
      IMAGE_API_VERSION,
      IMAGE_BUILDER_REVISION,
      kernel,
      kernelConfig: kernelConfigKey(),
      INITRAMFS_INIT,
      GUEST_INIT,
      rootfs: rootfsKey(agents),
      agentSha256,
      nativeAddonSha256,
    }),
  ).slice(0, 24);
}

/** The newest image of an agent set is the one in use (`findBuiltImage`, `image prune`). */
function markNewest(dir: string): void {
  const now = new Date();
  try {
    fs.utimesSync(dir, now, now);
  } catch {
    // a read-only image store: the order stays the build order
  }
}

/** What the initramfs holds beyond init and busybox. */
interface InitramfsResult {
  /** Whether the guest agent comes with its V8 startup snapshot (else why not). */
  snapshot: SnapshotResult;
}

/**
 * The initramfs, an uncompressed cpio: under emulation the kernel's gunzip of ~2 MB took ~0.5 s
 * of every cold boot, while QEMU loads the plain archive into guest memory for free.
 */
async function buildInitramfs(options: {
  home: string;
  agentBundle: string;
  agentVersion: string;
  nativeAddon: string | undefined;
  out: string;
}): Promise<InitramfsResult> {
  const { out } = options;
  const stage = `${out}.stage`;
  await fsp.rm(stage, { recursive: true, force: true });
  try {
    for (const dir of ['bin', 'etc', 'proc', 'sys', 'dev', 'newroot', 'agentbox']) {
      await fsp.mkdir(path.join(stage, dir), { recursive: true });
    }
    await fsp.copyFile(BUSYBOX, path.join(stage, 'bin/busybox'));
    await fsp.chmod(path.join(stage, 'bin/busybox'), 0o755);
    await fsp.writeFile(path.join(stage, 'init'), INITRAMFS_INIT, { mode: 0o755 });
    const bundle = path.join(stage, 'agentbox/agent.cjs');
    await fsp.copyFile(options.agentBundle, bundle);
    await fsp.writeFile(path.join(stage, 'agentbox/init.sh'), GUEST_INIT, { mode: 0o755 });
    if (options.nativeAddon)
      await fsp.copyFile(options.nativeAddon, path.join(stage, 'agentbox/agentbox.node'));
    const snapshot = await buildAgentSnapshot(
      options.home,
      bundle,
      path.join(stage, 'agentbox/agent.blob'),
      options.agentVersion,
    );
    await runCommand('sh', [
      '-c',
      `cd "${stage}" && find . -print0 | cpio --null -o -H newc --quiet > "${out}"`,
    ]);
    return { snapshot };
  } finally {
    await fsp.rm(stage, { recursive: true, force: true });
  }
}

/**
 * Builds (or finds) the image for this recipe + guest agent. Idempotent: with nothing changed it
 * returns the existing image without touching the network.
 */
export async function buildImage(options: BuildImageOptions): Promise<BuildResult> {
  const started = performance.now();
  const progress = (step: BuildProgress['step'], index: number, message: string) =>
    options.onProgress?.({ step, index, total: TOTAL_STEPS, message });
  const agentBytes = await fsp.readFile(options.agentBundlePath).catch(() => {
    throw new AgentboxError(
      'image_missing',
      `guest agent bundle ${options.agentBundlePath} is missing; run \`npm run build\``,
    );
  });
  const agentSha256 = sha256(agentBytes);
  const agents = parseAgentClis(options.agents ?? DEFAULT_AGENT_CLIS);

  const nativeAddonSha256 = options.nativeAddonPath
    ? sha256(await fsp.readFile(options.nativeAddonPath))
    : '';

  progress('resolve', 1, `resolving ${KERNEL_SOURCE_PACKAGE}`);
  const kernelSource = await resolveKernelSource(options.home);
  const id = imageId(kernelSource, agentSha256, agents, nativeAddonSha256);
  const dir = path.join(imagesDir(options.home), id);
  if (!options.force && fs.existsSync(path.join(dir, 'manifest.json'))) {
    try {
      const image = loadImage(dir);
      markNewest(dir);
      progress('done', TOTAL_STEPS, `image ${id} is up to date`);
      return { image, built: false };
    } catch {
      // damaged: rebuild below
    }
  }

  if (options.force) {
    for (const file of Object.values(rootfsCachePaths(options.home, agents)))
      await fsp.rm(file, { force: true });
  }
  // The kernel compiles while the rootfs is made: the two take the longest and need different things.
  if (!cachedKernel(options.home, kernelSource))
    progress(
      'kernel',
      2,
      `building the kernel from ${kernelSource.package} ${kernelSource.version} (once, ~7 min)`,
    );
  const [kernel, rootfsImg] = await Promise.all([
    buildKernel(options.home, kernelSource, (message) => progress('kernel', 2, message)),
    buildRootfs(options.home, agents, ({ layer, message }) => {
      if (layer === 'filesystem') progress('filesystem', 4, message);
      else progress(layer === 'base' ? 'rootfs' : 'agents', 3, message);
    }),
  ]);

  const work = `${dir}.tmp-${process.pid}`;
  await fsp.rm(work, { recursive: true, force: true });
  await fsp.mkdir(work, { recursive: true });
  try {
    await assemble();
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
  progress('done', TOTAL_STEPS, `built image ${id}`);
  return { image: loadImage(dir), built: true };

  async function assemble(): Promise<void> {
    progress('initramfs', 5, 'building initramfs (busybox, guest agent, its snapshot and native addon)');
    const initramfs = await buildInitramfs({
      home: options.home,
      agentBundle: options.agentBundlePath,
      agentVersion: options.agentVersion,
      nativeAddon: options.nativeAddonPath,
      out: path.join(work, INITRD_FILE),
    });
    if (!initramfs.snapshot.built) {
      progress(
        'initramfs',
        5,
        `no startup snapshot of the guest agent (${initramfs.snapshot.reason}); boxes start it from its bundle`,
      );
    }

    progress('assemble', 6, 'assembling image');
    const kernelFile = 'vmlinux';
    await fsp.copyFile(kernel.vmlinux, path.join(work, kernelFile));
    // The base disk is shared read-only by every box (each writes to its own qcow2 overlay).
    await fsp
      .link(rootfsImg, path.join(work, 'rootfs.img'))
      .catch(() => fsp.copyFile(rootfsImg, path.join(work, 'rootfs.img')));
    await fsp.chmod(path.join(work, 'rootfs.img'), 0o444);
    const size = (f: string) => fs.statSync(path.join(work, f)).size;
    const manifest: ImageManifest = {
      id,
      imageApiVersion: IMAGE_API_VERSION,
      builtAt: new Date().toISOString(),
      buildSeconds: Math.round((performance.now() - started) / 100) / 10,
      debianSuite: DEBIAN_SUITE,
      kernel: { package: kernelSource.package, version: kernelSource.version, release: kernel.release },
      rootfs: { key: rootfsKey(agents), packages: ROOTFS_PACKAGES },
      agent: {
        version: options.agentVersion,
        sha256: agentSha256,
        snapshot: initramfs.snapshot.built,
        nativeAddon: options.nativeAddonPath !== undefined,
      },
      agents: agentVersions(agents),
      components: {
        ...(await readComponents(path.join(work, 'rootfs.img'))),
        node: NODE_VERSION,
        npm: NPM_VERSION,
      },
      files: { kernel: kernelFile, initrd: INITRD_FILE, rootfs: 'rootfs.img' },
      sizes: {
        kernelBytes: size(kernelFile),
        initrdBytes: size(INITRD_FILE),
        rootfsBytes: size('rootfs.img'),
      },
    };
    await fsp.writeFile(path.join(work, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.rename(work, dir);
  }
}
