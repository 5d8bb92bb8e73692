import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { cacheDir, imagesDir } from '../paths.js';
import { processStartTime, processesMentioning } from '../qemu/proc.js';
import { TEMPLATE_FILES, TemplateStore } from '../template-store.js';
import { parseAgentClis } from './agents.js';
import { kernelConfigKey } from './kernel.js';
import { loadImage } from './manifest.js';
import { rootfsCachePaths } from './rootfs.js';

/**
 * `agentbox image prune`: every image build whose inputs changed leaves the old image, its
 * templates (~170 MB each) and cache layers (a rootfs is ~1.3 GB) behind. Pruning keeps what
 * anything can still use and removes the rest. An image is kept when it is the newest with its
 * agent set (the one last built or found up to date, which `run` and `serve` pick), when a box's
 * disk under the agentbox home is backed by its rootfs (running, stopped or hibernated), or while
 * a process names it. Templates go with their image.
 */

export interface ImageFacts {
  id: string;
  dir: string;
  /** Sorted agent names: images with the same set compete for "newest". */
  agentSet: string;
  /** Directory mtime: the order `findBuiltImage` picks by. */
  mtimeMs: number;
}

export type KeepReason = 'newest' | 'disk' | 'process';

/** Which images to keep and why (pure): the newest of each agent set, and those in use. */
export function imagesToKeep(
  images: readonly ImageFacts[],
  inUse: ReadonlyMap<string, Exclude<KeepReason, 'newest'>>,
): Map<string, KeepReason> {
  const keep = new Map<string, KeepReason>();
  const newest = new Map<string, ImageFacts>();
  for (const image of images) {
    const best = newest.get(image.agentSet);
    if (!best || image.mtimeMs > best.mtimeMs) newest.set(image.agentSet, image);
  }
  for (const image of newest.values()) keep.set(image.id, 'newest');
  for (const image of images) {
    const reason = inUse.get(image.id);
    if (reason && !keep.has(image.id)) keep.set(image.id, reason);
  }
  return keep;
}

const QCOW2_MAGIC = 0x514649fb;

/** The backing file a qcow2 image names (absolute), or undefined (none, or not a qcow2). */
export function qcow2BackingFile(file: string): string | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const header = Buffer.alloc(20);
    if (fs.readSync(fd, header, 0, 20, 0) < 20 || header.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
    const offset = header.readBigUInt64BE(8);
    const size = header.readUInt32BE(16);
    if (offset === 0n || size === 0 || size > 4096) return undefined;
    const name = Buffer.alloc(size);
    if (fs.readSync(fd, name, 0, size, Number(offset)) < size) return undefined;
    return path.resolve(path.dirname(file), name.toString('utf8'));
  } finally {
    fs.closeSync(fd);
  }
}

/** Every `*.qcow2` below `dir`, not following links, at most `depth` levels down. */
function findDisks(dir: string, depth: number, out: string[] = []): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory() && depth > 0) findDisks(full, depth - 1, out);
    else if (entry.isFile() && entry.name.endsWith('.qcow2')) out.push(full);
  }
  return out;
}

export interface PruneItem {
  kind: 'image' | 'template' | 'rootfs-cache' | 'kernel-cache' | 'leftover';
  path: string;
  /** Bytes on disk only it holds (a file hard-linked from elsewhere counts where its last link goes). */
  bytes: number;
  /** For images: the agents it holds and when it was built. */
  detail?: string;
}

export interface PrunePlan {
  kept: { id: string; reason: KeepReason; agents: string }[];
  remove: PruneItem[];
  bytes: number;
}

interface FileBlocks {
  ino: number;
  nlink: number;
  bytes: number;
}

/** The files below a path with their allocated bytes (so a sparse RAM file counts what it holds). */
function filesOf(target: string, out: FileBlocks[] = []): FileBlocks[] {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(target);
  } catch {
    return out;
  }
  if (stat.isDirectory()) for (const entry of safeReaddir(target)) filesOf(path.join(target, entry), out);
  else out.push({ ino: stat.ino, nlink: stat.nlink, bytes: stat.blocks * 512 });
  return out;
}

