import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import type { Vm, VmBackend, VmDiskUse, VmExit, VmMemoryUse, VmSpec, VmState } from '../backend.js';
import { GuestConnection, type GuestConnectionOptions } from '../guest-connection.js';

export interface FakeBackendOptions {
  /** The bundled guest agent (packages/guest/dist/agent.cjs). */
  agentBundlePath: string;
  /** Extra agent arguments, e.g. `--protocol-version 99` to provoke a mismatch. */
  agentArgs?: string[];
  guest?: GuestConnectionOptions;
  /** What a VM's disk takes on the host (the fake has no disk file); default: none. */
  diskUse?: (id: string) => VmDiskUse | undefined;
  /** What each VM holds of the host's memory (tests of the memory guard); default: unknown. */
  memoryUse?: (id: string) => VmMemoryUse | undefined;
}

/**
 * FOR UNIT TESTS ONLY: a "VM" that is the real guest agent running as a host process, connected
 * over a unix socket. It exercises the channel protocol and the lifecycle contract in milliseconds;
 * it isolates nothing.
 */
export class FakeBackend implements VmBackend {
  readonly name = 'fake';

  constructor(private readonly options: FakeBackendOptions) {}

  create(spec: VmSpec): Promise<Vm> {
    return Promise.resolve(new FakeVm(spec.id, this.options));
  }
}

class FakeVm implements Vm {
  readonly guest: GuestConnection;
  readonly exited: Promise<VmExit>;
  private resolveExited!: (exit: VmExit) => void;
  private currentState: VmState = 'created';
  private child: ChildProcess | undefined;
  private server: net.Server | undefined;
  private dir: string | undefined;

  constructor(
    readonly id: string,
    private readonly options: FakeBackendOptions,
  ) {
    this.guest = new GuestConnection({ ...options.guest, vmId: id });
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));
  }

  get state(): VmState {
    return this.currentState;
  }

  diskUse(): VmDiskUse | undefined {
    return this.options.diskUse?.(this.id);
  }

  memoryUse(): VmMemoryUse | undefined {
    return this.options.memoryUse?.(this.id);
  }

  get pid(): number | undefined {
    return this.currentState === 'running' || this.currentState === 'paused' ? this.child?.pid : undefined;
  }

  async start(): Promise<void> {
    if (this.currentState !== 'created')
      throw new AgentboxError('invalid_state', `cannot start VM ${this.id} while it is ${this.currentState}`);
    this.currentState = 'starting';
    this.dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'agentbox-fake-'));
    const socketPath = path.join(this.dir, 'guest.sock');
    this.server = net.createServer((socket) => this.guest.attach(socket));
    await new Promise<void>((resolve) => this.server!.listen(socketPath, resolve));
    const child = spawn(
      process.execPath,
      [
        this.options.agentBundlePath,
        '--connect',
        socketPath,
        '--proxy-port',
        '0',
        // The VM's own disk, as a real box's journals are on its disk.
        '--journal-root',
        path.join(this.dir, 'journals'),
        ...(this.options.agentArgs ?? []),
      ],
      {
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    this.child = child;
    child.once('exit', (code, signal) => {
      if (this.currentState !== 'destroyed') this.currentState = 'stopped';
      this.guest.close(new AgentboxError('vm_exited', `VM ${this.id} exited`));
      this.server?.close();
      // The dir holds only the socket, useless once the agent is gone; a fake VM that is never
      // destroyed (a daemon stopped with its boxes kept) would leave it in /tmp otherwise.
      if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
      this.resolveExited({ code, signal });
    });
    try {
      await this.guest.waitForHello();
    } catch (err) {
      await this.kill();
      throw err;
    }
    this.currentState = 'running';
  }

  /** Pause = SIGSTOP of the agent process: calls wait, as they do on a paused VM. */
  pause(): Promise<void> {
    if (this.currentState !== 'running')
      throw new AgentboxError('invalid_state', `cannot pause VM ${this.id} while it is ${this.currentState}`);
    this.child?.kill('SIGSTOP');
    this.currentState = 'paused';
    return Promise.resolve();
  }

  resume(): Promise<void> {
    if (this.currentState !== 'paused')
      throw new AgentboxError(
        'invalid_state',
        `cannot resume VM ${this.id} while it is ${this.currentState}`,
      );
    this.child?.kill('SIGCONT');
    this.currentState = 'running';
    return Promise.resolve();
  }

  /** The fake cannot save a process: hibernate is refused, as by a backend without snapshots. */
  hibernate(): Promise<{ stateBytes: number; ms: number }> {
    return Promise.reject(new AgentboxError('snapshot_failed', 'the fake backend cannot hibernate'));
  }

  async stop(): Promise<void> {
    if (this.currentState === 'paused') await this.resume();
    if (this.currentState !== 'running')
      throw new AgentboxError('invalid_state', `cannot stop VM ${this.id} while it is ${this.currentState}`);
    this.child?.kill('SIGTERM');
    await this.exited;
  }

  async kill(): Promise<void> {
    if (!this.child) {
      this.currentState = 'stopped';
      this.resolveExited({ code: null, signal: null });
      return;
    }
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }

  async destroy(): Promise<void> {
    if (this.currentState === 'destroyed') return;
    await this.kill();
    this.currentState = 'destroyed';
    if (this.dir) await fsp.rm(this.dir, { recursive: true, force: true });
  }
}
