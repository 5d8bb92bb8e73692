import { execFile } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import {
  CancelSchema,
  EXEC_JOURNAL_FEATURE,
  EXEC_INPUT_FEATURE,
  EXEC_KEEP_FEATURE,
  EXEC_WATCH_FEATURE,
  GUEST_CHANNEL_BIT,
  IMAGE_API_VERSION,
  PROTOCOL_VERSION,
  RequestSchema,
  type Hello,
  type ParsedRequest,
} from '@agentbox/protocol';
import { Mux, type Transport } from '@agentbox/protocol/wire';
import { GuestOpError, type ChannelSender, type RequestContext } from './context.js';
import { GUEST_BASE_ENV, runExec, type ExecDefaults } from './exec.js';
import { listDir, makeDir, readFile, removePath, statFile, writeFile } from './files.js';
import { health } from './health.js';
import { killProcess, listProcesses } from './processes.js';
import { AGENT_VERSION } from './version.js';
import { EGRESS_PROXY_PORT, EgressProxy } from './egress-proxy.js';
import { RestoreHelper, currentBootId, restore } from './restore.js';
import { runPtyExec } from './pty.js';
import { ExecJournals, GUEST_JOURNAL_ROOT } from './journal.js';
import { listListeners, portConnect } from './port-forward.js';
import type { NativeAddon } from './native.js';

export interface GuestServiceOptions {
  exec?: Partial<ExecDefaults>;
  /** Overrides for tests: versions announced in the hello. */
  protocolVersion?: number;
  imageApiVersion?: number;
  /**
   * In a VM: `system.restore` may set the clock, reseed the RNG and change the identity. Never on
   * a host (unit tests run the agent as a host process).
   */
  privileged?: boolean;
  /** The agentbox-native addon: execs, file reads and restores use it when the agent has it. */
  native?: NativeAddon;
  /** Where journaled execs keep their output: GUEST_JOURNAL_ROOT in a VM, a temporary dir on a host. */
  journalRoot?: string;
}

interface OpenRequest {
  cancel: (() => void)[];
  /** The host cancelled: a handler that registers later is called at once. */
  cancelled: boolean;
  control?: (message: unknown) => void;
  data?: (chunk: Buffer) => void;
  end?: () => void;
  /** Data that arrived before the handler registered for it. */
  early: Buffer[];
  ended: boolean;
  /** A process outlives its host session; a transfer (an upload's temporary file) does not. */
  outlivesHost: boolean;
}

/** Runs the request's cancel handlers; one that registers later runs at once (see onCancel). */
function cancelRequest(state: OpenRequest): void {
  // A cancel may come before the handler could register (a spawn still under way).
  state.cancelled = true;
  for (const cb of state.cancel.splice(0)) cb();
}

const IGNORE_INPUT = { onJson: () => undefined, onData: () => undefined, onEnd: () => undefined };

/**
 * The mux as one request sees it: while `live()`. A new host (a restarted daemon) numbers its
 * channels from 1 again, so a request of the old session that outlived it (a running exec's
 * output, an upload's late error) must not reach whatever the new host opened on that number.
 */
function senderWhile(mux: Mux, live: () => boolean): ChannelSender {
  const closed = () => Promise.reject(new Error('channel closed'));
  return {
    sendJson: (channel, message) => (live() ? mux.sendJson(channel, message) : closed()),
    sendData: (channel, stream, bytes) => (live() ? mux.sendData(channel, stream, bytes) : closed()),
    sendDataFrom: (channel, stream, source, bytes) =>
      live() ? mux.sendDataFrom(channel, stream, source, bytes) : closed(),
    sendEnd: (channel) => (live() ? mux.sendEnd(channel) : closed()),
    post: (channel, message, closeAfter) => {
      if (live()) mux.post(channel, message, closeAfter);
    },
    consumed: (channel, bytes) => {
      if (live()) mux.consumed(channel, bytes);
    },
    close: (channel, options) => {
      if (live()) mux.close(channel, options);
    },
    get sendsFromFds() {
      return mux.sendsFromFds;
    },
  };
}

function isHelloRequest(message: unknown): boolean {
  return typeof message === 'object' && message !== null && (message as { op?: unknown }).op === 'hello';
}

