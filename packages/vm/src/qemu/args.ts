import { GUEST_PORT_NAME } from '@agentbox/protocol';
import { VM_ID_PATTERN } from '../backend.js';
import { KERNEL_HOSTNAME_ARG } from '../image/recipe.js';
import { consoleArgs } from './console-log.js';

export type Accel = 'kvm' | 'tcg';

/**
 * The emulated CPU under TCG: everything QEMU can emulate except ERMS ("fast `rep movsb`"). With
 * ERMS the guest kernel copies and clears pages with `rep movsb`/`rep stosb`, which TCG runs one
 * byte per iteration; without it, `rep movsq` or vector loops: `read`/`write` copies 2-3.5x
 * faster, download +35%, stdout +25%, `/bin/true` −8% (docs/performance.md). Part of a template's
 * key (`TEMPLATE_REVISION`): a snapshot restores only into the CPU it was taken on.
 */
export const TCG_CPU_MODEL = 'max,-erms';

export interface QemuLaunchSpec {
  accel: Accel;
  memoryMib: number;
  vcpus: number;
  kernelPath: string;
  initrdPath: string;
  diskPath: string;
  /** `unsafe` ignores guest flushes (fast; fine for throwaway boxes), `writeback` honours them. */
  diskCache: 'unsafe' | 'writeback';
  guestSocketPath: string;
  qmpSocketPath: string;
  consolePath: string;
  /** Host TSC frequency; under TCG the guest's own calibration sometimes hangs or skews without it. */
  tscKhz: number | undefined;
  /** A cold boot's hostname (the box id), on the kernel command line for the guest's init. */
  hostname?: string;
  /** Appended to the kernel command line (debugging: `initcall_debug`, `loglevel=7`). */
  extraKernelArgs?: string[];
  /**
   * Guest RAM. Always a memory backend object named `mem`, so every box has the same RAM block
   * whichever way it started, and a snapshot of one restores into another:
   * `ram` anonymous memory; `file` mapped from a file — `share: true` for a template (its RAM *is*
   * the file, so a snapshot need not write it), `share: false` for a clone (private copy-on-write
   * mapping of the template's file: pages it never writes stay shared with every other clone).
   */
  memory?: { kind: 'ram' } | { kind: 'file'; path: string; share: boolean };
  /** TCG translation cache size in MiB (QEMU's default is up to 1 GiB, touched as code runs). */
  tbSizeMib?: number;
  /** Start with `-incoming defer`: the VM waits for a migration stream (a snapshot restore). */
  incoming?: boolean;
  /** Host directories shared over virtio-9p; the guest mounts each by its tag. */
  shares?: readonly QemuShare[];
  /** The user QEMU drops to once it has opened its files (`-runas uid:gid`). */
  runAs?: { uid: number; gid: number };
}

export interface QemuShare {
  /** 9p mount tag, [A-Za-z0-9_-]{1,31}. */
  tag: string;
  /** Absolute host directory. */
  hostPath: string;
  readOnly?: boolean;
}

/** QEMU option values separate with commas; a literal comma is doubled. */
function qemuOptValue(value: string): string {
  return value.replace(/,/g, ',,');
}

/** virtio-9p shares on microvm's virtio-mmio: `-fsdev local` (passthrough) + `virtio-9p-device`. */
export function shareArgs(shares: readonly QemuShare[]): string[] {
  return shares.flatMap((share, i) => [
    '-fsdev',
    `local,id=fs${i},path=${qemuOptValue(share.hostPath)},security_model=none${share.readOnly ? ',readonly=on' : ''}`,
    '-device',
    `virtio-9p-device,fsdev=fs${i},mount_tag=${share.tag}`,
  ]);
}

/**
 * Under emulation only. `norandmaps`: TCG keeps what it translated per guest address, so a
 * process whose libraries land at the same addresses as the last one's reuses those translations
 * — `/bin/true` from a shell drops from ~50 to ~8 ms, every command in a box gets that much
 * cheaper. `rodata=off`: the kernel's write protection of its own text costs boot time. Neither
 * protects anything the sandbox relies on: code in the box is root already; the VM is the boundary.
 */
