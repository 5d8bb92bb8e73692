import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { benchEgress, type EgressBenchResult } from '@agentbox/egress';
import { DEFAULT_RESOURCES, type Vm } from '@agentbox/vm';
import { openRuntime, type Runtime } from '../runtime.js';
import { benchSnapshots, type SnapshotBenchResult } from './bench-snapshots.js';

export interface BenchResult {
  accel: string;
  /** qemu start → first exec answered; median of 3 cold boots. */
  coldBootMs: number;
  /** Guest agent ping round trip; median of 1000. */
  pingRttMs: number;
  /** `/bin/true` run through the guest agent; median of 50. */
  execTrueMs: number;
  /** `/bin/true` fork+exec cost from a shell loop inside the guest: the emulator's floor. */
  execFloorMs: number;
  /** Host RSS of one idle VM (qemu process). */
  idleRssMiB: number;
  /** Host CPU of one idle VM over 5 s, % of one core. */
  idleCpuPct: number;
  /** 100 MiB file read out of the box through the guest agent. */
  downloadMBps: number;
  /** 100 MiB of stdout through the guest agent. */
  stdoutMBps: number;
  /** What the egress gateway adds, on loopback (no VM): p50 latencies and throughput. */
  egress: EgressBenchResult;
  /** Clones, warm pool, pause/resume, hibernate/wake, idle density (absent with --no-snapshots). */
  snapshots?: SnapshotBenchResult;
  /** coldBootMs ÷ cloneStartMs (and ÷ warmStartMs). */
  cloneSpeedup?: number;
  warmSpeedup?: number;
  /** The budgets on this host (issue 3's always, issue 7's with snapshots), each with its figure. */
  budgets: Record<string, Budget>;
  samples: { coldBootMs: number[] };
  image: string;
}

export interface Budget {
  value: number;
  limit: number;
  ok: boolean;
}

const check = (value: number, limit: number, atMost = true): Budget => ({
  value,
  limit,
  ok: atMost ? value <= limit : value >= limit,
});

/** The foundation budgets (issue 3): boot, round trip, exec against the emulator's floor, throughput. */
export function foundationBudgets(
  r: Pick<
    BenchResult,
    'coldBootMs' | 'pingRttMs' | 'execTrueMs' | 'execFloorMs' | 'downloadMBps' | 'stdoutMBps'
  >,
): Record<string, Budget> {
  return {
    coldBootMs: check(r.coldBootMs, 6000),
    pingRttMs: check(r.pingRttMs, 1),
    execTrueMsVsFloor: check(round(r.execTrueMs / r.execFloorMs), 1.5),
    downloadMBps: check(r.downloadMBps, 40, false),
    stdoutMBps: check(r.stdoutMBps, 40, false),
  };
}

/** The snapshot budgets (issue 7), checked against one run's figures. */
export function snapshotBudgets(coldBootMs: number, s: SnapshotBenchResult): Record<string, Budget> {
  return {
    cloneStartMsVsColdBoot: check(s.cloneStartMs, Math.round(coldBootMs / 25)),
    cloneStartMs: check(s.cloneStartMs, 200),
    warmStartMsVsColdBoot: check(s.warmStartMs, Math.round(coldBootMs / 25)),
    warmStartMs: check(s.warmStartMs, 200),
    idleCloneMiB: check(s.idleCloneMiB, 96),
    maxIdleBoxes: check(s.maxIdleBoxes, 50, false),
    hostCpuIdlePctPaused: check(s.hostCpuIdlePctPaused, 80, false),
    /** What the paused clones themselves cost: none of a core. */
    clonesCpuPctPaused: check(s.clonesCpuPctPaused, 1),
  };
}

const MiB = 2 ** 20;
const TRANSFER_BYTES = 100 * MiB;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;

async function bootOnce(runtime: Runtime): Promise<{ vm: Vm; ms: number }> {
  const vm = await runtime.backend.create({
    id: `bench-${randomBytes(4).toString('hex')}`,
    image: runtime.image,
    resources: DEFAULT_RESOURCES,
  });
  const started = performance.now();
  try {
    await vm.start();
    await vm.guest.exec({ argv: ['true'] });
  } catch (err) {
    await vm.destroy();
    throw err;
  }
  return { vm, ms: performance.now() - started };
}

function procStat(pid: number): { rssBytes: number; cpuTicks: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  return { rssBytes: rssKb * 1024, cpuTicks: Number(fields[11]) + Number(fields[12]) };
}

