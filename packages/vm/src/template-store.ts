import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { VmResources, VmTemplate } from './backend.js';

/**
 * Templates on disk: `<templatesDir>/<id>/` holds `ram` (the guest RAM, mapped privately by each
 * clone), `state` (device state), `disk.qcow2` (copied per clone: the disk must match the RAM),
 * and `manifest.json`, written last. A published template is never modified (clones map its RAM
 * file); a new image or recipe gives a new id. Built in `<id>.build-<pid>` and renamed into place.
 */

/** Bump when how a template is made changes (what runs in it before the snapshot, the devices, the CPU model, the kernel command line). */
export const TEMPLATE_REVISION = 9;

export const TemplateManifestSchema = z
  .object({
    id: z.string(),
    revision: z.number().int(),
    imageId: z.string(),
    resources: z.object({ memoryMib: z.number(), vcpus: z.number(), diskGib: z.number() }).strict(),
    qemuVersion: z.string(),
    accel: z.string(),
    tbSizeMib: z.number().nullable(),
    createdAt: z.number(),
    bootMs: z.number(),
    snapshotMs: z.number(),
    stateBytes: z.number(),
    diskBytes: z.number(),
  })
  .strict();
export type TemplateManifest = z.infer<typeof TemplateManifestSchema>;

export interface TemplateKeyInput {
  imageId: string;
  resources: VmResources;
  qemuVersion: string;
  accel: string;
  tbSizeMib: number | undefined;
}

/** Content key of a template (pure). */
export function templateId(input: TemplateKeyInput): string {
  const hash = createHash('sha256')
    .update(
      JSON.stringify({
        revision: TEMPLATE_REVISION,
        imageId: input.imageId,
        memoryMib: input.resources.memoryMib,
        vcpus: input.resources.vcpus,
        diskGib: input.resources.diskGib,
        qemuVersion: input.qemuVersion,
        accel: input.accel,
        tbSizeMib: input.tbSizeMib ?? null,
      }),
    )
    .digest('hex');
  return `tpl-${hash.slice(0, 20)}`;
}

export const TEMPLATE_FILES = { ram: 'ram', state: 'state', disk: 'disk.qcow2', manifest: 'manifest.json' };

