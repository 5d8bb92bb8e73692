import fsp from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import type { Vm, VmExit, VmState } from '../backend.js';
import { GuestConnection, type GuestConnectionOptions } from '../guest-connection.js';
import { isSameProcess } from './proc.js';
import { connectMonitor, listenUnix, waitForHello } from './host-sockets.js';
import type { QmpClient } from './qmp.js';

const DEFAULT_ADOPT_TIMEOUT_MS = 15_000;
const DEFAULT_POLL_MS = 1_000;
const STOP_GRACE_MS = 5_000;

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
}

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
  private servers: net.Server[] = [];
  private poller: NodeJS.Timeout | undefined;
  private gone = false;

  constructor(
    private readonly spec: AdoptSpec,
    private readonly dir: string,
    guestOptions: GuestConnectionOptions = {},
  ) {
    this.guest = new GuestConnection(guestOptions);
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));
  }

  get id(): string {
    return this.spec.id;
  }

  get state(): VmState {
    return this.currentState;
  }

  get pid(): number | undefined {
    return this.currentState === 'running' || this.currentState === 'starting' ? this.spec.pid : undefined;
  }

  private alive(): boolean {
    return isSameProcess(this.spec.pid, this.spec.startTime);
  }

  /** starting → running once the guest says hello; throws (leaving the VM alone) if it does not. */
  async attach(): Promise<void> {
    if (!this.alive()) {
      this.onExit();
      throw new AgentboxError('vm_exited', `VM ${this.id} (pid ${this.spec.pid}) is no longer running`);
    }
    await listenUnix(this.servers, path.join(this.dir, 'guest.sock'), (socket) => this.guest.attach(socket));
    await listenUnix(this.servers, path.join(this.dir, 'qmp.sock'), (socket) => {
      this.qmp?.close();
      this.qmp = connectMonitor(socket, this.guest);
      this.qmp.on('close', () => this.check());
    });
    this.poller = setInterval(() => this.check(), this.spec.pollMs ?? DEFAULT_POLL_MS);
    this.poller.unref();
    const timeoutMs = this.spec.timeoutMs ?? DEFAULT_ADOPT_TIMEOUT_MS;
    try {
      await waitForHello(
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
    } catch (err) {
      this.release();
      throw err;
    }
    if (this.currentState === 'starting') this.currentState = 'running';
  }

  private check(): void {
    if (!this.gone && !this.alive()) this.onExit();
  }

  /** Stops listening without touching the VM (used when adoption is abandoned). */
  private release(): void {
    clearInterval(this.poller);
    this.qmp?.close();
    for (const server of this.servers) server.close();
    this.servers = [];
  }

  private onExit(): void {
    if (this.gone) return;
    this.gone = true;
    if (this.currentState !== 'destroyed') this.currentState = 'stopped';
    this.guest.close(new AgentboxError('vm_exited', `VM ${this.id} exited`));
    this.release();
    this.resolveExited({ code: null, signal: null });
  }

  start(): Promise<void> {
    return Promise.reject(
      new AgentboxError('invalid_state', `cannot start VM ${this.id} while it is ${this.currentState}`),
    );
  }

  async stop(): Promise<void> {
    if (this.currentState !== 'running')
      throw new AgentboxError('invalid_state', `cannot stop VM ${this.id} while it is ${this.currentState}`);
    await Promise.race([this.guest.sync(), new Promise((r) => setTimeout(r, STOP_GRACE_MS))]).catch(
      () => undefined,
    );
    await this.qmp?.execute('quit').catch(() => undefined);
    const timer = setTimeout(() => void this.kill(), STOP_GRACE_MS);
    await this.waitGone();
    clearTimeout(timer);
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
    await fsp.rm(this.dir, { recursive: true, force: true });
  }
}