/** Lets a booted box settle for 2 s, then watches its qemu process for 5 s. */
async function watchIdle(vm: Vm): Promise<{ rssBytes: number; cpuPct: number }> {
  await new Promise((r) => setTimeout(r, 2000));
  const pid = vm.pid!;
  const ticksPerSecond = 100;
  const before = procStat(pid);
  const started = performance.now();
  await new Promise((r) => setTimeout(r, 5000));
  const after = procStat(pid);
  const seconds = (performance.now() - started) / 1000;
  return {
    rssBytes: after.rssBytes,
    cpuPct: ((after.cpuTicks - before.cpuTicks) / ticksPerSecond / seconds) * 100,
  };
}

async function shellOutput(vm: Vm, script: string): Promise<string> {
  let out = '';
  const exit = await vm.guest.exec(
    { argv: ['sh', '-c', script] },
    { onStdout: (c) => void (out += c.toString()) },
  );
  if (exit.exitCode !== 0) throw new Error(`bench step failed: ${script}`);
  return out.trim();
}

/** Runs every measurement in one go, on this host, and returns one JSON-able object. */
export async function bench(
  log: (line: string) => void,
  options: { snapshots?: boolean } = {},
): Promise<BenchResult> {
  const runtime = await openRuntime();
  log(`bench: accel ${runtime.accel.accel}, image ${runtime.image.manifest.id}`);
  const boots: number[] = [];
  const main = await bootOnce(runtime);
  boots.push(main.ms);
  const vm = main.vm;
  try {
    let idle: { rssBytes: number; cpuPct: number } | undefined;
    for (let i = 0; i < 2; i++) {
      const extra = await bootOnce(runtime);
      boots.push(extra.ms);
      // Idle figures come from a freshly booted box that has done nothing but boot.
      if (i === 1) idle = await watchIdle(extra.vm);
      await extra.vm.destroy();
    }
    log(`bench: cold boots ${boots.map((b) => b.toFixed(0)).join(', ')} ms`);

    const pings: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const t = performance.now();
      await vm.guest.ping();
      pings.push(performance.now() - t);
    }
    // 50 execs and the floor (fork+exec of /bin/true from a shell loop in the guest, median of 5
    // loops of 20) taken in turns, so that the ratio of the two compares the same moments of a
    // host whose speed drifts.
    const execs: number[] = [];
    const floors: number[] = [];
    for (let i = 0; i < 5; i++) {
      for (let j = 0; j < 10; j++) {
        const t = performance.now();
        await vm.guest.exec({ argv: ['/bin/true'] });
        execs.push(performance.now() - t);
      }
      const loopUs = Number(
        await shellOutput(
          vm,
          's=$(date +%s%N); i=0; while [ $i -lt 20 ]; do /bin/true; i=$((i+1)); done; e=$(date +%s%N); echo $(( (e-s)/1000 ))',
        ),
      );
      floors.push(loopUs / 1000 / 20);
    }
    const execFloorMs = median(floors);
    log(
      `bench: ping ${median(pings).toFixed(3)} ms, exec true ${median(execs).toFixed(1)} ms, floor ${execFloorMs.toFixed(1)} ms`,
    );

    let t = performance.now();
    let received = 0;
    // dd writes 1 MiB blocks, so the figure is the agent's path, not a producer's small writes.
    await vm.guest.exec(
      { argv: ['dd', 'if=/dev/zero', 'bs=1M', `count=${TRANSFER_BYTES / MiB}`, 'status=none'] },
      { onStdout: (c) => void (received += c.length) },
    );
    const stdoutMs = performance.now() - t;
    if (received !== TRANSFER_BYTES)
      throw new Error(`stdout bench received ${received} of ${TRANSFER_BYTES} bytes`);

    await shellOutput(vm, `head -c ${TRANSFER_BYTES} /dev/zero > /tmp/bench.bin`);
    received = 0;
    t = performance.now();
    await vm.guest.readFile('/tmp/bench.bin', (c) => void (received += c.length));
    const downloadMs = performance.now() - t;
    if (received !== TRANSFER_BYTES)
      throw new Error(`download bench received ${received} of ${TRANSFER_BYTES} bytes`);
    await vm.guest.remove('/tmp/bench.bin');
    log(
      `bench: stdout ${(TRANSFER_BYTES / MiB / (stdoutMs / 1000)).toFixed(0)} MB/s, download ${(TRANSFER_BYTES / MiB / (downloadMs / 1000)).toFixed(0)} MB/s`,
    );

    await vm.destroy();
    const foundation = {
      coldBootMs: round(median(boots), 0),
      pingRttMs: round(median(pings), 3),
      execTrueMs: round(median(execs), 1),
      execFloorMs: round(execFloorMs, 1),
      downloadMBps: round(TRANSFER_BYTES / MiB / (downloadMs / 1000), 1),
      stdoutMBps: round(TRANSFER_BYTES / MiB / (stdoutMs / 1000), 1),
    };
    const { coldBootMs } = foundation;
    const snapshots = options.snapshots === false ? undefined : await benchSnapshots(runtime, log);
    return {
      accel: runtime.accel.accel,
      ...foundation,
      ...(snapshots
        ? {
            snapshots,
            cloneSpeedup: round(coldBootMs / snapshots.cloneStartMs, 1),
            warmSpeedup: round(coldBootMs / snapshots.warmStartMs, 1),
          }
        : {}),
      budgets: {
        ...foundationBudgets(foundation),
        ...(snapshots ? snapshotBudgets(coldBootMs, snapshots) : {}),
      },
      idleRssMiB: round(idle!.rssBytes / MiB, 0),
      idleCpuPct: round(idle!.cpuPct, 1),
      egress: await benchEgress(),
      samples: { coldBootMs: boots.map((b) => round(b, 0)) },
      image: runtime.image.manifest.id,
    };
  } finally {
    await vm.destroy();
  }
}

