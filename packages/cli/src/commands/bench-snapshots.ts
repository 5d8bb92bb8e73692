import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { DEFAULT_RESOURCES, type Vm, type VmTemplate } from '@agentbox/vm';
import type { Runtime } from '../runtime.js';

/** Snapshot figures of `agentbox bench` (issue 7's budgets are in docs/performance.md). */
export interface SnapshotBenchResult {
  /** Template build (one cold boot + warm-up + snapshot); 0 when it was already built. */
  templateBuildMs: number;
  /**
   * A clone restored on demand, as the daemon does by default: the standby clone (its VM process
   * started and the template's state loaded ahead, the guest not yet run) is taken and started,
   * and the next standby is made once its first exec was answered; take → restore → first exec
   * answered; median of 10.
   */
  cloneStartMs: number;
  /** Restore phases of those clones (medians): state loaded (~0), guest hello, restore op done. */
  clonePhasesMs: { loaded: number; hello: number; restored: number };
  /**
   * A fresh clone's first connection through its egress proxy (curl → in-box proxy → host, which
   * answers 403 here: the bench sets no egress policy), to the response's first byte; and its
   * second. Medians over 3 clones; curl's own first run is taken before.
   */
  cloneFirstEgressMs: number;
  cloneNextEgressMs: number;
  /** The same without a standby (`serve --no-standby`): create → QEMU start → load → … → exec. */
  cloneStartNoStandbyMs: number;
  clonePhasesNoStandbyMs: { loaded: number; hello: number; restored: number };
  /** resume of a paused warm-pool clone → first exec answered; median of 10. */
  warmStartMs: number;
  /** pause + resume (clock reset) + a ping answered, on a running clone; median of 10. */
  pauseResumeMs: number;
  /** running → hibernated (snapshot written, QEMU gone); median of 3. */
  hibernateMs: number;
  /** hibernated → first exec answered; median of 3. */
  hibernateWakeMs: number;
  hibernateStateMiB: number;
  /** Rise of the host's used memory (MemTotal − MemAvailable) with 20 idle clones, ÷ 20. */
  idleCloneMiB: number;
  /** Private (anonymous) RSS of one idle clone's QEMU, median of the 20. */
  idleCloneAnonMiB: number;
  /** Idle clones held at once, counting up to 50 or until the host reaches 80% memory used. */
  maxIdleBoxes: number;
  /** Host memory used (%) with them all. */
  hostMemUsedPct: number;
  /**
   * Host CPU idle (%) over 10 s before any clone exists: on a shared machine other work counts,
   * so compare the figures below with it.
   */
  hostCpuIdlePctBaseline: number;
  /** Host CPU idle (%) over 10 s with them all paused; and the CPU their QEMUs used meanwhile. */
  hostCpuIdlePctPaused: number;
  clonesCpuPctPaused: number;
  /** The same with them all running idle (not paused), for comparison. */
  hostCpuIdlePctRunning: number;
  clonesCpuPctRunning: number;
  tbSizeMib: number | null;
  samples: {
    cloneStartMs: number[];
    cloneStartNoStandbyMs: number[];
    warmStartMs: number[];
    hibernateWakeMs: number[];
  };
}

const MiB = 2 ** 20;
/** Two connections through the box's egress proxy after curl ran once; prints seconds to first byte. */
const EGRESS_PROBE =
  'curl -s -o /dev/null file:///etc/hostname; ' +
  'for i in 1 2; do curl -s -o /dev/null -w "%{time_starttransfer}\\n" http://bench.invalid/; done';
const MAX_IDLE_BOXES = 50;
const IDLE_SAMPLE = 20;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length === 0 ? NaN : sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const round = (n: number, digits = 0) => Math.round(n * 10 ** digits) / 10 ** digits;

/** Host memory in use: what the kernel could not hand out without swapping or evicting. */
function hostUsedBytes(): { used: number; total: number } {
  const info = fs.readFileSync('/proc/meminfo', 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(info)?.[1] ?? 0) * 1024;
  return { used: kb('MemTotal') - kb('MemAvailable'), total: kb('MemTotal') };
}

function hostCpuTicks(): { idle: number; total: number } {
  const fields = fs
    .readFileSync('/proc/stat', 'utf8')
    .split('\n')[0]!
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  // idle + iowait count as idle.
  return { idle: fields[3]! + (fields[4] ?? 0), total: fields.reduce((a, b) => a + b, 0) };
}

function processTicks(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}

