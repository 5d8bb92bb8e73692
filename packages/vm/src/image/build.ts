import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { AgentboxError, IMAGE_API_VERSION } from '@agentbox/protocol';
import { runCommand } from '../command.js';
import { cacheDir, imagesDir } from '../paths.js';
import { agentVersions, parseAgentClis } from './agents.js';
import { loadImage, type Image, type ImageManifest } from './manifest.js';
import {
  BOOT_MODULES,
  DEBIAN_SUITE,
  DEFAULT_AGENT_CLIS,
  EXTRA_MODULES,
  GUEST_INIT,
  IMAGE_BUILDER_REVISION,
  INITRAMFS_INIT,
  KERNEL_METAPACKAGE,
  NODE_VERSION,
  ROOTFS_PACKAGES,
  type AgentCli,
} from './recipe.js';
import { buildRootfs, readComponents, rootfsCachePaths, rootfsKey } from './rootfs.js';

export interface BuildProgress {
  step: 'resolve' | 'kernel' | 'rootfs' | 'agents' | 'filesystem' | 'initramfs' | 'assemble' | 'done';
  /** 1-based index of the step among `total`. */
  index: number;
  total: number;
  message: string;
}

export interface BuildImageOptions {
  home: string;
  /** The bundled guest agent (packages/guest/dist/agent.mjs). */
  agentBundlePath: string;
  agentVersion: string;
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

interface KernelRef {
  package: string;
  version: string;
}

const TOTAL_STEPS = 6;
const BUSYBOX = '/bin/busybox';

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Content address of an image: every input that changes its bytes. */
export function imageId(kernel: KernelRef, agentSha256: string, agents: readonly AgentCli[]): string {
  return sha256(
    JSON.stringify({
      IMAGE_API_VERSION,
      IMAGE_BUILDER_REVISION,
      kernel,
      BOOT_MODULES,
      EXTRA_MODULES,
      INITRAMFS_INIT,
      GUEST_INIT,
      rootfs: rootfsKey(agents),
      agentSha256,
    }),
  ).slice(0, 24);
}

async function resolveKernel(): Promise<KernelRef> {
  const depends = async () => (await runCommand('apt-cache', ['depends', KERNEL_METAPACKAGE])).stdout;
  let out = await depends().catch(() => '');
  if (!/Depends: linux-image-/.test(out)) {
    await runCommand('apt-get', ['update', '-qq']);
    out = await depends();
  }
  const pkg = /Depends: (linux-image-\S+)/.exec(out)?.[1];
  if (!pkg)
    throw new AgentboxError(
      'prerequisite_missing',
      `apt knows no ${KERNEL_METAPACKAGE}; run \`agentbox setup\``,
    );
  const policy = (await runCommand('apt-cache', ['policy', pkg])).stdout;
  const version = /Candidate: (\S+)/.exec(policy)?.[1];
  if (!version || version === '(none)')
    throw new AgentboxError('prerequisite_missing', `no candidate version of ${pkg}`);
  return { package: pkg, version };
}

/** Downloads and unpacks the kernel package once; returns the unpacked tree and the kernel release. */
async function fetchKernel(home: string, kernel: KernelRef): Promise<{ root: string; release: string }> {
  const root = path.join(
    cacheDir(home),
    'kernel',
    `${kernel.package}_${kernel.version}`.replace(/[^\w.+-]/g, '_'),
  );
  const release = kernel.package.replace(/^linux-image-/, '');
  const tree = path.join(root, 'tree');
  if (fs.existsSync(path.join(root, '.complete'))) return { root: tree, release };
  const work = `${root}.tmp-${process.pid}`;
  await fsp.rm(work, { recursive: true, force: true });
  await fsp.mkdir(work, { recursive: true });
  await runCommand('apt-get', ['download', `${kernel.package}=${kernel.version}`], { cwd: work });
  const deb = (await fsp.readdir(work)).find((f) => f.endsWith('.deb'));
  if (!deb) throw new AgentboxError('internal', `apt-get download ${kernel.package} produced no .deb`);
  await runCommand('dpkg-deb', ['-x', path.join(work, deb), path.join(work, 'x')]);
  await fsp.rename(path.join(work, 'x'), `${work}/tree`);
  await fsp.rm(path.join(work, deb));
  await runCommand('depmod', ['-b', `${work}/tree`, release]);
  await fsp.writeFile(path.join(work, '.complete'), '');
  await fsp.rm(root, { recursive: true, force: true });
  await fsp.rename(work, root);
  return { root: tree, release };
}

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/**
 * Unpacks the ELF vmlinux inside a bzImage. QEMU boots an ELF with a PVH note directly, which skips
 * the real-mode setup and the in-guest XZ decompression: ~3 s of every cold boot under emulation.
 * Returns false when the payload is not XZ (the bzImage is then booted as it is).
 */
async function extractVmlinux(bzImage: string, out: string): Promise<boolean> {
  const bytes = await fsp.readFile(bzImage);
  const offset = bytes.indexOf(XZ_MAGIC);
  if (offset < 0) return false;
  const payload = `${out}.xz`;
  await fsp.writeFile(payload, bytes.subarray(offset));
  try {
    // The payload is followed by trailing data xz warns about; the decompressed ELF is complete.
    await runCommand('sh', ['-c', `xz -dc -q "${payload}" > "${out}" 2>/dev/null; test -s "${out}"`]);
    const elf = await fsp.readFile(out).then((b) => b.subarray(0, 4).toString('latin1'));
    return elf === '\x7fELF';
  } finally {
    await fsp.rm(payload, { force: true });
  }
}

const MODULE_SIGNATURE_MAGIC = Buffer.from('~Module signature appended~\n');

/**
 * A module without its appended signature. The kernel then skips the signature check (it only
 * notes a taint), which under emulation is most of the cost of loading a module at boot.
 */
export function stripModuleSignature(module: Buffer): Buffer {
  if (!module.subarray(module.length - MODULE_SIGNATURE_MAGIC.length).equals(MODULE_SIGNATURE_MAGIC))
    return module;
  // struct module_signature (12 bytes) precedes the magic; its last field is the signature length.
  const infoEnd = module.length - MODULE_SIGNATURE_MAGIC.length;
  const sigLength = module.readUInt32BE(infoEnd - 4);
  const end = infoEnd - 12 - sigLength;
  return end > 0 ? module.subarray(0, end) : module;
}

async function modulePaths(kernelRoot: string, release: string, modules: string[]): Promise<string[]> {
  const seen = new Set<string>();
  const ordered: string[] = [];
  for (const mod of modules) {
    const { stdout } = await runCommand('modprobe', ['-d', kernelRoot, '-S', release, '--show-depends', mod]);
    for (const line of stdout.split('\n')) {
      const match = /^insmod (\S+)/.exec(line.trim());
      if (!match) continue;
      const rel = path.relative(path.join(kernelRoot, 'lib/modules', release), match[1]!);
      if (!seen.has(rel)) {
        seen.add(rel);
        ordered.push(rel);
      }
    }
  }
  return ordered;
}

async function buildInitramfs(
  kernelRoot: string,
  release: string,
  agentBundle: string,
  out: string,
): Promise<void> {
  const stage = `${out}.stage`;
  await fsp.rm(stage, { recursive: true, force: true });
  try {
    for (const dir of ['bin', 'etc', 'proc', 'sys', 'dev', 'newroot', 'agentbox']) {
      await fsp.mkdir(path.join(stage, dir), { recursive: true });
    }
    await fsp.copyFile(BUSYBOX, path.join(stage, 'bin/busybox'));
    await fsp.chmod(path.join(stage, 'bin/busybox'), 0o755);
    await fsp.writeFile(path.join(stage, 'init'), INITRAMFS_INIT, { mode: 0o755 });
    await fsp.copyFile(agentBundle, path.join(stage, 'agentbox/agent.mjs'));
    await fsp.writeFile(path.join(stage, 'agentbox/init.sh'), GUEST_INIT, { mode: 0o755 });

    const modSrc = path.join(kernelRoot, 'lib/modules', release);
    const modDst = path.join(stage, 'lib/modules', release);
    const boot = await modulePaths(kernelRoot, release, BOOT_MODULES);
    const extra = await modulePaths(kernelRoot, release, EXTRA_MODULES);
    for (const rel of new Set([...boot, ...extra])) {
      await fsp.mkdir(path.dirname(path.join(modDst, rel)), { recursive: true });
      await fsp.writeFile(
        path.join(modDst, rel),
        stripModuleSignature(await fsp.readFile(path.join(modSrc, rel))),
      );
    }
    for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo']) {
      if (fs.existsSync(path.join(modSrc, f))) await fsp.copyFile(path.join(modSrc, f), path.join(modDst, f));
    }
    await runCommand('depmod', ['-b', stage, release]);
    await fsp.writeFile(
      path.join(stage, 'etc/boot-modules'),
      boot.map((rel) => `${release}/${rel}`).join('\n') + '\n',
    );
    await runCommand('sh', [
      '-c',
      `cd "${stage}" && find . -print0 | cpio --null -o -H newc --quiet | gzip -6 > "${out}"`,
    ]);
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

  progress('resolve', 1, `resolving ${KERNEL_METAPACKAGE}`);
  const kernel = await resolveKernel();
  const id = imageId(kernel, agentSha256, agents);
  const dir = path.join(imagesDir(options.home), id);
  if (!options.force && fs.existsSync(path.join(dir, 'manifest.json'))) {
    try {
      const image = loadImage(dir);
      progress('done', TOTAL_STEPS, `image ${id} is up to date`);
      return { image, built: false };
    } catch {
      // damaged: rebuild below
    }
  }

  progress('kernel', 2, `fetching ${kernel.package} ${kernel.version}`);
  const { root: kernelRoot, release } = await fetchKernel(options.home, kernel);

  if (options.force) {
    for (const file of Object.values(rootfsCachePaths(options.home, agents)))
      await fsp.rm(file, { force: true });
  }
  const rootfsImg = await buildRootfs(options.home, agents, ({ layer, message }) => {
    if (layer === 'filesystem') progress('filesystem', 4, message);
    else progress(layer === 'base' ? 'rootfs' : 'agents', 3, message);
  });

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
    progress('initramfs', 5, 'building initramfs (busybox, virtio modules, guest agent)');
    await buildInitramfs(kernelRoot, release, options.agentBundlePath, path.join(work, 'initrd.gz'));

    progress('assemble', 6, 'assembling image');
    const bzImage = path.join(kernelRoot, 'boot', `vmlinuz-${release}`);
    const kernelFile = (await extractVmlinux(bzImage, path.join(work, 'vmlinux'))) ? 'vmlinux' : 'vmlinuz';
    if (kernelFile === 'vmlinuz') await fsp.copyFile(bzImage, path.join(work, 'vmlinuz'));
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
      kernel: { package: kernel.package, version: kernel.version, release },
      rootfs: { key: rootfsKey(agents), packages: ROOTFS_PACKAGES },
      agent: { version: options.agentVersion, sha256: agentSha256 },
      agents: agentVersions(agents),
      components: { ...(await readComponents(path.join(work, 'rootfs.img'))), node: NODE_VERSION },
      files: { kernel: kernelFile, initrd: 'initrd.gz', rootfs: 'rootfs.img' },
      sizes: {
        kernelBytes: size(kernelFile),
        initrdBytes: size('initrd.gz'),
        rootfsBytes: size('rootfs.img'),
      },
    };
    await fsp.writeFile(path.join(work, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.rename(work, dir);
  }
}