function isPing(message: unknown): boolean {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as { op?: unknown }).op === 'ping' &&
    Object.keys(message).length === 1
  );
}

/** Owns the guest side of the channel: answers each request the host opens, one channel per request. */
export class GuestService {
  readonly mux: Mux;
  private readonly open = new Map<number, OpenRequest>();
  private readonly execDefaults: ExecDefaults;
  private readonly egress: EgressProxy;
  private egressProxyPort = EGRESS_PROXY_PORT;
  private readonly restoreHelper = new RestoreHelper();
  private readonly native: NativeAddon | undefined;
  private readonly journals: ExecJournals;

  constructor(
    transport: Transport,
    private readonly options: GuestServiceOptions = {},
  ) {
    this.execDefaults = { env: { ...GUEST_BASE_ENV }, cwd: '/root', ...options.exec };
    this.mux = new Mux(transport, {
      onUnknownChannel: (channel, message) => this.accept(channel, message),
      // The host is trusted; a malformed frame from it means the stream is corrupt, so start over.
      onProtocolError: (err) => {
        process.stderr.write(`agentbox-guest: protocol error: ${err.message}\n`);
        process.exit(70);
      },
    });
    this.egress = new EgressProxy(this.mux);
    this.native = options.native;
    this.journals = new ExecJournals(
      options.journalRoot ??
        (options.privileged ? GUEST_JOURNAL_ROOT : path.join(os.tmpdir(), 'agentbox-exec-journals')),
      options.native,
    );
  }

  /**
   * Takes up the journaled execs an earlier agent of this boot left running (their deadlines,
   * their output trimming) without waiting for a host to ask about them.
   */
  resumeJournals(): void {
    this.journals.resume();
  }

  hello(): Hello {
    return {
      egressProxyPort: this.egressProxyPort,
      type: 'hello',
      protocolVersion: this.options.protocolVersion ?? PROTOCOL_VERSION,
      imageApiVersion: this.options.imageApiVersion ?? IMAGE_API_VERSION,
      agentVersion: AGENT_VERSION,
      bootId: currentBootId(),
      agentPid: process.pid,
      features: [EXEC_JOURNAL_FEATURE, EXEC_WATCH_FEATURE, EXEC_KEEP_FEATURE, EXEC_INPUT_FEATURE],
    };
  }

  sendHello(): Promise<void> {
    return this.mux.sendJson(0, this.hello());
  }

  /** The host went away: its channels are gone; running processes keep running. */
  hostReconnected(): void {
    for (const state of this.open.values()) if (!state.outlivesHost) cancelRequest(state);
    this.open.clear();
    this.egress.resetAll();
    this.mux.resetAll();
  }

  /** Starts the egress proxy on the guest loopback (port 0 picks one: unit tests on the host). */
  async startEgressProxy(port: number): Promise<void> {
    this.egressProxyPort = await this.egress.listen(port);
  }