function anonRssBytes(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/^RssAnon:\s+(\d+)/m.exec(status)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

/** Host CPU idle % and the CPU (% of one core) the given processes used, over `ms`. */
async function watchCpu(pids: number[], ms: number): Promise<{ hostIdlePct: number; procPct: number }> {
  const ticksPerSecond = 100;
  const before = hostCpuTicks();
  const procBefore = pids.map(processTicks);
  const started = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const after = hostCpuTicks();
  const seconds = (performance.now() - started) / 1000;
  const used = pids.map(processTicks).reduce((sum, t, i) => sum + (t - procBefore[i]!), 0);
  return {
    hostIdlePct: ((after.idle - before.idle) / Math.max(1, after.total - before.total)) * 100,
    procPct: (used / ticksPerSecond / seconds) * 100,
  };
}

/** [first, second] connection through a clone's egress proxy, ms to the first byte of the answer. */
async function probeEgress(vm: Vm): Promise<[number, number]> {
  const out: Buffer[] = [];
  await vm.guest.exec(
    { argv: ['sh', '-c', EGRESS_PROBE], timeoutMs: 60_000 },
    { onStdout: (chunk) => void out.push(Buffer.from(chunk)) },
  );
  const [first, next] = Buffer.concat(out).toString('utf8').trim().split('\n').map(Number);
  if (!(first! > 0 && next! > 0)) throw new Error(`egress probe printed ${JSON.stringify(out.join(''))}`);
  return [first! * 1000, next! * 1000];
}

const benchId = () => `bench-${randomBytes(4).toString('hex')}`;

/** Clones, pause/resume, hibernate/wake, and the density of idle clones on this host. */
export async function benchSnapshots(
  runtime: Runtime,
  log: (line: string) => void,
): Promise<SnapshotBenchResult> {
  const { backend, image } = runtime;
  const resources = DEFAULT_RESOURCES;
  const vms = new Set<Vm>();
  const created = async (template: VmTemplate): Promise<Vm> => {
    const vm = await backend.create({
      id: benchId(),
      image,
      resources,
      restoreFrom: { kind: 'template', template },
    });
    vms.add(vm);
    return vm;
  };
  const clone = async (template: VmTemplate): Promise<Vm> => {
    const vm = await created(template);
    await vm.start();
    return vm;
  };
  /** What the daemon keeps ready (BoxTemplates' standby). */
  const standby = async (template: VmTemplate): Promise<Vm> => {
    const vm = await created(template);
    await vm.preload!();
    return vm;
  };
  const drop = async (vm: Vm) => {
    vms.delete(vm);
    await vm.destroy();
  };
  try {
    let started = performance.now();
    const existing = await backend.findTemplate(image, resources);
    const template = existing ?? (await backend.ensureTemplate(image, resources));
    const templateBuildMs = existing ? 0 : performance.now() - started;
    log(
      `bench: template ${template.id}${existing ? ' (already built)' : ` built in ${round(templateBuildMs)} ms`}`,
    );

    const newPhases = () => ({ loaded: [] as number[], hello: [] as number[], restored: [] as number[] });
    const addPhases = (phases: ReturnType<typeof newPhases>, vm: Vm) => {
      const info = vm.restoreInfo!;
      phases.loaded.push(info.loadMs);
      phases.hello.push(info.helloMs);
      phases.restored.push(info.totalMs);
    };
    const medianPhases = (phases: ReturnType<typeof newPhases>) => ({
      loaded: round(median(phases.loaded)),
      hello: round(median(phases.hello)),
      restored: round(median(phases.restored)),
    });
    const coldVmmStarts: number[] = [];
    const coldVmmPhases = newPhases();
    for (let i = 0; i < 10; i++) {
      started = performance.now();
      const vm = await clone(template);
      await vm.guest.exec({ argv: ['true'] });
      coldVmmStarts.push(performance.now() - started);
      addPhases(coldVmmPhases, vm);
      await drop(vm);
    }
    log(`bench: clone start without a standby ${coldVmmStarts.map((s) => round(s)).join(', ')} ms`);
    const starts: number[] = [];
    const phases = newPhases();
    const firstEgress: number[] = [];
    const nextEgress: number[] = [];
    let next = await standby(template);
    for (let i = 0; i < 10; i++) {
      started = performance.now();
      const vm = next;
      await vm.start();
      await vm.guest.exec({ argv: ['true'] });
      starts.push(performance.now() - started);
      addPhases(phases, vm);
      if (i < 3) {
        const [first, next] = await probeEgress(vm);
        firstEgress.push(first);
        nextEgress.push(next);
      }
      // As the daemon does: the next standby is made once the box that took this one is ready.
      if (i < 9) next = await standby(template);
      await drop(vm);
    }
    log(`bench: clone start ${starts.map((s) => round(s)).join(', ')} ms`);
    log(
      `bench: a clone's first egress connection ${firstEgress.map((s) => round(s)).join(', ')} ms, its second ${nextEgress.map((s) => round(s)).join(', ')} ms`,
    );

    // Warm pool: restored, first execs done, paused; taking one = resume + exec.
    const pool: Vm[] = [];
    for (let i = 0; i < 10; i++) {
      const vm = await clone(template);
      for (let j = 0; j < 2; j++) await vm.guest.exec({ argv: ['true'] });
      await vm.pause();
      pool.push(vm);
    }
    const warm: number[] = [];
    for (const vm of pool) {
      started = performance.now();
      await vm.resume();
      await vm.guest.exec({ argv: ['true'] });
      warm.push(performance.now() - started);
    }
    log(`bench: warm-pool start ${warm.map((s) => round(s)).join(', ')} ms`);
    for (const vm of pool.slice(1)) await drop(vm);

    const vm = pool[0]!;
    const pauses: number[] = [];
    for (let i = 0; i < 10; i++) {
      started = performance.now();
      await vm.pause();
      await vm.resume();
      await vm.guest.ping();
      pauses.push(performance.now() - started);
    }
    const hibernates: number[] = [];
    const wakes: number[] = [];
    const stateBytes: number[] = [];
    let current = vm;
    for (let i = 0; i < 3; i++) {
      started = performance.now();
      const saved = await current.hibernate();
      hibernates.push(performance.now() - started);
      stateBytes.push(saved.stateBytes);
      vms.delete(current);
      started = performance.now();
      current = await backend.create({
        id: current.id,
        image,
        resources,
        restoreFrom: { kind: 'hibernation' },
      });
      vms.add(current);
      await current.start();
      await current.guest.exec({ argv: ['true'] });
      wakes.push(performance.now() - started);
    }
    await drop(current);
    log(
      `bench: pause+resume ${round(median(pauses), 1)} ms, hibernate ${round(median(hibernates))} ms, wake ${round(median(wakes))} ms`,
    );

    // Density: idle clones until 50 or 80% of host memory.
    const cpuBaseline = await watchCpu([], 10_000);
    const baseline = hostUsedBytes();
    const idle: Vm[] = [];
    let sample: { used: number; anon: number[] } | undefined;
    while (idle.length < MAX_IDLE_BOXES) {
      if (hostUsedBytes().used / baseline.total >= 0.8) break;
      const c = await clone(template);
      await c.guest.exec({ argv: ['true'] });
      idle.push(c);
      if (idle.length === IDLE_SAMPLE) {
        await new Promise((r) => setTimeout(r, 3_000));
        sample = { used: hostUsedBytes().used, anon: idle.map((v) => anonRssBytes(v.pid!)) };
        log(
          `bench: ${IDLE_SAMPLE} idle clones: +${round((sample.used - baseline.used) / MiB)} MiB host memory`,
        );
      }
    }
    await new Promise((r) => setTimeout(r, 2_000));
    const pids = idle.map((v) => v.pid!);
    const running = await watchCpu(pids, 10_000);
    for (const c of idle) await c.pause();
    const paused = await watchCpu(pids, 10_000);
    const atMax = hostUsedBytes();
    log(
      `bench: ${idle.length} idle clones; host CPU idle ${round(running.hostIdlePct)}% running, ${round(paused.hostIdlePct)}% paused ` +
        `(${round(cpuBaseline.hostIdlePct)}% before any clone); their QEMUs used ${round(running.procPct)}% / ${round(paused.procPct)}% of a core`,
    );
    return {
      templateBuildMs: round(templateBuildMs),
      cloneStartMs: round(median(starts)),
      clonePhasesMs: medianPhases(phases),
      cloneFirstEgressMs: round(median(firstEgress)),
      cloneNextEgressMs: round(median(nextEgress), 1),
      cloneStartNoStandbyMs: round(median(coldVmmStarts)),
      clonePhasesNoStandbyMs: medianPhases(coldVmmPhases),
      warmStartMs: round(median(warm), 1),
      pauseResumeMs: round(median(pauses), 1),
      hibernateMs: round(median(hibernates)),
      hibernateWakeMs: round(median(wakes)),
      hibernateStateMiB: round(median(stateBytes) / MiB),
      idleCloneMiB: sample ? round((sample.used - baseline.used) / MiB / IDLE_SAMPLE, 1) : NaN,
      idleCloneAnonMiB: sample ? round(median(sample.anon) / MiB, 1) : NaN,
      maxIdleBoxes: idle.length,
      hostMemUsedPct: round((atMax.used / atMax.total) * 100, 1),
      hostCpuIdlePctBaseline: round(cpuBaseline.hostIdlePct, 1),
      hostCpuIdlePctPaused: round(paused.hostIdlePct, 1),
      clonesCpuPctPaused: round(paused.procPct, 1),
      hostCpuIdlePctRunning: round(running.hostIdlePct, 1),
      clonesCpuPctRunning: round(running.procPct, 1),
      tbSizeMib: backend.tbSizeMib ?? null,
      samples: {
        cloneStartMs: starts.map((s) => round(s)),
        cloneStartNoStandbyMs: coldVmmStarts.map((s) => round(s)),
        warmStartMs: warm.map((s) => round(s, 1)),
        hibernateWakeMs: wakes.map((s) => round(s)),
      },
    };
  } finally {
    await Promise.all([...vms].map((v) => v.destroy().catch(() => undefined)));
  }
}
