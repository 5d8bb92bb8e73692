import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import type { Vm, VmBackend, VmExit, VmSpec, VmState } from '../backend.js';
import { runCommand } from '../command.js';
import { GuestConnection, type GuestConnectionOptions } from '../guest-connection.js';
import { boxesDir } from '../paths.js';
import { AdoptedQemuVm, type AdoptSpec } from './adopted-vm.js';
import { qemuArgs, type Accel, type QemuLaunchSpec } from './args.js';
import { connectMonitor, listenUnix, waitForHello } from './host-sockets.js';
import type { QmpClient } from './qmp.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
const DEFAULT_BOOT_TIMEOUT_MS = 90_000;
const STOP_GRACE_MS = 5_000;
const ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

export interface QemuBackendOptions {
  home: string;
  accel: Accel;
  tscKhz: number | undefined;
  diskCache?: QemuLaunchSpec['diskCache'];
  qemuBinary?: string;
  extraKernelArgs?: string[];
  guest?: GuestConnectionOptions;
  /**
   * Run QEMU in its own process group with stderr to <box dir>/qemu.log, so VMs outlive this host
   * process (the daemon re-adopts them); default false: a Ctrl-C of `agentbox run` reaches them.
   */
  detached?: boolean;
}

/** The QEMU `microvm` driver: one qemu-system process per box, a qcow2 overlay on the read-only base. */
export class QemuBackend implements VmBackend {
  readonly name = 'qemu';

  constructor(private readonly options: QemuBackendOptions) {}

  async create(spec: VmSpec): Promise<Vm> {
    if (!ID_PATTERN.test(spec.id))
      throw new AgentboxError('invalid_request', `invalid VM id ${JSON.stringify(spec.id)}`);
    const dir = path.join(boxesDir(this.options.home), spec.id);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const disk = path.join(dir, 'disk.qcow2');
    await runCommand('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'raw',
      '-b',
      spec.image.rootfsPath,
      disk,
      `${spec.resources.diskGib}G`,
    ]).catch(async (err: unknown) => {
      await fsp.rm(dir, { recursive: true, force: true });
      throw err;
    });
    return new QemuVm(spec, dir, this.options);
  }

  /** Re-attaches to a VM a previous host process started; resolves once its guest says hello. */
  async adopt(spec: AdoptSpec): Promise<Vm> {
    if (!ID_PATTERN.test(spec.id))
      throw new AgentboxError('invalid_request', `invalid VM id ${JSON.stringify(spec.id)}`);
    const vm = new AdoptedQemuVm(spec, path.join(boxesDir(this.options.home), spec.id), this.options.guest);
    await vm.attach();
    return vm;
  }
}

class QemuVm implements Vm {
  readonly guest: GuestConnection;
  readonly exited: Promise<VmExit>;
  private resolveExited!: (exit: VmExit) => void;
  private currentState: VmState = 'created';
  private child: ChildProcess | undefined;
  private qmp: QmpClient | undefined;
  private servers: net.Server[] = [];
  private stderrTail = '';

  constructor(
    private readonly spec: VmSpec,
    private readonly dir: string,
    private readonly options: QemuBackendOptions,
  ) {
    this.guest = new GuestConnection(options.guest);
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));
  }

  get id(): string {
    return this.spec.id;
  }

  get state(): VmState {
    return this.currentState;
  }

  get pid(): number | undefined {
    return this.currentState === 'running' || this.currentState === 'starting' ? this.child?.pid : undefined;
  }

  private file(name: string): string {
    return path.join(this.dir, name);
  }

  private require(op: string, ...states: VmState[]): void {
    if (!states.includes(this.currentState)) {
      throw new AgentboxError('invalid_state', `cannot ${op} VM ${this.id} while it is ${this.currentState}`);
    }
  }

  async start(): Promise<void> {
    this.require('start', 'created');
    this.currentState = 'starting';
    const launch: QemuLaunchSpec = {
      accel: this.options.accel,
      memoryMib: this.spec.resources.memoryMib,
      vcpus: this.spec.resources.vcpus,
      kernelPath: this.spec.image.kernelPath,
      initrdPath: this.spec.image.initrdPath,
      diskPath: this.file('disk.qcow2'),
      diskCache: this.options.diskCache ?? 'unsafe',
      guestSocketPath: this.file('guest.sock'),
      qmpSocketPath: this.file('qmp.sock'),
      consolePath: this.file('console.log'),
      tscKhz: this.options.tscKhz,
      ...(this.options.extraKernelArgs ? { extraKernelArgs: this.options.extraKernelArgs } : {}),
    };
    await listenUnix(this.servers, launch.guestSocketPath, (socket) => this.guest.attach(socket));
    await listenUnix(this.servers, launch.qmpSocketPath, (socket) => {
      this.qmp = connectMonitor(socket, this.guest);
    });

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
    child.once('exit', (code, signal) => this.onExit({ code, signal }));
    child.once('error', () => this.onExit({ code: null, signal: null }));

    try {
      await spawned;
      const timeoutMs = this.spec.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
      await waitForHello(
        this.guest,
        this.exited,
        timeoutMs,
        () =>
          new AgentboxError(
            'boot_failed',
            `VM ${this.id} did not answer within ${timeoutMs / 1000}s${this.diagnostics()}`,
          ),
        (exit) =>
          new AgentboxError(
            'boot_failed',
            `VM ${this.id} exited during boot (${exit.signal ?? `code ${exit.code}`})${this.diagnostics()}`,
          ),
      );
    } catch (err) {
      await this.kill().catch(() => undefined);
      throw err;
    }
    this.currentState = 'running';
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
    if (this.currentState !== 'destroyed') this.currentState = 'stopped';
    this.guest.close(
      new AgentboxError('vm_exited', `VM ${this.id} exited (${exit.signal ?? `code ${exit.code}`})`),
    );
    this.qmp?.close();
    for (const server of this.servers) server.close();
    this.servers = [];
    this.resolveExited(exit);
  }

  private alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(): Promise<void> {
    this.require('stop', 'running');
    await Promise.race([this.guest.sync(), new Promise((r) => setTimeout(r, STOP_GRACE_MS))]).catch(
      () => undefined,
    );
    await this.qmp?.execute('quit').catch(() => undefined);
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), STOP_GRACE_MS);
    await this.exited;
    clearTimeout(timer);
  }

  async kill(): Promise<void> {
    if (this.currentState === 'created') {
      this.currentState = 'stopped';
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
    await fsp.rm(this.dir, { recursive: true, force: true });
  }
}
