import fs from 'node:fs';
import path from 'node:path';
import type { Accel } from './args.js';

export type AccelSetting = 'auto' | Accel;

export interface KvmStatus {
  /** `usable`: /dev/kvm works and the CPU exposes VT-x/AMD-V; `unusable`: present but not trustworthy; `absent`. */
  kvm: 'usable' | 'unusable' | 'absent';
  reason: string;
}

export interface AccelVerdict extends KvmStatus {
  accel: Accel;
  /** Where the choice came from: the setting, the static check, a probe boot, or the cached probe. */
  source: 'setting' | 'static' | 'probe' | 'cache';
}

export function parseAccelSetting(value: string | undefined): AccelSetting {
  if (value === undefined || value === '') return 'auto';
  if (value === 'auto' || value === 'kvm' || value === 'tcg') return value;
  throw new Error(`AGENTBOX_ACCEL must be auto, kvm or tcg (got ${JSON.stringify(value)})`);
}

/**
 * Static KVM check. A paravirtual /dev/kvm (this machine is itself a VM) is present but exposes no
 * vmx/svm flag, and stock guest kernels crash under it: that counts as unusable.
 */
export function checkKvm(cpuinfo = readOr('/proc/cpuinfo'), devKvm = '/dev/kvm'): KvmStatus {
  if (!fs.existsSync(devKvm)) return { kvm: 'absent', reason: `${devKvm} does not exist` };
  try {
    fs.accessSync(devKvm, fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return { kvm: 'unusable', reason: `${devKvm} is not readable and writable by this user` };
  }
  if (!/^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo)) {
    return {
      kvm: 'unusable',
      reason: `${devKvm} exists but the CPU exposes no vmx/svm flag (nested or paravirtual KVM; guest kernels crash under it)`,
    };
  }
  return { kvm: 'usable', reason: `${devKvm} is accessible and the CPU has hardware virtualization` };
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Host TSC in kHz from /proc/cpuinfo, for the guest's `tsc_early_khz`. */
export function hostTscKhz(cpuinfo = readOr('/proc/cpuinfo')): number | undefined {
  const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1];
  return mhz ? Math.round(Number(mhz) * 1000) : undefined;
}

interface CachedProbe {
  key: string;
  accel: Accel;
  reason: string;
}

/**
 * Picks the accelerator. `auto` takes KVM only when the static check passes *and* a probe boot under
 * KVM answered; the probe runs once and its verdict is cached under the agentbox home.
 */
export async function chooseAccel(options: {
  setting: AccelSetting;
  home: string;
  cacheKey: string;
  probeKvmBoot: () => Promise<boolean>;
}): Promise<AccelVerdict> {
  const status = checkKvm();
  if (options.setting !== 'auto') return { ...status, accel: options.setting, source: 'setting' };
  if (status.kvm !== 'usable') return { ...status, accel: 'tcg', source: 'static' };
  const cacheFile = path.join(options.home, 'accel.json');
  try {
    const cached = JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as CachedProbe;
    if (cached.key === options.cacheKey)
      return {
        kvm: cached.accel === 'kvm' ? 'usable' : 'unusable',
        reason: cached.reason,
        accel: cached.accel,
        source: 'cache',
      };
  } catch {
    // no cached verdict
  }
  const ok = await options.probeKvmBoot().catch(() => false);
  const verdict: CachedProbe = {
    key: options.cacheKey,
    accel: ok ? 'kvm' : 'tcg',
    reason: ok ? 'a probe boot under KVM answered' : 'a probe boot under KVM failed; falling back to TCG',
  };
  fs.mkdirSync(options.home, { recursive: true });
  fs.writeFileSync(cacheFile, JSON.stringify(verdict) + '\n');
  return { kvm: ok ? 'usable' : 'unusable', reason: verdict.reason, accel: verdict.accel, source: 'probe' };
}

/**
 * The environment agent CLIs run with in a box on `accel`. Under TCG, Bun's optimising JITs (Claude
 * Code's and OpenCode's runtime) cost more than they save: every piece of code they generate is
 * translated again by the emulator (`opencode --version` 22–35 s → 13–16 s, `claude -p` 17–23 s →
 * 11–13 s). On KVM they stay on.
 */
export function agentEnvFor(accel: Accel): Record<string, string> {
  return accel === 'tcg' ? { BUN_JSC_useDFGJIT: '0', BUN_JSC_useFTLJIT: '0' } : {};
}
