import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import type { Vm, VmDiskUse, VmExit, VmMemoryUse, VmRestoreInfo, VmSpec, VmState } from '../backend.js';
import { GuestConnection, type GuestConnectionOptions } from '../guest-connection.js';
import { TEMPLATE_FILES } from '../template-store.js';
import { qemuArgs, type Accel, type QemuLaunchSpec } from './args.js';
import { watchConsoleLog } from './console-log.js';
import { discardHibernation, hibernateVm, hibernationStatePath } from './hibernation.js';
import { BoxDisk, connectMonitor, listenVmSockets, vmSocketPaths, waitForHello } from './host-sockets.js';
import type { QmpClient } from './qmp.js';
import { preferForOomKill, privateMemoryBytes } from './proc.js';
import { loadState, pauseVcpus, resumeVcpus, saveState } from './snapshot.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
const DEFAULT_BOOT_TIMEOUT_MS = 90_000;
const DEFAULT_RESTORE_TIMEOUT_MS = 30_000;
const SNAPSHOT_TIMEOUT_MS = 180_000;
const STOP_GRACE_MS = 5_000;

export interface QemuVmOptions {
  accel: Accel;
  tscKhz: number | undefined;
  diskCache?: QemuLaunchSpec['diskCache'];
  qemuBinary?: string;
  extraKernelArgs?: string[];
  guest?: GuestConnectionOptions;
  detached?: boolean;
  tbSizeMib?: number;
  restoreTimeoutMs?: number;
}

/** A fresh identity for a clone: it must share nothing unique with its template or siblings. */
export function newIdentity(hostname: string) {
  return { hostname, machineId: randomBytes(16).toString('hex'), bootId: randomUUID() };
}

/**
 * One qemu-system process this host spawned: a cold boot, a clone restored from a template, a
 * box woken from hibernation, or (internally) a template being made, whose RAM is a shared file.
 */
export class QemuVm implements Vm {
  readonly guest: GuestConnection;
  readonly exited: Promise<VmExit>;
  restoreInfo: VmRestoreInfo | undefined;
  private resolveExited!: (exit: VmExit) => void;
  private currentState: VmState = 'created';
  private child: ChildProcess | undefined;
  private qmp: QmpClient | undefined;
  private qmpWaiters: ((qmp: QmpClient) => void)[] = [];
  private servers: net.Server[] = [];
  private stderrTail = '';
  private unwatchConsole: (() => void) | undefined;
  /** QEMU spawned (and a snapshot loaded): by preload() ahead of start(), or by start(). */
  private launched: Promise<void> | undefined;
  private readonly disk: BoxDisk;

