/**
 * The agentbox-native addon (packages/guest/native/agentbox-native.c): posix_spawn with pipes,
 * exit watching through a pidfd, and the privileged steps of a snapshot restore (clock, RNG,
 * boot id, hostname). Under emulation node's own spawn (a fork of this ~50 MB process) costs
 * 10–30 ms more than the exec it is for. Loaded with `process.dlopen` when the agent starts (a
 * native module cannot live in the V8 startup snapshot); without it the agent uses node's APIs.
 */

export interface NativeAddon {
  /**
   * posix_spawn in a new session; returns [pid, stdin write fd or -1, stdout read fd, stderr read
   * fd, stdout write fd, stderr write fd]. The last two are the agent's copies of the process's
   * ends (close-on-exec): close them once it exited, and the pipes end as soon as no descendant
   * holds them, without a wakeup of their own.
   */
  spawn(
    argv: string[],
    env: string[],
    cwd: string,
    withStdin: boolean,
  ): [number, number, number, number, number, number];
  /** Calls back once with the wait status when the process exits (-1: it could not be reaped). */
  watchExit(pid: number, onExit: (waitStatus: number) => void): void;
  /**
   * Writes `header` to `outFd`, then `length` bytes moved by the kernel from `fromFd` (splice from
   * a pipe when `offset` < 0, else sendfile from that offset of a file); waits while `outFd` is
   * full. Returns the bytes that came from `fromFd` (fewer if a file ended; the rest is padding).
   */
  writeFrame(outFd: number, header: Buffer, fromFd: number, offset: number, length: number): number;
  /** Bytes waiting in a pipe. */
  pipeBytes(fd: number): number;
  /** mkfifo(3). Optional: an addon built before it lacks it. */
  makeFifo?(path: string, mode: number): void;
  /** Frees a file's blocks in [offset, offset + length), its size kept. Optional, as makeFifo. */
  punchHole?(path: string, offset: number, length: number): void;
  /** A level-triggered readiness watch on `fd` (starts paused): events 1 readable, 2 hang-up/error. */
  watchReadable(fd: number, onEvents: (events: number) => void): ReadableWatch;
  restore(
    nowMs: number | undefined,
    receivedMonoNs: bigint,
    entropy: Buffer | null,
    bootId: [source: string, target: string] | null,
    hostname: string | null,
  ): { done: number; error?: string };
}

export interface ReadableWatch {
  pause(): void;
  resume(): void;
  /** Stops watching for good (then the fd may be closed). */
  close(): void;
}

export const READABLE = 1;
export const HANG_UP = 2;

export const RESTORED_CLOCK = 1;
export const RESTORED_ENTROPY = 2;
export const RESTORED_BOOT_ID = 4;
export const RESTORED_HOSTNAME = 8;

/** An errno the addon threw (its `code` is the errno name: ENOENT, EACCES, …). */
export function isErrno(err: unknown, ...codes: string[]): boolean {
  return err instanceof Error && codes.includes((err as NodeJS.ErrnoException).code ?? '');
}

/** Loads the addon at `path`; undefined (and a line on stderr) when it cannot be loaded. */
export function loadNative(path: string): NativeAddon | undefined {
  const module = { exports: {} as Partial<NativeAddon> };
  try {
    process.dlopen(module, path);
  } catch (err) {
    process.stderr.write(
      `agentbox-guest: ${path} not loaded (${(err as Error).message}); using node's spawn\n`,
    );
    return undefined;
  }
  const addon = module.exports;
  return typeof addon.spawn === 'function' &&
    typeof addon.watchExit === 'function' &&
    typeof addon.restore === 'function'
    ? (addon as NativeAddon)
    : undefined;
}

/** Decodes a wait status (as waitpid returns it). */
export function decodeWaitStatus(status: number): { exitCode: number | null; signal: number | null } {
  const signal = status & 0x7f;
  return signal === 0 ? { exitCode: (status >> 8) & 0xff, signal: null } : { exitCode: null, signal };
}