/** A `<name>.tmp-<pid>` work dir or file whose builder is gone (a crashed or killed build). */
function isLeftover(name: string): boolean {
  const pid = /\.tmp-(?:prune-)?(\d+)$/.exec(name)?.[1];
  return pid !== undefined && processStartTime(Number(pid)) === undefined;
}

/** An image dir as prune sees it: a manifest with an id, usable by this agentbox or not. */
interface ListedImage {
  id: string;
  dir: string;
  rootfsPath: string;
  agents: string[];
  builtAt: string;
  rootfsKey: string | undefined;
  /** Loads with this agentbox (right image API version, all files there); only these can be "newest". */
  usable: boolean;
}

const LooseManifestSchema = z.object({
  id: z.string(),
  builtAt: z.string().optional(),
  agents: z.record(z.string(), z.unknown()).optional(),
  rootfs: z.object({ key: z.string() }).partial().optional(),
  files: z.object({ rootfs: z.string() }).partial().optional(),
});

/**
 * Image dirs with a readable manifest: those this agentbox can use, and those of another image API
 * version (left by an older agentbox). Build dirs (`<id>.tmp-<pid>`) and unreadable ones are not
 * touched.
 */
function listImages(home: string): ListedImage[] {
  const dir = imagesDir(home);
  const images: ListedImage[] = [];
  for (const name of safeReaddir(dir)) {
    if (!/^[0-9a-f]{16,64}$/.test(name)) continue;
    const imageDir = path.join(dir, name);
    let manifest: z.infer<typeof LooseManifestSchema>;
    let rootfsPath: string | undefined;
    try {
      const image = loadImage(imageDir);
      manifest = image.manifest;
      rootfsPath = image.rootfsPath;
    } catch {
      // Another image API version, or damaged: what its manifest still says, if it says anything.
      try {
        manifest = LooseManifestSchema.parse(
          JSON.parse(fs.readFileSync(path.join(imageDir, 'manifest.json'), 'utf8')),
        );
      } catch {
        continue; // unreadable: `image build --force` replaces it; prune leaves it to look at
      }
    }
    if (manifest.id !== name) continue;
    images.push({
      id: name,
      dir: imageDir,
      rootfsPath: path.resolve(rootfsPath ?? path.join(imageDir, manifest.files?.rootfs ?? 'rootfs.img')),
      agents: Object.keys(manifest.agents ?? {}).sort(),
      builtAt: manifest.builtAt ?? '?',
      rootfsKey: manifest.rootfs?.key,
      usable: rootfsPath !== undefined,
    });
  }
  return images;
}

