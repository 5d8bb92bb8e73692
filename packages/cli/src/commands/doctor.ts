import fs from 'node:fs';
import os from 'node:os';
import {
  AGENT_CLIS,
  agentboxHome,
  agentClisFromEnv,
  DEFAULT_AGENT_CLIS,
  type AccelVerdict,
  type AgentCli,
} from '@agentbox/vm';
import { missingPackages } from '../prerequisites.js';
import { accelVerdict, findBuiltImage, qemuVersion } from '../runtime.js';

export interface DoctorProblem {
  problem: string;
  fix: string;
}

export interface DoctorReport {
  ok: boolean;
  home: string;
  qemu: { installed: boolean; version: string | null };
  accel: AccelVerdict | { error: string };
  image: {
    status: 'ok' | 'missing' | 'invalid';
    id: string | null;
    dir: string | null;
    builtAt: string | null;
    message: string | null;
  };
  host: {
    cpus: number;
    memTotalMiB: number;
    memAvailableMiB: number;
    diskFreeGiB: number | null;
    missingPackages: string[];
  };
  problems: DoctorProblem[];
}

function memAvailableMiB(): number {
  const match = /^MemAvailable:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return match ? Math.floor(Number(match[1]) / 1024) : Math.floor(os.freemem() / 2 ** 20);
}

function diskFreeGiB(dir: string): number | null {
  for (let d = dir; ; d = d.slice(0, d.lastIndexOf('/')) || '/') {
    try {
      const st = fs.statfsSync(d);
      return Math.round(((st.bavail * st.bsize) / 2 ** 30) * 10) / 10;
    } catch {
      if (d === '/') return null;
    }
  }
}

/** Checks the host and says, for each problem, the command that fixes it. */
export async function doctor(): Promise<DoctorReport> {
  const home = agentboxHome();
  const problems: DoctorProblem[] = [];
  const version = await qemuVersion();
  if (!version) problems.push({ problem: 'qemu-system-x86_64 is not installed', fix: 'agentbox setup' });
  const missing = await missingPackages();
  if (missing.length > 0)
    problems.push({ problem: `missing host packages: ${missing.join(' ')}`, fix: 'agentbox setup' });

  let agents: AgentCli[];
  try {
    agents = agentClisFromEnv();
  } catch (err) {
    agents = [...DEFAULT_AGENT_CLIS];
    problems.push({
      problem: (err as Error).message,
      fix: `set AGENTBOX_AGENTS to a comma-separated list of ${Object.keys(AGENT_CLIS).join(', ')}, or unset it`,
    });
  }
  const found = findBuiltImage(home, agents);
  const missingImage = `no image has been built with the agent CLIs ${agents.join(',')}`;
  const image: DoctorReport['image'] = found.image
    ? {
        status: 'ok',
        id: found.image.manifest.id,
        dir: found.image.dir,
        builtAt: found.image.manifest.builtAt,
        message: null,
      }
    : found.error
      ? { status: 'invalid', id: null, dir: null, builtAt: null, message: found.error.message }
      : { status: 'missing', id: null, dir: null, builtAt: null, message: missingImage };
  if (image.status === 'missing')
    problems.push({ problem: missingImage, fix: `agentbox image build --agents ${agents.join(',')}` });
  if (image.status === 'invalid')
    problems.push({
      problem: `the image is unusable: ${image.message}`,
      fix: 'agentbox image build --force',
    });

  let accel: DoctorReport['accel'];
  try {
    accel = await accelVerdict(home, found.image);
  } catch (err) {
    accel = { error: (err as Error).message };
    problems.push({
      problem: (err as Error).message,
      fix: 'unset AGENTBOX_ACCEL or set it to auto, kvm or tcg',
    });
  }

  const memAvail = memAvailableMiB();
  if (memAvail < 1024)
    problems.push({
      problem: `only ${memAvail} MiB of memory available`,
      fix: 'stop other VMs or processes; each box needs its memory size plus ~300 MiB',
    });
  const disk = diskFreeGiB(home);
  if (disk !== null && disk < 3)
    problems.push({
      problem: `only ${disk} GiB free under ${home}`,
      fix: `free disk space or set AGENTBOX_HOME to a larger disk`,
    });

  return {
    ok: problems.length === 0,
    home,
    qemu: { installed: version !== undefined, version: version ?? null },
    accel,
    image,
    host: {
      cpus: os.cpus().length,
      memTotalMiB: Math.floor(os.totalmem() / 2 ** 20),
      memAvailableMiB: memAvail,
      diskFreeGiB: disk,
      missingPackages: missing,
    },
    problems,
  };
}

export function formatDoctor(report: DoctorReport): string {
  const lines = [
    `home:   ${report.home}`,
    `qemu:   ${report.qemu.version ?? 'not installed'}`,
    'error' in report.accel
      ? `accel:  error: ${report.accel.error}`
      : `accel:  ${report.accel.accel} (kvm ${report.accel.kvm}: ${report.accel.reason})`,
    `image:  ${report.image.status}${report.image.id ? ` ${report.image.id} built ${report.image.builtAt}` : ''}`,
    `host:   ${report.host.cpus} cpus, ${report.host.memAvailableMiB}/${report.host.memTotalMiB} MiB memory available, ${report.host.diskFreeGiB ?? '?'} GiB disk free`,
  ];
  if (report.problems.length === 0) lines.push('ok: ready to run boxes');
  for (const p of report.problems) lines.push(`problem: ${p.problem}\n  fix: ${p.fix}`);
  return lines.join('\n');
}
