import type { RestoreResult } from '@agentbox/protocol';
import type { GuestConnection } from './guest-connection.js';
import type { Image } from './image/manifest.js';

export interface VmResources {
  memoryMib: number;
  vcpus: number;
  diskGib: number;
}

export const DEFAULT_RESOURCES: VmResources = { memoryMib: 1024, vcpus: 1, diskGib: 4 };

/**
 * A booted VM saved once per image + resources: its RAM file (shared copy-on-write by every clone),
 * its device state and its disk. Immutable once published; see template-store.ts.
 */
export interface VmTemplate {
  /** Content key: image id, resources, QEMU and the template recipe. */
  id: string;
  dir: string;
  imageId: string;
  resources: VmResources;
  createdAt: number;
}

/**
 * Where start() gets the VM from. Absent: a cold boot on a fresh overlay disk.
 * - `template`: a clone; restored from the template's snapshot, with a new identity.
 * - `hibernation`: the box's own snapshot (`hibernate()`), on its own disk.
 * - `disk`: a cold boot of the box's existing disk (its snapshot was unusable or never taken).
 */
export type VmRestoreSource =
  { kind: 'template'; template: VmTemplate } | { kind: 'hibernation' } | { kind: 'disk' };

/**
 * What a VM id may be: it names the box's runtime directory and is a cold boot's hostname on the
 * kernel command line, so nothing that could end that parameter or add another.
 */
export const VM_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

export interface VmSpec {
  /** Unique, VM_ID_PATTERN; names the box's runtime directory and a cold boot's hostname. */
  id: string;
  image: Image;
  resources: VmResources;
  /** How long start() waits for the guest agent's hello. */
  bootTimeoutMs?: number;
  restoreFrom?: VmRestoreSource;
  /** Host directories shared into the guest over virtio-9p (cold boots only; the guest mounts them). */
  shares?: readonly VmShare[];
  /**
   * The host user the VM process runs as once it has opened its files (QEMU's `-runas`): what it
   * does for the guest after that, a share's files included, it does with that user's rights.
   */
  runAs?: VmUser;
}

export interface VmUser {
  uid: number;
  gid: number;
}

export interface VmShare {
  /** 9p mount tag, [A-Za-z0-9_-]{1,31}. */
  tag: string;
  /** Absolute host directory. */
  hostPath: string;
  readOnly?: boolean;
}

/**
 * Lifecycle of one VM. Each operation names the states it is legal in; anything else throws
 * `invalid_state`:
 *   created --start--> running --stop/kill--> stopped --destroy--> destroyed
 *   running --pause--> paused --resume--> running
 *   running|paused --hibernate--> hibernated (process gone; disk + snapshot kept for a new Vm)
 *   (destroy is legal from any state; a VM that exits by itself becomes `stopped`.)
 */
export type VmState = 'created' | 'starting' | 'running' | 'paused' | 'hibernated' | 'stopped' | 'destroyed';

/** What a snapshot restore reported, for figures and tests. */
export interface VmRestoreInfo {
  source: VmRestoreSource['kind'];
  /** QEMU was started and the snapshot loaded by preload(), before start() was called. */
  preloaded: boolean;
  /** start() → snapshot loaded (~0 when preloaded) → guest answered → restore op done, in ms. */
  loadMs: number;
  helloMs: number;
  totalMs: number;
  guest: RestoreResult;
}

/** A VM's writable disk as the host holds it. */
export interface VmDiskUse {
  /** Bytes the disk file takes on the host's filesystem (it grows as the guest fills its disk). */
  allocatedBytes: number;
  /** The hypervisor stopped the guest because a write to its disk found the host's filesystem full. */
  stalled: boolean;
}

/** What a VM's process holds of the host's memory. */
export interface VmMemoryUse {
  /**
   * Bytes no other process shares (its heap, the TCG translation cache, the guest pages it wrote):
   * what ending the process gives back. Guest RAM still mapped from a template's file is page cache
   * shared with the other clones and is not counted.
   */
  privateBytes: number;
}

export interface VmExit {
  code: number | null;
  signal: string | null;
}

export interface Vm {
  readonly id: string;
  readonly state: VmState;
  /** Host pid of the VM process while it runs. */
  readonly pid: number | undefined;
  /** The guest channel; calls fail cleanly unless the state is `running`. */
  readonly guest: GuestConnection;
  /** Resolves once the VM process has exited (or immediately if it never started). */
  readonly exited: Promise<VmExit>;
  /** created → running: boots and waits for the guest agent's hello. */
  start(): Promise<void>;
  /**
   * Optional, for a VM restored from a snapshot: starts the VM process and loads the snapshot
   * without running the guest (still `created`), so that start() only resumes and re-identifies it.
   */
  preload?(): Promise<void>;
  /** running → stopped: flushes the guest's disks and powers off. */
  stop(): Promise<void>;
  /** running|starting → stopped: kills the VM process at once. */
  kill(): Promise<void>;
  /** any → destroyed: kills if needed and removes every file the VM had. */
  destroy(): Promise<void>;
  /** running → paused: stops the vCPUs (no host CPU used); calls in flight wait. */
  pause(): Promise<void>;
  /** paused → running: continues the vCPUs and sets the guest clock (it stood still). */
  resume(): Promise<void>;
  /**
   * running|paused → hibernated: flushes the guest's disks, writes the whole VM state next to its
   * disk and ends the VM process, freeing its memory. A new Vm with `restoreFrom: hibernation`
   * wakes it.
   */
  hibernate(): Promise<{ stateBytes: number; ms: number }>;
  /** Set once start() restored from a snapshot. */
  readonly restoreInfo?: VmRestoreInfo | undefined;
  /** The disk's use of the host's filesystem; undefined when there is no disk file (yet). */
  diskUse?(): VmDiskUse | undefined;
  /** The VM process's use of the host's memory; undefined when it is not running (or unreadable). */
  memoryUse?(): VmMemoryUse | undefined;
}

export interface VmBackend {
  readonly name: string;
  create(spec: VmSpec): Promise<Vm>;
}