/** What `agentbox image prune` would remove under `home`, and what it keeps and why. */
export function planPrune(home: string): PrunePlan {
  const images = listImages(home);
  const inUse = new Map<string, 'disk' | 'process'>();
  const byRootfs = new Map(images.map((image) => [image.rootfsPath, image.id]));
  // Boxes live outside images/ and cache/: look at every disk there. A template's disk does not
  // count: templates are made from an image and go with it.
  for (const name of safeReaddir(home)) {
    if (name === 'images' || name === 'cache' || name === 'templates') continue;
    for (const disk of findDisks(path.join(home, name), 4)) {
      const backing = qcow2BackingFile(disk);
      const id = backing ? byRootfs.get(backing) : undefined;
      if (id) inUse.set(id, 'disk');
    }
  }
  for (const image of images) {
    if (!inUse.has(image.id) && processesMentioning(image.dir).length > 0) inUse.set(image.id, 'process');
  }
  const facts = images
    .filter((image) => image.usable)
    .map((image) => ({
      id: image.id,
      dir: image.dir,
      agentSet: image.agents.join(','),
      mtimeMs: fs.statSync(image.dir).mtimeMs,
    }));
  const keep = imagesToKeep(facts, inUse);
  const kept = images.filter((image) => keep.has(image.id));
  const agentsOf = (image: ListedImage) => image.agents.join(',') || 'no agents';
  const remove: (Omit<PruneItem, 'bytes'> & { files: FileBlocks[] })[] = [];
  const add = (kind: PruneItem['kind'], target: string, detail?: string) =>
    remove.push({ kind, path: target, files: filesOf(target), ...(detail ? { detail } : {}) });

  for (const image of images) {
    if (keep.has(image.id)) continue;
    const usable = image.usable ? '' : ', of another image API version';
    add('image', image.dir, `${agentsOf(image)}, built ${image.builtAt}${usable}`);
  }

  // Templates of images that go (a template is only ever used with its own image).
  const templatesDir = path.join(home, 'templates');
  for (const name of safeReaddir(templatesDir)) {
    if (!/^tpl-[0-9a-f]+$/.test(name)) continue;
    const dir = path.join(templatesDir, name);
    let imageId: string | undefined;
    try {
      imageId = (
        JSON.parse(fs.readFileSync(path.join(dir, TEMPLATE_FILES.manifest), 'utf8')) as { imageId?: string }
      ).imageId;
    } catch {
      continue;
    }
    if (imageId && keep.has(imageId)) continue;
    if (processesMentioning(dir).length > 0) continue;
    add('template', dir);
  }

  // Rootfs layers and images the kept images' agent sets would not build from.
  const keepCache = new Set<string>();
  for (const image of kept) {
    if (image.rootfsKey) keepCache.add(path.join(cacheDir(home), 'rootfs', `${image.rootfsKey}.img`));
    if (!image.usable || image.agents.length === 0) continue;
    for (const file of Object.values(rootfsCachePaths(home, parseAgentClis(image.agents))))
      keepCache.add(file);
  }
  for (const sub of ['rootfs', 'agents']) {
    const dir = path.join(cacheDir(home), sub);
    for (const name of safeReaddir(dir)) {
      const file = path.join(dir, name);
      if (!/\.(img|tar)$/.test(name) || keepCache.has(file)) continue;
      add('rootfs-cache', file);
    }
  }

  // Kernel builds of another configuration (images hold their own copy of the kernel).
  const kernels = path.join(cacheDir(home), 'kernel');
  const current = `_${kernelConfigKey()}`;
  for (const name of safeReaddir(kernels)) {
    if (name.endsWith(current) || name.includes('.tmp-')) continue;
    const dir = path.join(kernels, name);
    add('kernel-cache', dir);
  }

  for (const dir of [
    imagesDir(home),
    templatesDir,
    kernels,
    ...['rootfs', 'agents'].map((d) => path.join(cacheDir(home), d)),
  ]) {
    for (const name of safeReaddir(dir)) if (isLeftover(name)) add('leftover', path.join(dir, name));
  }

  // A hard-linked file frees its blocks only with its last link: count it where that one goes.
  const links = new Map<number, number>();
  for (const item of remove) for (const f of item.files) links.set(f.ino, (links.get(f.ino) ?? 0) + 1);
  const freed = (f: FileBlocks) => (links.get(f.ino)! >= f.nlink ? f.bytes / f.nlink : 0);
  const items: PruneItem[] = remove.map(({ files, ...item }) => ({
    ...item,
    bytes: Math.round(files.reduce((sum, f) => sum + freed(f), 0)),
  }));

  return {
    kept: kept.map((image) => ({ id: image.id, reason: keep.get(image.id)!, agents: agentsOf(image) })),
    remove: items,
    bytes: items.reduce((sum, item) => sum + item.bytes, 0),
  };
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Removes what the plan lists. Templates go through their store's `discard` (safe while clones
 * run); an image or kernel build dir is renamed aside first the same way, so no reader sees half
 * of one.
 */
export async function applyPrune(plan: PrunePlan): Promise<void> {
  for (const item of plan.remove) {
    if (item.kind === 'template') {
      await new TemplateStore(path.dirname(item.path)).discard(path.basename(item.path));
    } else if (item.kind === 'image' || item.kind === 'kernel-cache') {
      const aside = `${item.path}.tmp-prune-${process.pid}`;
      try {
        await fsp.rename(item.path, aside);
      } catch {
        continue; // gone already
      }
      await fsp.rm(aside, { recursive: true, force: true });
    } else {
      await fsp.rm(item.path, { recursive: true, force: true });
    }
  }
}
