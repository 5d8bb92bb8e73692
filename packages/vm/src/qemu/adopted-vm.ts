import fsp from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import type { Vm, VmDiskUse, VmExit, VmMemoryUse, VmState, VmUser } from '../backend.js';
import { GuestConnection, type GuestConnectionOptions } from '../guest-connection.js';
import { hibernateVm } from './hibernation.js';
import { watchConsoleLog } from './console-log.js';
import { isSameProcess, privateMemoryBytes, processCmdline } from './proc.js';
import { BoxDisk, connectMonitor, listenVmSockets, vmSocketPaths, waitForHello } from './host-sockets.js';
import type { QmpClient } from './qmp.js';
import { pauseVcpus, resumeVcpus } from './snapshot.js';

const DEFAULT_ADOPT_TIMEOUT_MS = 15_000;
const DEFAULT_POLL_MS = 1_000;
const STOP_GRACE_MS = 5_000;
const SNAPSHOT_TIMEOUT_MS = 180_000;

export interface AdoptSpec {
  /** Box id; its runtime dir is <home>/boxes/<id>. */
  id: string;
  /** Host pid of the running qemu-system process. */
  pid: number;
  /** Its start time (field 22 of /proc/<pid>/stat), recorded when it was spawned. */
  startTime: number;
  /** How long to wait for QEMU to reconnect and the guest agent to say hello. */
  timeoutMs?: number;
  /** How often to check that the process is still alive. */
  pollMs?: number;
  /** The user it was started to run as (VmSpec.runAs): its sockets are elsewhere (socketDirOf). */
  runAs?: VmUser;
}

/**
 * QEMU run states in which the vCPUs are stopped and the guest cannot answer until `cont`;
 * `io-error`: stopped on a disk write the host's filesystem had no room for.
 */
const STOPPED_RUN_STATES = new Set(['paused', 'postmigrate', 'prelaunch', 'suspended', 'io-error']);

/**
 * A QEMU VM started by an earlier host process. QEMU connects to our sockets as a client with
 * `reconnect=1`, so listening again on the same paths is enough: QEMU comes back within about a
 * second and the guest agent answers a fresh hello. The VM is not our child, so its exit is seen by
 * the monitor connection closing and by polling its pid + start time.
 */
export class AdoptedQemuVm implements Vm {
  readonly guest: GuestConnection;
  readonly exited: Promise<VmExit>;
  private resolveExited!: (exit: VmExit) => void;
  private currentState: VmState = 'starting';
  private qmp: QmpClient | undefined;
  private qmpWaiters: ((qmp: QmpClient) => void)[] = [];
  private servers: net.Server[] = [];
  private poller: NodeJS.Timeout | undefined;
  private unwatchConsole: (() => void) | undefined;
  private gone = false;
  private readonly disk: BoxDisk;