/** Whether a process with this pid exists (EPERM: it does, someone else's). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class TemplateStore {
  constructor(readonly dir: string) {}

  dirOf(id: string): string {
    return path.join(this.dir, id);
  }

  /** The published template with this id, if it is complete and its manifest agrees. */
  read(id: string): (VmTemplate & { manifest: TemplateManifest }) | undefined {
    const dir = this.dirOf(id);
    let manifest: TemplateManifest;
    try {
      manifest = TemplateManifestSchema.parse(
        JSON.parse(fs.readFileSync(path.join(dir, TEMPLATE_FILES.manifest), 'utf8')),
      );
    } catch {
      return undefined;
    }
    if (manifest.id !== id || manifest.revision !== TEMPLATE_REVISION) return undefined;
    try {
      const ram = fs.statSync(path.join(dir, TEMPLATE_FILES.ram));
      if (ram.size !== manifest.resources.memoryMib * 1024 * 1024) return undefined;
      if (fs.statSync(path.join(dir, TEMPLATE_FILES.state)).size !== manifest.stateBytes) return undefined;
      fs.accessSync(path.join(dir, TEMPLATE_FILES.disk), fs.constants.R_OK);
    } catch {
      return undefined;
    }
    return {
      id,
      dir,
      imageId: manifest.imageId,
      resources: manifest.resources,
      createdAt: manifest.createdAt,
      manifest,
    };
  }

  /** Removes what crashed builds of `id` left (call with the lock held); `before` sees each dir first. */
  async clearStaleBuilds(id: string, before: (dir: string) => Promise<unknown>): Promise<void> {
    let entries: string[] = [];
    try {
      entries = await fsp.readdir(this.dir);
    } catch {
      return;
    }
    for (const entry of entries) {
      if (!entry.startsWith(`${id}.build-`) && !entry.startsWith(`${id}.old-`)) continue;
      const dir = path.join(this.dir, entry);
      await before(dir);
      await fsp.rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Removes the builds of any template whose process is gone (`before` sees each dir first, to end
   * a QEMU the build left): a daemon killed during a build leaves its template VM running, and
   * only a later build of the same template would otherwise look. Builds of live processes (other
   * daemons share this dir) stay. Returns the dirs removed.
   */
  async clearDeadBuilds(before: (dir: string) => Promise<unknown>): Promise<string[]> {
    let entries: string[] = [];
    try {
      entries = await fsp.readdir(this.dir);
    } catch {
      return [];
    }
    const removed: string[] = [];
    for (const entry of entries) {
      const owner = /\.(?:build|old)-(\d+)(?:-\d+)?$/.exec(entry)?.[1];
      if (owner === undefined || processAlive(Number(owner))) continue;
      const dir = path.join(this.dir, entry);
      await before(dir);
      await fsp.rm(dir, { recursive: true, force: true });
      removed.push(dir);
    }
    return removed;
  }

  /** A fresh build dir for `id` (removed first if a crashed build left it). */
  async buildDir(id: string): Promise<string> {
    const dir = path.join(this.dir, `${id}.build-${process.pid}`);
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  /** Writes the manifest and moves the build into place; returns the published template. */
  async publish(buildDir: string, manifest: TemplateManifest): Promise<VmTemplate> {
    await fsp.writeFile(
      path.join(buildDir, TEMPLATE_FILES.manifest),
      JSON.stringify(manifest, null, 2) + '\n',
    );
    const target = this.dirOf(manifest.id);
    await this.discard(manifest.id);
    await fsp.rename(buildDir, target);
    const published = this.read(manifest.id);
    if (!published) throw new Error(`template ${manifest.id} did not verify after publishing`);
    return published;
  }

  /**
   * Removes a template. Safe while clones run: they hold its RAM file open (the pages stay until
   * the last one exits) and have their own copy of the disk.
   */
  async discard(id: string): Promise<void> {
    const target = this.dirOf(id);
    const aside = `${target}.old-${process.pid}-${Date.now()}`;
    try {
      await fsp.rename(target, aside);
    } catch {
      return;
    }
    await fsp.rm(aside, { recursive: true, force: true });
  }

  /**
   * Serializes builds of one template across processes: an O_EXCL lock file holding the owner's
   * pid; a lock whose owner is gone is taken over. Resolves with a release function.
   */
  async lock(id: string, timeoutMs: number): Promise<() => void> {
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const file = path.join(this.dir, `${id}.lock`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const fd = fs.openSync(file, 'wx');
        fs.writeSync(fd, String(process.pid));
        fs.closeSync(fd);
        return () => fs.rmSync(file, { force: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      let owner = NaN;
      try {
        owner = Number(fs.readFileSync(file, 'utf8'));
      } catch {
        continue;
      }
      if (!Number.isInteger(owner) || !processExists(owner)) {
        fs.rmSync(file, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`template ${id} is being built by pid ${owner}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /**
   * Removes templates of other images (and unreadable or outdated ones) not touched for
   * `olderThanMs`: images change often and each template holds ~200 MB of RAM file. Safe while
   * clones of them run (see `discard`); a clone being started from one that goes falls back to a
   * cold boot. Returns the ids removed.
   */
  async prune(options: { keepImageId: string; olderThanMs: number; now?: number }): Promise<string[]> {
    let entries: string[];
    try {
      entries = await fsp.readdir(this.dir);
    } catch {
      return [];
    }
    const now = options.now ?? Date.now();
    const removed: string[] = [];
    // Locks of builds whose process died (a killed daemon) are only taken over when the same
    // template is built again; drop them here too.
    for (const lock of entries.filter((e) => e.endsWith('.lock'))) {
      const file = path.join(this.dir, lock);
      try {
        const owner = Number(await fsp.readFile(file, 'utf8'));
        if (!Number.isInteger(owner) || !processExists(owner)) await fsp.rm(file, { force: true });
      } catch {
        // gone meanwhile
      }
    }
    for (const id of entries.filter((e) => /^tpl-[0-9a-f]{20}$/.test(e))) {
      const current = this.read(id);
      if (current?.imageId === options.keepImageId) continue;
      try {
        if (now - (await fsp.stat(this.dirOf(id))).mtimeMs < options.olderThanMs) continue;
      } catch {
        continue;
      }
      await this.discard(id);
      removed.push(id);
    }
    return removed;
  }

  /** Every published template's manifest (for pruning and `doctor`). */
  list(): TemplateManifest[] {
    let entries: string[];
    try {
      entries = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    return entries
      .filter((e) => /^tpl-[0-9a-f]{20}$/.test(e))
      .map((e) => this.read(e)?.manifest)
      .filter((m): m is TemplateManifest => m !== undefined);
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
