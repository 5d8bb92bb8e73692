import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { agentboxHome, boxesDir } from '../packages/vm/src/paths.js';
import type { Vm, VmResources } from '../packages/vm/src/backend.js';
import { openRuntime, type Runtime } from '../packages/cli/src/runtime.js';
import { E2E_AGENTS } from './e2e-image.js';

export { E2E_AGENTS, E2E_IMAGE_ENV } from './e2e-image.js';

/**
 * E2E tests use the agentbox home of the machine (AGENTBOX_HOME or ~/.agentbox) so the image built
 * by the README commands is shared, not rebuilt; each test destroys the boxes it made.
 */
export function testHome(): string {
  return agentboxHome();
}

let runtime: Promise<Runtime> | undefined;
/** The runtime of the e2e image (all agent CLIs), built once by test/e2e-global-setup.ts. */
export function sharedRuntime(): Promise<Runtime> {
  runtime ??= openRuntime({ agents: E2E_AGENTS });
  return runtime;
}

const live = new Set<Vm>();

/** Boots a real VM with the real guest agent; `destroyAll` in afterAll removes it. */
export async function bootBox(resources: Partial<VmResources> = {}, prefix = 'e2e'): Promise<Vm> {
  const rt = await sharedRuntime();
  const vm = await rt.backend.create({
    id: `${prefix}-${randomBytes(5).toString('hex')}`,
    image: rt.image,
    resources: { memoryMib: 512, vcpus: 1, diskGib: 2, ...resources },
  });
  live.add(vm);
  await vm.start();
  return vm;
}

export async function destroyAll(): Promise<void> {
  await Promise.all([...live].map((vm) => vm.destroy()));
  live.clear();
}

/** QEMU processes whose command line mentions this box id. */
export function qemuProcessesFor(id: string): number[] {
  let out = '';
  try {
    out = execFileSync('pgrep', ['-f', `qemu-system.*${id}`], { encoding: 'utf8' });
  } catch {
    return [];
  }
  return out.split('\n').filter(Boolean).map(Number);
}

/** Asserts nothing of a box is left: no qemu process, no runtime dir (overlay, sockets). */
export function leftovers(id: string): { processes: number[]; files: boolean } {
  return { processes: qemuProcessesFor(id), files: fs.existsSync(path.join(boxesDir(testHome()), id)) };
}

export async function run(vm: Vm, script: string, opts: { stdin?: Buffer; timeoutMs?: number } = {}) {
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  const exit = await vm.guest.exec(
    { argv: ['sh', '-c', script], ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) },
    {
      onStdout: (c) => void stdout.push(c),
      onStderr: (c) => void stderr.push(c),
      ...(opts.stdin ? { stdin: opts.stdin } : {}),
    },
  );
  return { exit, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr).toString() };
}