  constructor(
    private readonly spec: VmSpec,
    readonly dir: string,
    private readonly options: QemuVmOptions,
    /** Internal: a template's RAM is a file shared with the snapshot it becomes. */
    private readonly templateRamPath?: string,
  ) {
    this.guest = new GuestConnection({ ...options.guest, vmId: spec.id });
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));
    this.disk = new BoxDisk(this.file('disk.qcow2'));
  }

  get id(): string {
    return this.spec.id;
  }

  diskUse(): VmDiskUse | undefined {
    return this.disk.use();
  }

  memoryUse(): VmMemoryUse | undefined {
    const pid = this.pid;
    const privateBytes = pid === undefined ? undefined : privateMemoryBytes(pid);
    return privateBytes === undefined ? undefined : { privateBytes };
  }

  get state(): VmState {
    return this.currentState;
  }

  get pid(): number | undefined {
    return ['running', 'starting', 'paused'].includes(this.currentState) ? this.child?.pid : undefined;
  }

  private file(name: string): string {
    return path.join(this.dir, name);
  }

  /** Where its sockets live (see socketDirOf). */
  private get sockets(): { dir: string; guest: string; qmp: string } {
    return vmSocketPaths(this.dir, this.spec.id, this.spec.runAs);
  }

  private require(op: string, ...states: VmState[]): void {
    if (!states.includes(this.currentState)) {
      throw new AgentboxError('invalid_state', `cannot ${op} VM ${this.id} while it is ${this.currentState}`);
    }
  }

  /** Restored from a snapshot (template or hibernation) rather than booted. */
  private restores(): boolean {
    const kind = this.spec.restoreFrom?.kind;
    return kind === 'template' || kind === 'hibernation';
  }

  private closeServers(): void {
    for (const server of this.servers) server.close();
    this.servers = [];
  }

  private launchSpec(): QemuLaunchSpec {
    const source = this.spec.restoreFrom;
    const memory: QemuLaunchSpec['memory'] = this.templateRamPath
      ? { kind: 'file', path: this.templateRamPath, share: true }
      : source?.kind === 'template'
        ? { kind: 'file', path: path.join(source.template.dir, TEMPLATE_FILES.ram), share: false }
        : { kind: 'ram' };
    return {
      accel: this.options.accel,
      memoryMib: this.spec.resources.memoryMib,
      vcpus: this.spec.resources.vcpus,
      kernelPath: this.spec.image.kernelPath,
      initrdPath: this.spec.image.initrdPath,
      diskPath: this.file('disk.qcow2'),
      diskCache: this.options.diskCache ?? 'unsafe',
      guestSocketPath: this.sockets.guest,
      qmpSocketPath: this.sockets.qmp,
      consolePath: this.file('console.log'),
      tscKhz: this.options.tscKhz,
      memory,
      ...(this.options.tbSizeMib ? { tbSizeMib: this.options.tbSizeMib } : {}),
      incoming: this.restores(),
      // A cold boot is named by its id; a clone is renamed by its restore, and a template keeps
      // the image's name (its command line is then the same for every template).
      ...(!this.restores() && !this.templateRamPath ? { hostname: this.spec.id } : {}),
      ...(this.options.extraKernelArgs ? { extraKernelArgs: this.options.extraKernelArgs } : {}),
      ...(this.spec.shares?.length ? { shares: this.spec.shares } : {}),
      ...(this.spec.runAs ? { runAs: this.spec.runAs } : {}),
    };
  }

  /** The QMP client once QEMU has connected and negotiated. */
  monitor(): Promise<QmpClient> {
    if (this.qmp) return this.qmp.ready.then(() => this.qmp!);
    return new Promise((resolve, reject) => {
      this.qmpWaiters.push((qmp) => qmp.ready.then(() => resolve(qmp), reject));
      void this.exited.then(() => reject(new AgentboxError('vm_exited', `VM ${this.id} exited`)));
    });
  }

  /**
   * created → created with QEMU up and the snapshot loaded, the guest not yet run: a later start()
   * only resumes it. For a VMM kept ready ahead of a request (its ~35 ms start and the state load
   * are off the clock); what the guest runs after start() is still translated then, on demand.
   */
  async preload(): Promise<void> {
    this.require('preload', 'created');
    if (!this.restores())
      throw new AgentboxError('invalid_state', `VM ${this.id} has no snapshot to preload`);
    this.launched ??= this.launch();
    await this.launched;
  }

  async start(): Promise<void> {
    this.require('start', 'created');
    const started = performance.now();
    const preloaded = this.launched !== undefined;
    this.launched ??= this.launch();
    this.currentState = 'starting';
    try {
      await this.launched;
      if (this.restores()) await this.restore(started, preloaded);
      else await this.awaitHello(this.spec.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS, 'boot_failed');
    } catch (err) {
      await this.kill().catch(() => undefined);
      throw err;
    }
    this.currentState = 'running';
  }

  /** Spawns QEMU on the box's sockets; with a snapshot to restore, loads it (the guest stays stopped). */
  private async launch(): Promise<void> {
    const launch = this.launchSpec();
    // Killed or destroyed while the sockets were set up: spawn nothing.
    const stopped = () => this.currentState !== 'created' && this.currentState !== 'starting';
    try {
      await listenVmSockets(this.servers, this.sockets, this.spec.runAs, {
        guest: (socket) => this.guest.attach(socket),
        qmp: (socket) => {
          this.qmp?.close();
          const qmp = connectMonitor(socket, this.guest, this.disk);
          this.qmp = qmp;
          for (const w of this.qmpWaiters.splice(0)) w(qmp);
        },
      });
    } catch (err) {
      if (!stopped()) throw err;
    }
    if (stopped()) {
      this.closeServers();
      throw new AgentboxError('vm_exited', `VM ${this.id} was stopped before it started`);
    }
    const detached = this.options.detached ?? false;
    const logFd = detached ? fs.openSync(this.file('qemu.log'), 'a') : undefined;
    const child = spawn(this.options.qemuBinary ?? QEMU_BINARY, qemuArgs(launch), {
      stdio: ['ignore', 'ignore', logFd ?? 'pipe'],
      detached,
    });
    if (logFd !== undefined) {
      fs.closeSync(logFd);
      child.unref();
    }
    this.child = child;
    if (child.pid !== undefined) preferForOomKill(child.pid);
    this.unwatchConsole = watchConsoleLog(this.file('console.log'));
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString('utf8')).slice(-4096);
    });
    const spawned = new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          err.code === 'ENOENT'
            ? new AgentboxError(
                'prerequisite_missing',
                `${QEMU_BINARY} is not installed; run \`agentbox setup\``,
              )
            : new AgentboxError('boot_failed', `could not start ${QEMU_BINARY}: ${err.message}`),
        ),
      );
    });
    child.once('exit', (code, signal) => {
      // 'exit' can come before the last of stderr is read, and that is what says why QEMU failed.
      const stderr = child.stderr;
      if (!stderr || stderr.closed) return this.onExit({ code, signal });
      const done = () => {
        clearTimeout(timer);
        stderr.off('close', done);
        this.onExit({ code, signal });
      };
      const timer = setTimeout(done, 500);
      stderr.once('close', done);
    });
    child.once('error', () => this.onExit({ code: null, signal: null }));

    try {
      await spawned;
      if (launch.incoming) await this.loadSnapshot();
    } catch (err) {
      await this.kill().catch(() => undefined);
      throw err;
    }
  }

  private snapshotFailed(err: unknown): AgentboxError {
    if (err instanceof AgentboxError && err.code === 'snapshot_failed') return err;
    const kind = this.spec.restoreFrom?.kind === 'template' ? 'template' : 'snapshot';
    return new AgentboxError(
      'snapshot_failed',
      `VM ${this.id} could not be restored from its ${kind}: ${(err as Error).message}${this.diagnostics()}`,
      { cause: err },
    );
  }

  private async loadSnapshot(): Promise<void> {
    const source = this.spec.restoreFrom!;
    const timeoutMs = this.options.restoreTimeoutMs ?? DEFAULT_RESTORE_TIMEOUT_MS;
    const statePath =
      source.kind === 'template'
        ? path.join(source.template.dir, TEMPLATE_FILES.state)
        : hibernationStatePath(this.dir);
    try {
      await loadState(await this.monitor(), statePath, {
        ignoreShared: source.kind === 'template',
        timeoutMs: source.kind === 'template' ? timeoutMs : SNAPSHOT_TIMEOUT_MS,
      });
      // Loaded: from here on the guest writes its disk, so the old snapshot must never be used again.
      if (source.kind === 'hibernation') await discardHibernation(this.dir);
    } catch (err) {
      throw this.snapshotFailed(err);
    }
  }

  /** Resumes the loaded guest and gives it the time, fresh entropy and (clone) a new identity. */
  private async restore(started: number, preloaded: boolean): Promise<void> {
    const source = this.spec.restoreFrom!;
    const timeoutMs = this.options.restoreTimeoutMs ?? DEFAULT_RESTORE_TIMEOUT_MS;
    try {
      const loadMs = performance.now() - started;
      await resumeVcpus(await this.monitor());
      await this.awaitHello(timeoutMs, 'snapshot_failed');
      const helloMs = performance.now() - started;
      const guest = await this.guest.restore({
        entropy: randomBytes(64),
        nonce: randomUUID(),
        ...(source.kind === 'template' ? { identity: newIdentity(this.spec.id) } : {}),
      });
      this.restoreInfo = {
        source: source.kind,
        preloaded,
        loadMs: Math.round(loadMs),
        helloMs: Math.round(helloMs),
        totalMs: Math.round(performance.now() - started),
        guest,
      };
    } catch (err) {
      throw this.snapshotFailed(err);
    }
  }

  private awaitHello(timeoutMs: number, code: 'boot_failed' | 'snapshot_failed'): Promise<void> {
    return waitForHello(
      this.guest,
      this.exited,
      timeoutMs,
      () =>
        new AgentboxError(
          code,
          `VM ${this.id} did not answer within ${timeoutMs / 1000}s${this.diagnostics()}`,
        ),
      (exit) =>
        new AgentboxError(
          code,
          `VM ${this.id} exited during ${code === 'boot_failed' ? 'boot' : 'restore'} (${exit.signal ?? `code ${exit.code}`})${this.diagnostics()}`,
        ),
    );
  }

  private diagnostics(): string {
    let stderr = this.stderrTail.trim();
    try {
      if (this.options.detached) stderr = fs.readFileSync(this.file('qemu.log'), 'utf8').trim().slice(-4096);
    } catch {
      // no log
    }
    let consoleTail = '';
    try {
      consoleTail = fs.readFileSync(this.file('console.log'), 'utf8').trim().split('\n').slice(-5).join('\n');
    } catch {
      // no console output
    }
    return [stderr && `\nqemu: ${stderr}`, consoleTail && `\nconsole:\n${consoleTail}`]
      .filter(Boolean)
      .join('');
  }

  private onExit(exit: VmExit): void {
    this.unwatchConsole?.();
    if (this.currentState !== 'destroyed' && this.currentState !== 'hibernated')
      this.currentState = 'stopped';
    this.guest.close(
      new AgentboxError('vm_exited', `VM ${this.id} exited (${exit.signal ?? `code ${exit.code}`})`),
    );
    this.qmp?.close();
    this.closeServers();
    this.resolveExited(exit);
  }

  private alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(): Promise<void> {
    this.require('stop', 'running', 'paused');
    if (this.currentState === 'running') {
      await Promise.race([this.guest.sync(), new Promise((r) => setTimeout(r, STOP_GRACE_MS))]).catch(
        () => undefined,
      );
    }
    await this.quit();
  }

  private async quit(): Promise<void> {
    await this.qmp?.execute('quit').catch(() => undefined);
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), STOP_GRACE_MS);
    await this.exited;
    clearTimeout(timer);
  }

  async kill(): Promise<void> {
    if (this.currentState === 'created' && !this.child) {
      this.currentState = 'stopped';
      this.closeServers();
      this.resolveExited({ code: null, signal: null });
      return;
    }
    if (this.alive()) this.child?.kill('SIGKILL');
    if (this.child) await this.exited;
  }

  async destroy(): Promise<void> {
    if (this.currentState === 'destroyed') return;
    await this.kill();
    this.currentState = 'destroyed';
    await fs.promises.rm(this.dir, { recursive: true, force: true });
    const sockets = this.sockets.dir;
    if (sockets !== this.dir) await fs.promises.rm(sockets, { recursive: true, force: true });
  }

  async pause(): Promise<void> {
    this.require('pause', 'running');
    await pauseVcpus(await this.monitor());
    this.currentState = 'paused';
  }

  async resume(): Promise<void> {
    this.require('resume', 'paused');
    this.disk.stalled = false; // `cont` retries the write QEMU stopped on
    await resumeVcpus(await this.monitor());
    this.currentState = 'running';
    // Guest time stood still while paused.
    await this.guest.restore({});
  }

  async hibernate(): Promise<{ stateBytes: number; ms: number }> {
    this.require('hibernate', 'running', 'paused');
    if (this.currentState === 'paused') await this.resume();
    const result = await hibernateVm(
      {
        id: this.id,
        dir: this.dir,
        guest: this.guest,
        monitor: () => this.monitor(),
        quit: async () => {
          this.currentState = 'hibernated';
          await this.quit();
        },
      },
      { timeoutMs: SNAPSHOT_TIMEOUT_MS },
    );
    this.currentState = 'hibernated';
    return result;
  }

  /**
   * Internal, for templates: save the device state (the RAM is the shared file already) to
   * `statePath`, and end the VM. Returns the time the snapshot took.
   */
  async saveTemplate(statePath: string): Promise<number> {
    this.require('snapshot', 'running');
    if (!this.templateRamPath) throw new AgentboxError('internal', `VM ${this.id} is not a template`);
    const qmp = await this.monitor();
    const started = performance.now();
    await saveState(qmp, statePath, { ignoreShared: true, timeoutMs: SNAPSHOT_TIMEOUT_MS });
    const ms = performance.now() - started;
    this.currentState = 'hibernated';
    await this.quit();
    return ms;
  }
}
