import type net from 'node:net';
import { EventEmitter } from 'node:events';
import { AgentboxError } from '@agentbox/protocol';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  /** When QEMU emitted it: wall-clock ms (its `timestamp`, from gettimeofday). */
  at?: number;
}

/**
 * QMP's `{seconds, microseconds}` timestamp as wall-clock ms; undefined when it is not one (QEMU
 * puts -1 when it could not read the time).
 */
export function qmpEventTime(timestamp: unknown): number | undefined {
  if (typeof timestamp !== 'object' || timestamp === null) return undefined;
  const { seconds, microseconds } = timestamp as { seconds?: unknown; microseconds?: unknown };
  if (typeof seconds !== 'number' || typeof microseconds !== 'number') return undefined;
  if (seconds < 0 || microseconds < 0) return undefined;
  return seconds * 1000 + microseconds / 1000;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/**
 * Minimal QMP client over a connected socket: capability negotiation, commands with ids, events.
 * QEMU is trusted less than our own code but more than the guest; replies are still parsed defensively.
 */
export class QmpClient extends EventEmitter<{ event: [QmpEvent]; close: [] }> {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed = false;
  readonly ready: Promise<void>;

  constructor(private readonly socket: net.Socket) {
    super();
    let greeted: () => void;
    const greeting = new Promise<void>((resolve) => (greeted = resolve));
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.buffer += text;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (line) this.onLine(line, greeted);
      }
    });
    socket.on('close', () => {
      this.closed = true;
      for (const p of this.pending.values())
        p.reject(new AgentboxError('vm_exited', 'QEMU monitor connection closed'));
      this.pending.clear();
      this.emit('close');
    });
    socket.on('error', () => undefined);
    this.ready = greeting.then(() => this.execute('qmp_capabilities').then(() => undefined));
  }

  private onLine(line: string, greeted: () => void): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if ('QMP' in msg) return greeted();
    if (typeof msg.event === 'string') {
      const at = qmpEventTime(msg.timestamp);
      this.emit('event', {
        event: msg.event,
        data: msg.data as Record<string, unknown> | undefined,
        ...(at === undefined ? {} : { at }),
      });
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const pending = id ? this.pending.get(id) : undefined;
    if (!pending || !id) return;
    this.pending.delete(id);
    if ('error' in msg) {
      const error = msg.error as { desc?: string };
      pending.reject(new AgentboxError('internal', `QMP: ${error.desc ?? 'command failed'}`));
    } else {
      pending.resolve(msg.return);
    }
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closed) return Promise.reject(new AgentboxError('vm_exited', 'QEMU monitor connection closed'));
    const id = `q${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(
        JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + '\n',
      );
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
