import { randomBytes, randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { GUEST_LANG, JOURNAL_END_OFFSET } from '@agentbox/protocol';
import type { VmResources, VmTemplate } from '../backend.js';
import { runCommand } from '../command.js';
import type { Image } from '../image/manifest.js';
import { TEMPLATE_FILES, TEMPLATE_REVISION, type TemplateStore } from '../template-store.js';
import { killProcessesMentioning } from './proc.js';
import { QemuVm, newIdentity, type QemuVmOptions } from './qemu-vm.js';

const BUILD_LOCK_TIMEOUT_MS = 10 * 60_000;

/**
 * Run in the template before the snapshot: put the shell, coreutils and what a box's set-up reads
 * in the guest page cache (clones share those pages and skip the disk reads).
 */
export const TEMPLATE_SETTLE_SCRIPT =
  'sh -c true; ls / >/dev/null; ' +
  // The box CA is appended to this bundle at every box's set-up (see box-egress.ts).
  'cat /etc/ssl/certs/ca-certificates.crt >/dev/null; true';

/**
 * Runs, in the template, the calls every clone makes first: restore, box set-up, exec. V8's
 * compiled code for them is in the guest RAM the clones share, so a clone only pays for TCG
 * translating it (which no snapshot can keep), not for compiling it too. The restore also
 * bind-mounts the boot id, so a clone's restore only rewrites the file.
 */
async function warmUp(vm: QemuVm): Promise<void> {
  const guest = vm.guest;
  for (let i = 0; i < 3; i++) {
    await guest.restore({ entropy: randomBytes(64), nonce: randomUUID(), identity: newIdentity('agentbox') });
  }
  for (let i = 0; i < 20; i++) await guest.ping();
  const scratch = '/run/agentbox/warm-up';
  for (let i = 0; i < 3; i++) {
    await guest.mkdir(scratch, true);
    await guest.writeFile(`${scratch}/f`, Buffer.from('warm'), { mode: 0o600, makeParents: true });
    await guest.readFileBuffer(`${scratch}/f`);
    await guest.stat(`${scratch}/f`);
    await guest.list(scratch);
    await guest.remove(scratch, true);
    await guest.listProcesses();
  }
  // With arguments as a box's set-up and its callers pass them: V8 compiles what it first meets
  // (an env var's name is checked by a regular expression, compiled on its first use), and in a
  // clone that compiling cost ~100-150 ms of its first configure. The value is the agent's default,
  // so the template's environment stays as it was.
  const env = { LANG: GUEST_LANG };
  for (let i = 0; i < 3; i++) await guest.configure(env);
  for (let i = 0; i < 3; i++) await guest.exec({ argv: ['true'], env, cwd: '/root', timeoutMs: 60_000 });
  for (let i = 0; i < 8; i++) await guest.exec({ argv: ['true'] });
  for (let i = 0; i < 3; i++)
    await guest.exec({ argv: ['sh', '-c', 'echo warm'] }, { onStdout: () => undefined });
  // A task's agent runs journaled (its stdin read into a file first, its output followed from
  // files), a path no other call takes: compiled here, not in every clone's first task.
  for (let i = 0; i < 3; i++) {
    const journal = `warm-up-${i}`;
    await guest.exec(
      {
        argv: ['bash', '-c', 'cat >/dev/null; echo warm; echo warm >&2'],
        env,
        cwd: '/root',
        timeoutMs: 60_000,
        journal,
      },
      { stdin: Buffer.from('warm'), onStdout: () => undefined, onStderr: () => undefined },
    );
    await guest.forgetExec(journal);
  }
  // A background command: a watched journaled exec left once it started, its output read and the
  // read cut, its exit watched, its state asked: paths of their own, each ~0.1 s in a fresh clone.
  for (let i = 0; i < 3; i++) {
    const journal = `warm-up-bg-${i}`;
    const started = new AbortController();
    await guest
      .exec(
        {
          argv: ['sh', '-c', 'echo warm; echo warm >&2; sleep 0.1'],
          env,
          cwd: '/root',
          journal,
          watch: true,
        },
        { onStarted: () => started.abort(), signal: started.signal },
      )
      .catch(() => undefined);
    await guest.statExec(journal);
    const reading = new AbortController();
    await guest
      .attachExec(
        { journal, stdoutOffset: 0, stderrOffset: 0, watch: true },
        { onStdout: () => reading.abort(), signal: reading.signal },
      )
      .catch(() => undefined);
    const end = JOURNAL_END_OFFSET;
    await guest.attachExec({ journal, stdoutOffset: end, stderrOffset: end, watch: true });
    await guest.forgetExec(journal);
  }
  // A box's first connection out goes through the in-box egress proxy, whose code had never run
  // here: in each clone V8 compiled it first (~0.1 s of that connection). The template has no
  // egress, so the host answers each with its 403; plain HTTP and CONNECT take the same path.
  for (let i = 0; i < 3; i++) await guest.exec({ argv: ['sh', '-c', EGRESS_WARM_UP_SCRIPT] });
}

/** Connections through the in-box egress proxy (HTTP_PROXY is in every exec's environment). */
const EGRESS_WARM_UP_SCRIPT =
  'curl -s -o /dev/null --max-time 20 http://warm-up.invalid/; ' +
  'curl -s -o /dev/null --max-time 20 https://warm-up.invalid/; true';

/** Steps of a template build, for progress bars. */
export const TEMPLATE_BUILD_STEPS = 5;

/** Called as a template build moves on (a CLI draws a bar in a TTY, plain lines otherwise). */
export type TemplateProgress = (step: { index: number; total: number; message: string }) => void;

/**
 * Boots a template VM (RAM on a shared file), lets it settle, quiesces the guest (its restore
 * helper starts, its disks are flushed), and saves its device state. One cold boot.
 */
export async function buildTemplate(options: {
  store: TemplateStore;
  id: string;
  image: Image;
  resources: VmResources;
  vm: QemuVmOptions;
  qemuVersion: string;
  bootTimeoutMs?: number;
  onProgress?: TemplateProgress;
  /** Aborted: the template VM is killed and the build fails (its QEMU must not outlive us). */
  signal?: AbortSignal;
}): Promise<VmTemplate> {
  const { store, id } = options;
  const step = (index: number, message: string) =>
    options.onProgress?.({ index, total: TEMPLATE_BUILD_STEPS, message: `template ${id}: ${message}` });
  const release = await store.lock(id, BUILD_LOCK_TIMEOUT_MS);
  try {
    const existing = store.read(id);
    if (existing) return existing;
    // A build whose process died (we hold the lock): its QEMU may still run.
    await store.clearStaleBuilds(id, (dir) => killProcessesMentioning(dir));
    const dir = await store.buildDir(id);
    const vm = new QemuVm(
      {
        id,
        image: options.image,
        resources: options.resources,
        ...(options.bootTimeoutMs ? { bootTimeoutMs: options.bootTimeoutMs } : {}),
      },
      dir,
      { ...options.vm, detached: false },
      path.join(dir, TEMPLATE_FILES.ram),
    );
    const abort = () => void vm.kill().catch(() => undefined);
    options.signal?.addEventListener('abort', abort, { once: true });
    try {
      options.signal?.throwIfAborted();
      step(1, 'creating its disk');
      await runCommand('qemu-img', [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-F',
        'raw',
        '-b',
        options.image.rootfsPath,
        path.join(dir, TEMPLATE_FILES.disk),
        `${options.resources.diskGib}G`,
      ]);
      step(2, 'booting (one cold boot)');
      const bootStarted = performance.now();
      await vm.start();
      const bootMs = performance.now() - bootStarted;
      step(3, 'settling and warming up the guest');
      const settle = await vm.guest.exec({ argv: ['sh', '-c', TEMPLATE_SETTLE_SCRIPT], timeoutMs: 60_000 });
      if (settle.exitCode !== 0) throw new Error(`template settle script failed (${settle.exitCode})`);
      const quiesced = await vm.guest.quiesce();
      if (!quiesced.helper)
        throw new Error('the guest restore helper did not start (agentbox-spawn, or python3 without it)');
      await warmUp(vm);
      step(4, 'saving the snapshot');
      const statePath = path.join(dir, TEMPLATE_FILES.state);
      const snapshotMs = await vm.saveTemplate(statePath);
      for (const f of ['guest.sock', 'qmp.sock']) await fsp.rm(path.join(dir, f), { force: true });
      const published = await store.publish(dir, {
        id,
        revision: TEMPLATE_REVISION,
        imageId: options.image.manifest.id,
        resources: options.resources,
        qemuVersion: options.qemuVersion,
        accel: options.vm.accel,
        tbSizeMib: options.vm.tbSizeMib ?? null,
        createdAt: Date.now(),
        bootMs: Math.round(bootMs),
        snapshotMs: Math.round(snapshotMs),
        stateBytes: (await fsp.stat(statePath)).size,
        diskBytes: (await fsp.stat(path.join(dir, TEMPLATE_FILES.disk))).size,
      });
      step(5, `ready (boot ${Math.round(bootMs)} ms, snapshot ${Math.round(snapshotMs)} ms)`);
      return published;
    } catch (err) {
      await vm.kill().catch(() => undefined);
      await fsp.rm(dir, { recursive: true, force: true });
      throw err;
    } finally {
      options.signal?.removeEventListener('abort', abort);
    }
  } finally {
    release();
  }
}