export function formatBench(r: BenchResult): string {
  return [
    `accel          ${r.accel}`,
    `coldBootMs     ${r.coldBootMs}  (samples ${r.samples.coldBootMs.join(', ')})`,
    `pingRttMs      ${r.pingRttMs}`,
    `execTrueMs     ${r.execTrueMs}  (floor ${r.execFloorMs}, ratio ${(r.execTrueMs / r.execFloorMs).toFixed(2)})`,
    `idleRssMiB     ${r.idleRssMiB}`,
    `idleCpuPct     ${r.idleCpuPct}`,
    `downloadMBps   ${r.downloadMBps}`,
    `stdoutMBps     ${r.stdoutMBps}`,
    `egress         connect p50 +${r.egress.connectLatencyMs.added} ms, request p50 +${r.egress.requestLatencyMs.added} ms, ` +
      `tunnel ${r.egress.throughputMBps.tunnel} MB/s (direct ${r.egress.throughputMBps.direct})`,
    ...(r.snapshots ? formatSnapshots(r.snapshots, r) : []),
    ...Object.entries(r.budgets).map(
      ([name, b]) => `budget         ${b.ok ? 'ok  ' : 'MISS'} ${name} ${b.value} (limit ${b.limit})`,
    ),
  ].join('\n');
}

function formatSnapshots(s: SnapshotBenchResult, r: BenchResult): string[] {
  return [
    `cloneStartMs   ${s.cloneStartMs}  (${r.cloneSpeedup}× faster than a cold boot; from the standby: hello ${s.clonePhasesMs.hello}, restored ${s.clonePhasesMs.restored})`,
    `               ${s.cloneStartNoStandbyMs}  without a standby (loaded ${s.clonePhasesNoStandbyMs.loaded}, hello ${s.clonePhasesNoStandbyMs.hello}, restored ${s.clonePhasesNoStandbyMs.restored})`,
    `cloneEgressMs  ${s.cloneFirstEgressMs}  (a clone's first connection out, to the first byte; its second ${s.cloneNextEgressMs})`,
    `warmStartMs    ${s.warmStartMs}  (${r.warmSpeedup}×; from the warm pool)`,
    `pauseResumeMs  ${s.pauseResumeMs}`,
    `hibernateMs    ${s.hibernateMs}  (state ${s.hibernateStateMiB} MiB; wake → exec ${s.hibernateWakeMs} ms)`,
    `idleCloneMiB   ${s.idleCloneMiB}  (QEMU anonymous RSS ${s.idleCloneAnonMiB} MiB, tb-size ${s.tbSizeMib ?? 'default'})`,
    `maxIdleBoxes   ${s.maxIdleBoxes}  (host memory ${s.hostMemUsedPct}% used; CPU idle ${s.hostCpuIdlePctPaused}% paused, ` +
      `${s.hostCpuIdlePctRunning}% running, ${s.hostCpuIdlePctBaseline}% before; clones' own CPU ${s.clonesCpuPctPaused}% / ${s.clonesCpuPctRunning}%)`,
  ];
}