  private accept(channel: number, message: unknown): void {
    // Guest-opened channels are the proxy's; a late message on one that closed is stale.
    if ((channel & GUEST_CHANNEL_BIT) !== 0) return;
    if (channel === 0) {
      // A host that (re)attached asks who we are. It is a new host session (a restarted daemon, or
      // a new QEMU that restored a snapshot of this VM taken with its old host still attached):
      // whatever channels the old host had are gone.
      if (isHelloRequest(message)) {
        this.hostReconnected();
        void this.sendHello().catch(() => undefined);
      }
      return;
    }
    if (isPing(message)) {
      // Liveness probes skip schema parsing and the request bookkeeping: a ping has no
      // parameters, and its round trip is the channel's latency floor that callers measure.
      this.mux.open(channel, IGNORE_INPUT);
      this.mux.post(channel, { type: 'result', value: { now: Date.now() } }, true);
      return;
    }
    const parsed = RequestSchema.safeParse(message);
    if (!parsed.success) {
      this.mux.open(channel, IGNORE_INPUT);
      this.finish(channel, {
        type: 'error',
        code: 'invalid_request',
        message: parsed.error.issues.map((i) => `${i.path.join('.') || 'request'}: ${i.message}`).join('; '),
      });
      return;
    }
    const state: OpenRequest = {
      cancel: [],
      cancelled: false,
      early: [],
      ended: false,
      // A journaled exec outlives its host once its process started (see ExecJournals.start).
      outlivesHost:
        (parsed.data.op === 'exec' && parsed.data.journal === undefined) || parsed.data.op === 'exec.attach',
    };
    this.open.set(channel, state);
    this.mux.open(channel, {
      onJson: (msg) => {
        if (!CancelSchema.safeParse(msg).success) return state.control?.(msg);
        cancelRequest(state);
      },
      onData: (_stream, chunk) => {
        if (state.data) state.data(chunk);
        else state.early.push(chunk);
      },
      onEnd: () => {
        state.ended = true;
        state.end?.();
      },
    });
    const isOpen = () => this.open.get(channel) === state;
    const ctx: RequestContext = {
      mux: senderWhile(this.mux, isOpen),
      channel,
      isOpen,
      outliveHost: () => (state.outlivesHost = true),
      onCancel: (cb) => {
        if (state.cancelled) cb();
        else state.cancel.push(cb);
      },
      onControl: (cb) => (state.control = cb),
      onData: (data, end) => {
        state.data = data;
        state.end = end;
        for (const chunk of state.early.splice(0)) data(chunk);
        if (state.ended) end();
      },
    };
    const finish = (reply: unknown) => {
      if (this.open.get(channel) === state) this.finish(channel, reply);
    };
    void this.handle(parsed.data, ctx).then(finish, (err: unknown) => {
      const e =
        err instanceof GuestOpError
          ? err
          : new GuestOpError('guest_error', String((err as Error)?.message ?? err));
      finish({ type: 'error', code: e.code, message: e.message });
    });
  }

  /** Sends the terminal reply and forgets the channel (the reply still goes out). */
  private finish(channel: number, reply: unknown): void {
    this.open.delete(channel);
    this.mux.post(channel, reply, true);
  }

  private async handle(req: ParsedRequest, ctx: RequestContext): Promise<unknown> {
    const result = (value: unknown) => ({ type: 'result', value });
    switch (req.op) {
      case 'ping':
        return result({ now: Date.now() });
      case 'health':
        return result(health());
      case 'exec':
        if (req.journal !== undefined)
          return this.journals.start({ ...req, journal: req.journal }, ctx, this.execDefaults);
        return req.pty
          ? runPtyExec(req, ctx, this.execDefaults)
          : runExec(req, ctx, this.execDefaults, this.native);
      case 'exec.attach':
        return this.journals.attach(req, ctx);
      case 'exec.forget':
        this.journals.forget(req.journal);
        return result({});
      case 'exec.stat':
        return result(this.journals.stat(req.journal));
      case 'exec.input':
        return result(this.journals.input(req));
      case 'process.list':
        return result(listProcesses());
      case 'process.kill':
        return result(killProcess(req));
      case 'file.stat':
        return result(await statFile(req));
      case 'file.list':
        return result(await listDir(req));
      case 'file.read':
        return result(await readFile(req, ctx, this.native));
      case 'file.write':
        return result(await writeFile(req, ctx));
      case 'file.mkdir':
        return result(await makeDir(req));
      case 'file.remove':
        return result(await removePath(req));
      case 'system.configure':
        Object.assign(this.execDefaults.env, req.env);
        return result({});
      case 'system.sync':
        await new Promise<void>((resolve) => execFile('sync', () => resolve()));
        return result({});
      case 'system.quiesce': {
        // Whatever will do a clone's restore must be there in the snapshot already.
        const helper = this.options.privileged
          ? this.native !== undefined || (await this.restoreHelper.start())
          : false;
        await new Promise<void>((resolve) => execFile('sync', () => resolve()));
        return result({ helper });
      }
      case 'port.connect':
        return result(await portConnect(req, ctx));
      case 'net.listeners':
        return result(await listListeners());
      case 'system.restore':
        return result(
          await restore(req, this.restoreHelper, {
            privileged: this.options.privileged ?? false,
            native: this.native,
          }),
        );
    }
  }
}