const TCG_KERNEL_ARGS = ['norandmaps', 'rodata=off'];

/** The guest kernel command line. Pure, pinned literally by a unit test. */
export function kernelCmdline(
  spec: Pick<QemuLaunchSpec, 'accel' | 'tscKhz' | 'extraKernelArgs' | 'hostname'>,
): string {
  if (spec.hostname !== undefined && !VM_ID_PATTERN.test(spec.hostname))
    throw new Error(`not a valid hostname: ${JSON.stringify(spec.hostname)}`);
  return [
    'console=ttyS0',
    'quiet',
    'panic=-1',
    'reboot=t',
    'mitigations=off',
    'random.trust_cpu=on',
    'rdinit=/init',
    ...(spec.accel === 'tcg' ? TCG_KERNEL_ARGS : []),
    ...(spec.tscKhz ? [`tsc_early_khz=${spec.tscKhz}`] : []),
    ...(spec.hostname ? [`${KERNEL_HOSTNAME_ARG}=${spec.hostname}`] : []),
    ...(spec.extraKernelArgs ?? []),
  ].join(' ');
}

/**
 * argv for qemu-system-x86_64 on the `microvm` machine. Both control sockets are listened on by the
 * host and QEMU connects to them as a client (`reconnect=1`), so a restarted host can re-attach.
 * No ACPI: QEMU then names the virtio-mmio devices on the kernel command line
 * (`virtio_mmio.device=`, which the agentbox kernel reads), and the guest skips ACPI's start-up.
 */
export function qemuArgs(spec: QemuLaunchSpec): string[] {
  const memory = spec.memory ?? { kind: 'ram' };
  const backend =
    memory.kind === 'ram'
      ? `memory-backend-ram,id=mem,size=${spec.memoryMib}M`
      : `memory-backend-file,id=mem,size=${spec.memoryMib}M,mem-path=${memory.path},share=${memory.share ? 'on' : 'off'}`;
  const tcg = `tcg,thread=multi${spec.tbSizeMib ? `,tb-size=${spec.tbSizeMib}` : ''}`;
  return [
    '-M',
    'microvm,pit=on,pic=on,rtc=on,acpi=off,memory-backend=mem',
    '-accel',
    spec.accel === 'kvm' ? 'kvm' : tcg,
    '-cpu',
    spec.accel === 'kvm' ? 'host' : TCG_CPU_MODEL,
    '-m',
    String(spec.memoryMib),
    '-object',
    backend,
    '-smp',
    String(spec.vcpus),
    '-nographic',
    '-nodefaults',
    '-no-user-config',
    '-no-reboot',
    ...consoleArgs(spec.consolePath),
    '-kernel',
    spec.kernelPath,
    '-initrd',
    spec.initrdPath,
    '-append',
    kernelCmdline(spec),
    '-drive',
    `id=root,file=${spec.diskPath},format=qcow2,if=none,cache=${spec.diskCache},discard=unmap`,
    '-device',
    'virtio-blk-device,drive=root',
    '-device',
    'virtio-rng-device',
    '-device',
    'virtio-serial-device,max_ports=2',
    '-chardev',
    `socket,id=agentbox0,path=${spec.guestSocketPath},reconnect=1`,
    '-device',
    `virtserialport,chardev=agentbox0,id=agentbox0port,name=${GUEST_PORT_NAME}`,
    '-chardev',
    `socket,id=qmp,path=${spec.qmpSocketPath},reconnect=1`,
    '-mon',
    'chardev=qmp,mode=control',
    ...(spec.incoming ? ['-incoming', 'defer'] : []),
    ...shareArgs(spec.shares ?? []),
    ...(spec.runAs ? ['-runas', `${spec.runAs.uid}:${spec.runAs.gid}`] : []),
  ];
}
