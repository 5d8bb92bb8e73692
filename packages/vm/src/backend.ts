import type { GuestConnection } from './guest-connection.js';
import type { Image } from './image/manifest.js';

export interface VmResources {
  memoryMib: number;
  vcpus: number;
  diskGib: number;
}

export const DEFAULT_RESOURCES: VmResources = { memoryMib: 1024, vcpus: 1, diskGib: 4 };

export interface VmSpec {
  /** Unique, [a-z0-9-]; names the box's runtime directory. */
  id: string;
  image: Image;
  resources: VmResources;
  /** How long start() waits for the guest agent's hello. */
  bootTimeoutMs?: number;
}

/**
 * Lifecycle of one VM. Each operation names the states it is legal in; anything else throws
 * `invalid_state`:
 *   created --start--> running --stop/kill--> stopped --destroy--> destroyed
 *   (destroy is legal from any state; a VM that exits by itself becomes `stopped`.)
 */
export type VmState = 'created' | 'starting' | 'running' | 'stopped' | 'destroyed';

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
  /** running → stopped: flushes the guest's disks and powers off. */
  stop(): Promise<void>;
  /** running|starting → stopped: kills the VM process at once. */
  kill(): Promise<void>;
  /** any → destroyed: kills if needed and removes every file the VM had. */
  destroy(): Promise<void>;
}

export interface VmBackend {
  readonly name: string;
  create(spec: VmSpec): Promise<Vm>;
}
