import fs from 'node:fs';

/**
 * Host process identity from /proc, for live processes only. A pid alone is not an identity (pids
 * are reused); the pair (pid, start time in clock ticks since boot, field 22 of /proc/<pid>/stat) is.
 */
export function processStartTime(pid: number): number | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state). A zombie is dead, only not yet reaped: a VM whose parent died is
  // reparented to PID 1, which on some hosts (containers) never reaps it.
  if (rest[0] === 'Z' || rest[0] === 'X') return undefined;
  // Field 22 is rest[19].
  const value = Number(rest[19]);
  return Number.isFinite(value) ? value : undefined;
}

/** The process's argv, or undefined if it is gone (or a zombie without one). */
export function processCmdline(pid: number): string[] | undefined {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw ? raw.replace(/\0$/, '').split('\0') : undefined;
  } catch {
    return undefined;
  }
}

/** The process's anonymous resident memory (RssAnon), in bytes; undefined if it is gone. */
export function privateMemoryBytes(pid: number): number | undefined {
  try {
    const kib = /^RssAnon:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kib === undefined ? undefined : Number(kib) * 1024;
  } catch {
    return undefined;
  }
}

/** The host's MemAvailable (what can be used without swapping), in bytes; undefined if unreadable. */
export function availableMemoryBytes(): number | undefined {
  try {
    const kib = /^MemAvailable:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1];
    return kib === undefined ? undefined : Number(kib) * 1024;
  } catch {
    return undefined;
  }
}

/**
 * Added to a VM process's OOM score: should the host run out of memory all the same, the kernel
 * ends a box (the largest first) rather than the daemon, its store or the host's own services.
 */
export const VM_OOM_SCORE_ADJ = 500;

/** Marks a VM process as the OOM killer's first choice (see VM_OOM_SCORE_ADJ); best effort. */
export function preferForOomKill(pid: number): void {
  try {
    fs.writeFileSync(`/proc/${pid}/oom_score_adj`, String(VM_OOM_SCORE_ADJ));
  } catch {
    // gone already, or no /proc: nothing to mark
  }
}

/** True while the process that had this start time is alive (not reaped and not a zombie). */
export function isSameProcess(pid: number, startTime: number): boolean {
  return processStartTime(pid) === startTime;
}

/** Pids of live processes one of whose arguments contains `text` (e.g. a box's runtime dir). */
export function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const argv = processCmdline(pid);
    if (argv?.some((arg) => arg.includes(text))) pids.push(pid);
  }
  return pids;
}

const KILL_WAIT_MS = 5_000;

/**
 * SIGKILLs these processes (each known by pid and start time, so a reused pid is spared) and
 * resolves once they are gone. A killed QEMU is not gone at once (tearing down a few GiB of mapped
 * guest RAM takes a while on a busy host): a caller that removes its dir or reports it clean must
 * not race that exit. Gives up after `timeoutMs` (a process stuck in the kernel); the pids still
 * alive then are returned.
 */
export async function killProcesses(
  targets: readonly { pid: number; startTime: number }[],
  timeoutMs = KILL_WAIT_MS,
): Promise<number[]> {
  let alive = targets.filter((t) => isSameProcess(t.pid, t.startTime));
  for (const { pid } of alive) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + timeoutMs;
  while ((alive = alive.filter((t) => isSameProcess(t.pid, t.startTime))).length > 0) {
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return alive.map((t) => t.pid);
}

/** killProcesses() for every live process mentioning `text` (e.g. a box's runtime dir). */
export function killProcessesMentioning(text: string, timeoutMs = KILL_WAIT_MS): Promise<number[]> {
  const targets = processesMentioning(text).flatMap((pid) => {
    const startTime = processStartTime(pid);
    return startTime === undefined ? [] : [{ pid, startTime }];
  });
  return killProcesses(targets, timeoutMs);
}