  constructor(
    private readonly spec: AdoptSpec,
    private readonly boxDir: string,
    guestOptions: GuestConnectionOptions = {},
  ) {
    this.guest = new GuestConnection({ ...guestOptions, vmId: spec.id });
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));
    this.disk = new BoxDisk(path.join(boxDir, 'disk.qcow2'));
  }

  diskUse(): VmDiskUse | undefined {
    return this.disk.use();
  }

  memoryUse(): VmMemoryUse | undefined {
    const pid = this.pid;
    const privateBytes = pid === undefined ? undefined : privateMemoryBytes(pid);
    return privateBytes === undefined ? undefined : { privateBytes };
  }

  get id(): string {
    return this.spec.id;
  }

  get state(): VmState {
    return this.currentState;
  }

  get pid(): number | undefined {
    return ['running', 'starting', 'paused'].includes(this.currentState) ? this.spec.pid : undefined;
  }

  get dir(): string {
    return this.boxDir;
  }

  /** The QMP client once QEMU has reconnected and negotiated. */
  monitor(): Promise<QmpClient> {
    if (this.qmp) return this.qmp.ready.then(() => this.qmp!);
    return new Promise((resolve, reject) => {
      this.qmpWaiters.push((qmp) => qmp.ready.then(() => resolve(qmp), reject));
      void this.exited.then(() => reject(new AgentboxError('vm_exited', `VM ${this.id} exited`)));
    });
  }

  private alive(): boolean {
    return isSameProcess(this.spec.pid, this.spec.startTime);
  }

  /**
   * starting → running once the guest says hello, or → paused when QEMU reports its vCPUs stopped
   * (a paused box stays paused across a daemon restart); throws (leaving the VM alone) otherwise.
   */
  async attach(): Promise<void> {
    if (!this.alive()) {
      this.onExit();
      throw new AgentboxError('vm_exited', `VM ${this.id} (pid ${this.spec.pid}) is no longer running`);
    }
    const sockets = vmSocketPaths(this.boxDir, this.spec.id, this.spec.runAs);
    await listenVmSockets(this.servers, sockets, this.spec.runAs, {
      guest: (socket) => this.guest.attach(socket),
      qmp: (socket) => {
        this.qmp?.close();
        const qmp = connectMonitor(socket, this.guest, this.disk);
        this.qmp = qmp;
        qmp.on('close', () => this.check());
        for (const w of this.qmpWaiters.splice(0)) w(qmp);
      },
    });
    this.poller = setInterval(() => this.check(), this.spec.pollMs ?? DEFAULT_POLL_MS);
    this.poller.unref();
    // Only a console QEMU appends to may be cut in place (older VMs write at their own offset).
    if (
      processCmdline(this.spec.pid)?.some(
        (arg) => arg.startsWith('file,id=console,') && arg.endsWith(',append=on'),
      )
    )
      this.unwatchConsole = watchConsoleLog(path.join(this.boxDir, 'console.log'));
    const timeoutMs = this.spec.timeoutMs ?? DEFAULT_ADOPT_TIMEOUT_MS;
    try {
      const paused = this.monitor().then(async (qmp) => {
        const status = (await qmp.execute('query-status')) as { status?: string };
        if (status.status === 'io-error') this.disk.stalled = true;
        return STOPPED_RUN_STATES.has(status.status ?? '');
      });
      const hello = waitForHello(
        this.guest,
        this.exited,
        timeoutMs,
        () =>
          new AgentboxError(
            'guest_unreachable',
            `VM ${this.id} (pid ${this.spec.pid}) did not reconnect within ${timeoutMs / 1000}s`,
          ),
        () => new AgentboxError('vm_exited', `VM ${this.id} exited while it was being re-adopted`),
      );
      // Whichever comes first: a paused VM never says hello until it is resumed.
      const outcome = await Promise.race([
        hello.then(() => 'running' as const),
        paused.then((p) => (p ? ('paused' as const) : hello.then(() => 'running' as const))),
      ]);
      hello.catch(() => undefined);
      if (this.currentState === 'starting') this.currentState = outcome;
    } catch (err) {
      this.release();
      throw err;
    }
  }

  private check(): void {
    if (!this.gone && !this.alive()) this.onExit();
  }

  /** Stops listening without touching the VM (used when adoption is abandoned). */
  private release(): void {
    clearInterval(this.poller);
    this.unwatchConsole?.();
    this.qmp?.close();
    for (const server of this.servers) server.close();
    this.servers = [];
  }

  private onExit(): void {
    if (this.gone) return;
    this.gone = true;
    if (this.currentState !== 'destroyed' && this.currentState !== 'hibernated')
      this.currentState = 'stopped';
    this.guest.close(new AgentboxError('vm_exited', `VM ${this.id} exited`));
    this.release();
    this.resolveExited({ code: null, signal: null });
  }

  start(): Promise<void> {
    return Promise.reject(
      new AgentboxError('invalid_state', `cannot start VM ${this.id} while it is ${this.currentState}`),
    );
  }

  private require(op: string, ...states: VmState[]): void {
    if (!states.includes(this.currentState))
      throw new AgentboxError('invalid_state', `cannot ${op} VM ${this.id} while it is ${this.currentState}`);
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
    const timer = setTimeout(() => void this.kill(), STOP_GRACE_MS);
    await this.waitGone();
    clearTimeout(timer);
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
    // An adopted paused VM has not said hello to this host yet.
    await waitForHello(
      this.guest,
      this.exited,
      this.spec.timeoutMs ?? DEFAULT_ADOPT_TIMEOUT_MS,
      () => new AgentboxError('guest_unreachable', `VM ${this.id} did not answer after resuming`),
      () => new AgentboxError('vm_exited', `VM ${this.id} exited while resuming`),
    );
    await this.guest.restore({});
  }

  async hibernate(): Promise<{ stateBytes: number; ms: number }> {
    this.require('hibernate', 'running', 'paused');
    if (this.currentState === 'paused') await this.resume();
    const result = await hibernateVm(
      {
        id: this.id,
        dir: this.boxDir,
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

  private async waitGone(): Promise<void> {
    while (!this.gone) {
      this.check();
      if (this.gone) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async kill(): Promise<void> {
    if (this.alive()) {
      try {
        process.kill(this.spec.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await this.waitGone();
  }

  async destroy(): Promise<void> {
    if (this.currentState === 'destroyed') return;
    await this.kill();
    this.currentState = 'destroyed';
    await fsp.rm(this.boxDir, { recursive: true, force: true });
    const sockets = vmSocketPaths(this.boxDir, this.spec.id, this.spec.runAs).dir;
    if (sockets !== this.boxDir) await fsp.rm(sockets, { recursive: true, force: true });
  }
}
