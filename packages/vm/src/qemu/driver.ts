import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import {
  VM_ID_PATTERN,
  type Vm,
  type VmBackend,
  type VmResources,
  type VmSpec,
  type VmTemplate,
} from '../backend.js';
import { runCommand } from '../command.js';
import type { GuestConnectionOptions } from '../guest-connection.js';
import type { Image } from '../image/manifest.js';
import { boxesDir } from '../paths.js';
import { TEMPLATE_FILES, TemplateStore, templateId } from '../template-store.js';
import { AdoptedQemuVm, type AdoptSpec } from './adopted-vm.js';
import type { Accel, QemuLaunchSpec } from './args.js';
import { discardHibernation, readHibernation, type HibernationMeta } from './hibernation.js';
import { killProcessesMentioning } from './proc.js';
import { QEMU_BINARY, QemuVm } from './qemu-vm.js';
import { buildTemplate, type TemplateProgress } from './template.js';

export { QEMU_BINARY } from './qemu-vm.js';

/**
 * TCG translation cache per VM. QEMU's default reserves up to 1 GiB and fills it as code runs;
 * each MiB of it is host memory private to that VM. Measured on a clone (docs/performance.md):
 * 16 MiB thrashes (every exec ~370 ms, cache flushed over and over), 32 MiB flushes during the
 * first execs (~100–150 ms each), 64 MiB behaves as the default for a box's working set.
 */
export const DEFAULT_TB_SIZE_MIB = 64;

/** Templates of other images untouched this long are removed when a new template is built. */
export const TEMPLATE_PRUNE_AFTER_MS = 3_600_000;

export interface QemuBackendOptions {
  home: string;
  accel: Accel;
  tscKhz: number | undefined;
  diskCache?: QemuLaunchSpec['diskCache'];
  qemuBinary?: string;
  extraKernelArgs?: string[];
  guest?: GuestConnectionOptions;
  /**
   * Run QEMU in its own process group with stderr to <box dir>/qemu.log, so VMs outlive this host
   * process (the daemon re-adopts them); default false: a Ctrl-C of `agentbox run` reaches them.
   */
  detached?: boolean;
  /** Where templates live; default `<home>/templates`. Shared by every process using one home. */
  templatesDir?: string;
  /** TCG translation cache size (MiB); default DEFAULT_TB_SIZE_MIB; 0: QEMU's default. */
  tbSizeMib?: number;
  /** How long a clone restore may take before it counts as failed. */
  restoreTimeoutMs?: number;
}

const GiB = 1024 ** 3;

/**
 * A new disk is an overlay of the image's root filesystem, grown to the box's size at boot: one
 * smaller than that filesystem would cut it off, and the guest would not even mount it.
 */
async function requireDiskFits(image: Image, resources: VmResources): Promise<void> {
  const fsBytes = (await fsp.stat(image.rootfsPath)).size;
  const minGib = Math.ceil(fsBytes / GiB);
  if (resources.diskGib < minGib)
    throw new AgentboxError(
      'invalid_request',
      `a disk of ${resources.diskGib} GiB is smaller than the image's root filesystem ` +
        `(${(fsBytes / GiB).toFixed(1)} GiB): ask for at least ${minGib} GiB`,
      { details: { diskGib: resources.diskGib, minDiskGib: minGib } },
    );
}

const MiB = 1024 ** 2;

/**
 * QEMU allocates a guest's RAM at start, and the host refuses a mapping larger than its memory
 * (QEMU then only says "cannot set up guest memory"): such a box is refused by its size instead.
 */
export function requireMemoryFits(resources: VmResources, hostMemoryBytes = os.totalmem()): void {
  const hostMib = Math.floor(hostMemoryBytes / MiB);
  if (resources.memoryMib > hostMib)
    throw new AgentboxError(
      'invalid_request',
      `a box of ${resources.memoryMib} MiB of memory is larger than this host's ${hostMib} MiB: ask for less`,
      { details: { memoryMib: resources.memoryMib, hostMemoryMib: hostMib } },
    );
}

/** The QEMU `microvm` driver: one qemu-system process per box, a qcow2 overlay on the read-only base. */
export class QemuBackend implements VmBackend {
  readonly name = 'qemu';
  readonly templates: TemplateStore;
  private version: Promise<string> | undefined;
  private readonly building = new Map<string, Promise<VmTemplate>>();
  private builds = new AbortController();

  constructor(private readonly options: QemuBackendOptions) {
    this.templates = new TemplateStore(options.templatesDir ?? path.join(options.home, 'templates'));
  }

  private vmOptions() {
    const tb = this.options.tbSizeMib ?? DEFAULT_TB_SIZE_MIB;
    return {
      accel: this.options.accel,
      tscKhz: this.options.tscKhz,
      ...(this.options.diskCache ? { diskCache: this.options.diskCache } : {}),
      ...(this.options.qemuBinary ? { qemuBinary: this.options.qemuBinary } : {}),
      ...(this.options.extraKernelArgs ? { extraKernelArgs: this.options.extraKernelArgs } : {}),
      ...(this.options.guest ? { guest: this.options.guest } : {}),
      ...(this.options.detached !== undefined ? { detached: this.options.detached } : {}),
      ...(this.options.accel === 'tcg' && tb > 0 ? { tbSizeMib: tb } : {}),
      ...(this.options.restoreTimeoutMs ? { restoreTimeoutMs: this.options.restoreTimeoutMs } : {}),
    };
  }

  /** The TCG translation cache size each VM gets (MiB); undefined under KVM or QEMU's default. */
  get tbSizeMib(): number | undefined {
    return this.vmOptions().tbSizeMib;
  }

  /** A disk too small for the image, or more memory than the host has, is refused before anything is made. */
  async checkResources(image: Image, resources: VmResources): Promise<void> {
    requireMemoryFits(resources);
    await requireDiskFits(image, resources);
  }

  boxDir(id: string): string {
    return path.join(boxesDir(this.options.home), id);
  }

  async create(spec: VmSpec): Promise<Vm> {
    if (!VM_ID_PATTERN.test(spec.id))
      throw new AgentboxError('invalid_request', `invalid VM id ${JSON.stringify(spec.id)}`);
    const dir = this.boxDir(spec.id);
    const disk = path.join(dir, 'disk.qcow2');
    const source = spec.restoreFrom;
    if (source?.kind === 'hibernation' || source?.kind === 'disk') {
      if (!fs.existsSync(disk))
        throw new AgentboxError('snapshot_failed', `box ${spec.id} has no disk at ${disk}`);
      if (source.kind === 'hibernation' && !readHibernation(dir))
        throw new AgentboxError('snapshot_failed', `box ${spec.id} has no complete snapshot`);
      // A cold boot of the disk makes any snapshot of it stale.
      if (source.kind === 'disk') await discardHibernation(dir);
      return new QemuVm(spec, dir, this.vmOptions());
    }
    requireMemoryFits(spec.resources);
    if (!source) await requireDiskFits(spec.image, spec.resources);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    try {
      if (source?.kind === 'template') {
        // The disk must match the RAM image: each clone gets the template's disk as it was.
        await fsp.copyFile(
          path.join(source.template.dir, TEMPLATE_FILES.disk),
          disk,
          fs.constants.COPYFILE_FICLONE,
        );
      } else {
        await runCommand('qemu-img', [
          'create',
          '-q',
          '-f',
          'qcow2',
          '-F',
          'raw',
          '-b',
          spec.image.rootfsPath,
          disk,
          `${spec.resources.diskGib}G`,
        ]);
      }
    } catch (err) {
      await fsp.rm(dir, { recursive: true, force: true });
      throw err;
    }
    return new QemuVm(spec, dir, this.vmOptions());
  }

  /** Re-attaches to a VM a previous host process started; resolves once its guest says hello (or it is paused). */
  async adopt(spec: AdoptSpec): Promise<Vm> {
    if (!VM_ID_PATTERN.test(spec.id))
      throw new AgentboxError('invalid_request', `invalid VM id ${JSON.stringify(spec.id)}`);
    const vm = new AdoptedQemuVm(spec, this.boxDir(spec.id), this.options.guest);
    await vm.attach();
    return vm;
  }

  /** The box's hibernation snapshot, if it has a complete one. */
  hibernation(id: string): HibernationMeta | undefined {
    return readHibernation(this.boxDir(id));
  }

  /** `qemu-system-x86_64 --version`, once: part of a template's key (snapshots are QEMU-specific). */
  qemuVersion(): Promise<string> {
    this.version ??= runCommand(this.options.qemuBinary ?? QEMU_BINARY, ['--version']).then(
      ({ stdout }) => /version (\S+)/.exec(stdout)?.[1] ?? stdout.trim().split('\n')[0] ?? 'unknown',
    );
    return this.version;
  }

  async templateId(image: Image, resources: VmResources): Promise<string> {
    const tb = this.vmOptions().tbSizeMib;
    return templateId({
      imageId: image.manifest.id,
      resources,
      qemuVersion: await this.qemuVersion(),
      accel: this.options.accel,
      tbSizeMib: tb,
    });
  }

  /** The template for this image and size, if one is built. */
  async findTemplate(image: Image, resources: VmResources): Promise<VmTemplate | undefined> {
    return this.templates.read(await this.templateId(image, resources));
  }

  /** Builds the template (one cold boot) unless it exists; concurrent callers share one build. */
  async ensureTemplate(
    image: Image,
    resources: VmResources,
    onProgress?: TemplateProgress,
  ): Promise<VmTemplate> {
    const id = await this.templateId(image, resources);
    const ready = this.templates.read(id);
    if (ready) return ready;
    await requireDiskFits(image, resources);
    let pending = this.building.get(id);
    if (!pending) {
      pending = buildTemplate({
        store: this.templates,
        id,
        image,
        resources,
        vm: this.vmOptions(),
        qemuVersion: await this.qemuVersion(),
        ...(onProgress ? { onProgress } : {}),
        signal: this.builds.signal,
      })
        .then((template) => {
          // A new template usually means a new image: the old image's templates go after a while.
          void this.templates
            .prune({ keepImageId: image.manifest.id, olderThanMs: TEMPLATE_PRUNE_AFTER_MS })
            .catch(() => undefined);
          return template;
        })
        .finally(() => this.building.delete(id));
      this.building.set(id, pending);
    }
    return pending;
  }

  /**
   * Stops the template builds in flight (their VMs killed, their callers rejected) and waits for
   * them to end: a daemon that stops must not leave a template VM running. Later builds work.
   */
  async abortTemplateBuilds(): Promise<void> {
    const pending = [...this.building.values()];
    this.builds.abort(new Error('template build aborted'));
    this.builds = new AbortController();
    await Promise.allSettled(pending);
  }

  /** Ends and removes the template builds of processes that are gone (see TemplateStore.clearDeadBuilds). */
  sweepDeadTemplateBuilds(): Promise<string[]> {
    return this.templates.clearDeadBuilds((dir) => killProcessesMentioning(dir));
  }

  /** Drops a template that failed to restore; the next ensureTemplate() builds it again. */
  discardTemplate(template: VmTemplate): Promise<void> {
    return this.templates.discard(template.id);
  }
}
