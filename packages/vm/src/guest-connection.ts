import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import {
  AgentboxError,
  ExecExitSchema,
  EXEC_JOURNAL_FEATURE,
  EXEC_INPUT_FEATURE,
  EXEC_KEEP_FEATURE,
  EXEC_WATCH_FEATURE,
  GUEST_CHANNEL_BIT,
  FileHeaderSchema,
  GuestReplySchema,
  HelloSchema,
  IMAGE_API_VERSION,
  PROTOCOL_VERSION,
  RESULT_SCHEMAS,
  type DirListing,
  type EntryInfo,
  type ExecExit,
  type ExecStat,
  type ExecRequest,
  type Health,
  type Hello,
  type Listener,
  type GuestIdentity,
  type ProcessInfo,
  type Request,
  type RestoreResult,
  type RequestOp,
} from '@agentbox/protocol';
import { Mux, streamTransport, type DataStream } from '@agentbox/protocol/wire';
import { GuestChannels, type EgressHandler } from './guest-channels.js';
import {
  fullReadBudget,
  GUEST_FRAMES_PER_HOST_MS,
  GUEST_FRAMES_PER_SECOND,
  GUEST_JSON_BYTES_PER_FRAME,
  GUEST_OPEN_FRAME_COST,
  GUEST_SKIPPED_BYTES_PER_FRAME,
  processReadShare,
  spendReadBudget,
  type HostReadShare,
  type ReadBudget,
} from './read-budget.js';
import { PortChannel } from './port-channel.js';

export type { EgressHandler } from './guest-channels.js';

type Sink = (chunk: Buffer) => void | Promise<void>;

export interface ExecHandlers {
  onStdout?: Sink;
  onStderr?: Sink;
  /** Bytes to feed to stdin; stdin is closed after them. Omit for no stdin. */
  stdin?: Buffer | Readable;
  signal?: AbortSignal;
  onStarted?: (pid: number) => void;
  /** A journaled exec's output before `offset` of that stream was dropped (`keepBytes`); it goes on from there. */
  onSkipped?: (stream: 'stdout' | 'stderr', offset: number) => void | Promise<void>;
  /** With `pty` in the request: receives the terminal control (window size changes). */
  onPty?: (terminal: { resize(rows: number, cols: number): void }) => void;
}

interface OpenCall {
  onJson(message: unknown): void;
  onData(stream: DataStream, chunk: Buffer): void;
  onEnd(): void;
  fail(error: AgentboxError): void;
}

/**
 * Bytes of window-free frames (requests, ends, resets) the host queues for a guest that does not
 * read: a reading guest leaves a few KiB queued at most; past this a guest only costs memory.
 */
export const MAX_QUEUED_CONTROL_BYTES = 4 * 1024 * 1024;

/** How long a cancelled exec may take to answer before the host fails it itself. */
export const EXEC_CANCEL_GRACE_MS = 10_000;

/**
 * How long the guest has to answer a call once its request (and any upload) is sent, or, for a
 * file read, between two frames. A wedged or hostile guest must not hold a caller (an API request,
 * a task's queue slot, the daemon's start) forever.
 */
export const GUEST_CALL_TIMEOUT_MS = 60_000;
/**
 * A hello request can be lost: while no host is attached the agent reopens its port in a loop, and
 * the kernel discards what reached the port in the instant the agent was closing it. So while
 * someone waits for the answer, the host asks again, first after this long, then twice as long
 * each time, at most HELLO_RETRIES times (not while nobody waits, nor for ever: a stopped VM —
 * a standby clone, a paused box being re-adopted — would get a pile of them when it runs again).
 */
export const HELLO_RETRY_FIRST_MS = 200;
const HELLO_RETRIES = 5;

/** Ops that flush disks or delete whole trees, which a loaded emulated guest may take minutes for. */
const SLOW_OPS = new Set<RequestOp>(['system.sync', 'system.quiesce', 'file.remove']);
const SLOW_OP_FACTOR = 5;

/** What a caller may put on one call: its own end, and another deadline than the default. */
export interface CallOptions {
  /** Aborting cancels the call in the guest and rejects it with the signal's reason. */
  signal?: AbortSignal | undefined;
  timeoutMs?: number;
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('the call was aborted');
}

/** How one call ends, once: by its answer, a failure, its deadline, or its caller's abort. */
class CallEnd {
  settled = false;
  /** The call's deadline, cleared when it ends. */
  timer: NodeJS.Timeout | undefined;
  private readonly onAbort = () => this.giveUp(abortReason(this.signal!));

  constructor(
    private readonly signal: AbortSignal | undefined,
    private readonly reject: (err: unknown) => void,
    /** Tells the guest to drop the call and forgets its channel. */
    private readonly abandon: () => void,
  ) {}

  /** Runs `fn` (the caller's resolve or reject) unless the call already ended. */
  settle(fn: () => void): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.signal?.removeEventListener('abort', this.onAbort);
    fn();
  }

  /** Ends the call from this side: the guest's answer, if it still comes, is dropped. */
  giveUp(err: Error): void {
    this.abandon();
    this.settle(() => this.reject(err));
  }

  /** Follows the caller's signal; false when it had aborted already (the call is given up). */
  followSignal(): boolean {
    if (!this.signal) return true;
    if (this.signal.aborted) {
      this.onAbort();
      return false;
    }
    this.signal.addEventListener('abort', this.onAbort, { once: true });
    return true;
  }
}

/** A bound the guest reached; reported once per connection and bound, not once per frame. */
export interface GuestLimitNotice {
  limit: 'guest_channels' | 'queued_messages' | 'inbound_bytes' | 'frame_rate';
  message: string;
  /** The VM whose guest reached it (GuestConnectionOptions.vmId). */
  vmId?: string;
}

export interface GuestConnectionOptions {
  /** Versions this host expects; tests override them to provoke a mismatch. */
  protocolVersion?: number;
  imageApiVersion?: number;
  /** Where limit notices go; default: a process warning (stderr). */
  onLimit?: (notice: GuestLimitNotice) => void;
  /** The VM this connection belongs to, named in limit notices. */
  vmId?: string;
  /** The default deadline of a call (`GUEST_CALL_TIMEOUT_MS`); tests shorten it. */
  callTimeoutMs?: number;
  /** Frames read from the guest per second at most (`GUEST_FRAMES_PER_SECOND`); tests change it. */
  framesPerSecond?: number;
  /** The budget this guest shares with the others (`processReadShare`); tests make their own. */
  readShare?: HostReadShare;
}

/**
 * The host end of the guest channel: handshake, then one mux channel per call. Everything the guest
 * sends is validated; a call is always settled — by its reply, by the guest agent restarting, or by
 * the VM going away — so callers never hang on a dead box.
 */
export class GuestConnection {
  private socket: net.Socket | undefined;
  private mux: Mux;
  private readonly calls = new Map<number, OpenCall>();
  private nextChannel = 1;
  private hello: Hello | undefined;
  /** Whether the guest answered since the socket was last attached (see HELLO_RETRY_FIRST_MS). */
  private answeredSinceAttach = false;
  private helloRetry: NodeJS.Timeout | undefined;
  private helloWaiters: { resolve: (h: Hello) => void; reject: (e: Error) => void }[] = [];
  private closedError: AgentboxError | undefined;
  private readonly guestChannels: GuestChannels;
  private readonly noticed = new Set<GuestLimitNotice['limit']>();
  private overflowCount = 0;
  private readonly framesPerSecond: number;
  private readonly readShare: HostReadShare;
  private readBudget: ReadBudget;
  private readPauses = 0;
  private configuredEnv: Record<string, string> | undefined;
  /** Wall-clock ms at which the current agent's first hello was read. */
  private newAgentAt = 0;
  private lastActivity = performance.now();

  constructor(private readonly options: GuestConnectionOptions = {}) {
    this.framesPerSecond = options.framesPerSecond ?? GUEST_FRAMES_PER_SECOND;
    this.readShare = options.readShare ?? processReadShare;
    this.readBudget = fullReadBudget(performance.now(), this.framesPerSecond);
    this.mux = this.newMux();
    this.guestChannels = new GuestChannels(this.mux, (limit, message) => this.notice({ limit, message }));
  }

  get info(): Hello | undefined {
    return this.hello;
  }

  /** Calls in flight (an exec stream counts until it exits): the box is busy while this is > 0. */
  get activeCalls(): number {
    return this.calls.size;
  }

  /**
   * What the guest costs this connection against its bounds: the channels it holds, opens refused,
   * channels closed because the guest left too many messages unread, bytes it sent that stalled
   * readers have not taken, channels reset because those did not fit, and the times reading it
   * paused because it sent more than its read budget (see read-budget.ts).
   */
  get limits(): {
    guestChannels: number;
    refusedOpens: number;
    overflowedChannels: number;
    inboundBytes: number;
    inboundResets: number;
    readPauses: number;
  } {
    const { held, refused, inboundBytes, inboundResets } = this.guestChannels.stats;
    return {
      guestChannels: held,
      refusedOpens: refused,
      overflowedChannels: this.overflowCount,
      inboundBytes,
      inboundResets,
      readPauses: this.readPauses,
    };
  }

  /** `performance.now()` of the last call opened or finished on this connection. */
  get lastActivityAt(): number {
    return this.lastActivity;
  }

  private newMux(): Mux {
    return new Mux(
      {
        ...streamTransport(
          () => this.socket,
          () => this.closedError ?? new AgentboxError('guest_unreachable', 'guest channel is not connected'),
        ),
      },
      {
        onUnknownChannel: (channel, message) => {
          if (channel === 0) this.onHello(message);
          else if ((channel & GUEST_CHANNEL_BIT) !== 0) this.guestChannels.accept(channel, message);
        },
        onProtocolError: (err) => this.resync(err),
        maxQueuedControlBytes: MAX_QUEUED_CONTROL_BYTES,
        onOverflow: (channel, err) => this.onOverflow(channel, err),
      },
    );
  }

  /** Routes the guest's egress connections; without a handler they get a 403 `egress_disabled`. */
  setEgressHandler(handler: EgressHandler | undefined): void {
    this.guestChannels.setEgressHandler(handler);
  }

  /**
   * The guest left so many messages unread that the mux closed `channel` rather than queue one
   * more: the call (or guest stream) on it fails; the other channels carry on.
   */
  private onOverflow(channel: number, err: Error): void {
    this.overflowCount++;
    this.notice({
      limit: 'queued_messages',
      message: `the guest is not reading its channel; closing the channels whose messages do not fit: ${err.message}`,
    });
    const error = new AgentboxError(
      'guest_unreachable',
      `the guest is not reading its channel: ${err.message}`,
    );
    const call = this.calls.get(channel);
    if (call) {
      this.finish(channel);
      call.fail(error);
    } else {
      this.guestChannels.closed(channel, error);
    }
  }

  /** The guest's side of every channel is gone: the mux forgets them, guest-opened streams end. */
  private dropChannels(err: Error): void {
    this.mux.resetAll();
    this.guestChannels.dropAll(err);
  }

  private notice(notice: GuestLimitNotice): void {
    if (this.noticed.has(notice.limit)) return;
    this.noticed.add(notice.limit);
    const { vmId } = this.options;
    if (this.options.onLimit) this.options.onLimit(vmId === undefined ? notice : { ...notice, vmId });
    else
      process.emitWarning(vmId === undefined ? notice.message : `VM ${vmId}: ${notice.message}`, {
        code: 'AGENTBOX_GUEST_LIMIT',
      });
  }

  /** Attaches the socket QEMU (or the fake driver) connected to us. */
  attach(socket: net.Socket): void {
    this.socket = socket;
    this.closedError = undefined;
    // The stream may resume mid-frame (a re-attach to a running VM): skip to the next hello, and
    // ask for one; the agent also sends one unprompted when it starts.
    this.dropChannels(new Error('the guest channel was re-attached'));
    this.mux.seekJsonFrame(0);
    this.answeredSinceAttach = false;
    clearTimeout(this.helloRetry);
    this.helloRetry = undefined;
    this.askHello();
    if (this.helloWaiters.length > 0) this.askHelloAgainAfter(HELLO_RETRY_FIRST_MS);
    socket.on('data', (chunk: Buffer) => {
      const frames = this.mux.framesReceived;
      const json = this.mux.jsonBytesReceived;
      const skipped = this.mux.bytesSkipped;
      const opens = this.guestChannels.opened;
      this.mux.receive(chunk);
      const cost =
        this.mux.framesReceived -
        frames +
        (this.mux.jsonBytesReceived - json) / GUEST_JSON_BYTES_PER_FRAME +
        (this.mux.bytesSkipped - skipped) / GUEST_SKIPPED_BYTES_PER_FRAME +
        (this.guestChannels.opened - opens) * GUEST_OPEN_FRAME_COST;
      this.paceReading(socket, cost);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      clearTimeout(this.helloRetry);
      this.helloRetry = undefined;
    });
  }

  /**
   * Counts `ms` of the host's own work on what this guest sent (a task's output lines parsed and
   * stored) against its read budget, as the frames that carried it are: past the budget, reading
   * the guest pauses. Returns how long (ms): the caller waits as long before it handles more of
   * what it already read, so a box whose output is costly to handle gets no more of the daemon.
   */
  chargeHostWork(ms: number): number {
    return this.socket && ms > 0 ? this.paceReading(this.socket, ms * GUEST_FRAMES_PER_HOST_MS) : 0;
  }

  /**
   * Charges what a read cost against the guest's frame budget, at its rate (its own, or its share
   * of the host's while other guests press on theirs); past it, stops reading the socket until the
   * budget is back. QEMU then stops taking the guest's writes: only this guest waits.
   */
  private paceReading(socket: net.Socket, cost: number): number {
    const now = performance.now();
    const rate = this.readShare.rateFor(this, this.framesPerSecond, now);
    const spent = spendReadBudget(this.readBudget, cost, now, rate);
    this.readBudget = spent.budget;
    if (spent.pauseMs === 0) return 0;
    this.readShare.pressed(this, now, spent.pauseMs);
    this.readPauses++;
    this.notice({
      limit: 'frame_rate',
      message:
        `the guest sends more than the host reads of one guest (${this.framesPerSecond} frames a second, ` +
        `${this.readShare.framesPerSecond} shared by all guests; channel opens, JSON and junk counting more): ` +
        'reading it is slowed to its share',
    });
    socket.pause();
    setTimeout(() => socket.resume(), spent.pauseMs).unref();
    return spent.pauseMs;
  }

  private askHello(): void {
    this.mux.sendJson(0, { op: 'hello' }).catch(() => undefined);
  }

  /**
   * Asks again only while someone waits and nothing else was sent: the guest takes each hello
   * request for a new host session and resets its channels, which must never cut a call. A
   * connection that knows its agent already (a re-attach) has callers that do not wait for the
   * answer: it asks once.
   */
  private askHelloAgainAfter(ms: number, retries = HELLO_RETRIES): void {
    if (retries <= 0) return;
    this.helloRetry = setTimeout(() => {
      this.helloRetry = undefined;
      const unanswered =
        this.socket !== undefined &&
        !this.answeredSinceAttach &&
        this.hello === undefined &&
        this.calls.size === 0 &&
        this.helloWaiters.length > 0;
      if (!unanswered) return;
      this.askHello();
      this.askHelloAgainAfter(ms * 2, retries - 1);
    }, ms);
    this.helloRetry.unref();
  }

  /** Resolves with the first valid hello; rejects on a version mismatch or when the VM goes away. */
  waitForHello(): Promise<Hello> {
    if (this.hello) return Promise.resolve(this.hello);
    if (this.closedError) return Promise.reject(this.closedError);
    if (this.socket && !this.answeredSinceAttach && this.helloRetry === undefined)
      this.askHelloAgainAfter(HELLO_RETRY_FIRST_MS);
    return new Promise((resolve, reject) => this.helloWaiters.push({ resolve, reject }));
  }

  private onHello(message: unknown): void {
    const parsed = HelloSchema.safeParse(message);
    if (!parsed.success) return;
    const hello = parsed.data;
    this.answeredSinceAttach = true;
    const wantProtocol = this.options.protocolVersion ?? PROTOCOL_VERSION;
    const wantImage = this.options.imageApiVersion ?? IMAGE_API_VERSION;
    if (hello.protocolVersion !== wantProtocol || hello.imageApiVersion !== wantImage) {
      const error = new AgentboxError(
        'version_mismatch',
        `guest agent ${hello.agentVersion} speaks protocol v${hello.protocolVersion} / image API v${hello.imageApiVersion}, ` +
          `this host needs protocol v${wantProtocol} / image API v${wantImage}; rebuild the image with \`agentbox image build\``,
        { details: { guest: hello, host: { protocolVersion: wantProtocol, imageApiVersion: wantImage } } },
      );
      this.hello = undefined;
      for (const w of this.helloWaiters.splice(0)) w.reject(error);
      this.resetCalls(error);
      return;
    }
    const newAgent = this.hello?.agentPid !== hello.agentPid;
    if (this.hello && newAgent) {
      this.agentRestarted();
    }
    if (newAgent) this.newAgentAt = Date.now();
    this.hello = hello;
    if (newAgent && this.configuredEnv) {
      this.call({ op: 'system.configure', env: this.configuredEnv }).catch(() => undefined);
    }
    for (const w of this.helloWaiters.splice(0)) w.resolve(hello);
  }

  /**
   * The guest agent went away (its port closed, or a new instance said hello): in-flight calls fail.
   * `closedAt` (wall-clock ms) is when the port closed, as QEMU stamped its event: a close from
   * before the current agent's hello was read is its predecessor's, read late (the event and the
   * hello come on different sockets), and is ignored.
   */
  agentRestarted(closedAt?: number): void {
    if (closedAt !== undefined && this.hello && closedAt < this.newAgentAt) return;
    this.resetCalls(
      new AgentboxError(
        'guest_agent_restarted',
        'the guest agent restarted; the call was lost and may be retried',
      ),
    );
    this.dropChannels(new Error('the guest agent restarted'));
    this.hello = undefined;
  }

  /**
   * The guest broke the channel protocol (a bad frame, bad JSON, an overrun window): its calls fail,
   * their channels close, and input is dropped until the next hello frame, as after a re-attach. A
   * guest that keeps sending garbage holds no host memory and gets no answer.
   */
  private resync(err: Error): void {
    this.resetCalls(new AgentboxError('guest_error', `guest broke the channel protocol: ${err.message}`));
    this.dropChannels(err);
    this.mux.seekJsonFrame(0);
  }

  /** The VM is gone: every call and every future call fails with `error`. */
  close(error: AgentboxError): void {
    this.closedError = error;
    this.readShare.forget(this);
    clearTimeout(this.helloRetry);
    this.helloRetry = undefined;
    this.resetCalls(error);
    this.mux.fail(error);
    this.guestChannels.dropAll(error);
    for (const w of this.helloWaiters.splice(0)) w.reject(error);
    this.socket?.destroy();
    this.socket = undefined;
  }

  private resetCalls(error: AgentboxError): void {
    const calls = [...this.calls.entries()];
    this.calls.clear();
    // Their channels too: a failed call's sinks must get nothing the guest sends on it later.
    for (const [channel] of calls) this.mux.close(channel);
    for (const [, call] of calls) call.fail(error);
  }

  private deadline(op: RequestOp, options: CallOptions): number {
    const base = this.options.callTimeoutMs ?? GUEST_CALL_TIMEOUT_MS;
    return options.timeoutMs ?? (SLOW_OPS.has(op) ? base * SLOW_OP_FACTOR : base);
  }

  private open(request: Request, call: OpenCall): number {
    if (this.closedError) throw this.closedError;
    const channel = this.nextChannel;
    this.nextChannel = this.nextChannel >= 0x7fff_fffe ? 1 : this.nextChannel + 1;
    this.lastActivity = performance.now();
    this.calls.set(channel, call);
    this.mux.open(channel, {
      onJson: (m) => call.onJson(m),
      onData: (s, c) => call.onData(s, c),
      onEnd: () => call.onEnd(),
    });
    this.mux.sendJson(channel, request).catch((err: Error) => call.fail(toGuestError(err)));
    return channel;
  }

  private finish(channel: number): void {
    this.lastActivity = performance.now();
    this.calls.delete(channel);
    this.mux.close(channel);
  }

  /** Parses a reply from the guest; anything unexpected is the guest's fault and fails the call. */
  private reply(message: unknown): z.infer<typeof GuestReplySchema> {
    const parsed = GuestReplySchema.safeParse(message);
    if (!parsed.success) throw new AgentboxError('guest_error', 'guest sent an invalid reply');
    return parsed.data;
  }

  /** A request with one JSON result. */
  call<Op extends Exclude<RequestOp, 'exec' | 'exec.attach' | 'file.read' | 'file.write'>>(
    request: Extract<Request, { op: Op }>,
    options: CallOptions = {},
  ): Promise<z.infer<(typeof RESULT_SCHEMAS)[Op]>> {
    return this.unary(request, undefined, options);
  }

  /**
   * Opens a channel for `request`, optionally streams `upload` on it, and settles with the guest's
   * one result, parsed with the op's schema (anything else from the guest fails the call).
   */
  private unary<Op extends Exclude<RequestOp, 'exec' | 'exec.attach' | 'file.read'>>(
    request: Extract<Request, { op: Op }>,
    upload?: Buffer | Readable,
    options: CallOptions = {},
  ): Promise<z.infer<(typeof RESULT_SCHEMAS)[Op]>> {
    return new Promise((resolve, reject) => {
      const op = (request as Request).op as Op;
      const end = new CallEnd(options.signal, reject, () => this.abandon(channel));
      const channel = this.open(request, {
        onJson: (message) => {
          this.finish(channel);
          try {
            const reply = this.reply(message);
            if (reply.type === 'error') throw new AgentboxError(reply.code, reply.message);
            if (reply.type !== 'result')
              throw new AgentboxError('guest_error', `unexpected ${reply.type} reply to ${op}`);
            const value = RESULT_SCHEMAS[op].safeParse(reply.value);
            if (!value.success) throw new AgentboxError('guest_error', `guest sent an invalid ${op} result`);
            end.settle(() => resolve(value.data as z.infer<(typeof RESULT_SCHEMAS)[Op]>));
          } catch (err) {
            end.settle(() => reject(err));
          }
        },
        onData: () => undefined,
        onEnd: () => undefined,
        fail: (err) => end.settle(() => reject(err)),
      });
      // The clock starts once the request is all sent: an upload takes as long as its source does.
      const arm = () => {
        if (end.settled) return;
        const ms = this.deadline(op, options);
        end.timer = setTimeout(
          () =>
            end.giveUp(
              new AgentboxError('guest_unreachable', `the guest did not answer ${op} within ${ms / 1000} s`),
            ),
          ms,
        ).unref();
      };
      if (!end.followSignal()) return;
      if (upload === undefined) return arm();
      void this.stream(channel, upload, (err) => end.giveUp(err)).then(arm);
    });
  }

  ping(): Promise<{ now: number }> {
    return this.call({ op: 'ping' });
  }

  health(): Promise<Health> {
    return this.call({ op: 'health' });
  }

  listProcesses(options: CallOptions = {}): Promise<ProcessInfo[]> {
    return this.call({ op: 'process.list' }, options);
  }

  killProcess(pid: number, signal = 'SIGKILL', options: CallOptions = {}): Promise<void> {
    return this.call({ op: 'process.kill', pid, signal }, options).then(() => undefined);
  }

  stat(path: string, options: CallOptions = {}): Promise<EntryInfo> {
    return this.call({ op: 'file.stat', path }, options);
  }

  /** A directory's entries, and how many were left out (names that are not valid UTF-8). */
  list(path: string, options: CallOptions = {}): Promise<DirListing> {
    return this.call({ op: 'file.list', path }, options);
  }

  mkdir(path: string, recursive = true, options: CallOptions = {}): Promise<void> {
    return this.call({ op: 'file.mkdir', path, recursive }, options).then(() => undefined);
  }

  remove(path: string, recursive = false, options: CallOptions = {}): Promise<void> {
    return this.call({ op: 'file.remove', path, recursive }, options).then(() => undefined);
  }

  /**
   * Sets default env for every later exec in the guest (proxy, CA paths, placeholders). It lives in
   * the agent's memory, so it is sent again whenever a new agent instance says hello.
   */
  configure(env: Record<string, string>): Promise<void> {
    this.configuredEnv = { ...this.configuredEnv, ...env };
    return this.call({ op: 'system.configure', env }).then(() => undefined);
  }

  sync(): Promise<void> {
    return this.call({ op: 'system.sync' }).then(() => undefined);
  }

  /** Before a snapshot: the guest starts its restore helper and flushes its disks. */
  quiesce(): Promise<{ helper: boolean }> {
    return this.call({ op: 'system.quiesce' });
  }

  /**
   * After a restore or a resume: the guest takes the host's wall clock and `entropy` (mixed into
   * its RNG, which is reseeded) and, for a clone, a new identity; the boot id this connection
   * reports follows.
   */
  async restore(options: {
    entropy?: Buffer;
    nonce?: string;
    identity?: GuestIdentity;
  }): Promise<RestoreResult> {
    const result = await this.call({
      op: 'system.restore',
      nowMs: Date.now(),
      ...(options.entropy ? { entropy: options.entropy.toString('base64') } : {}),
      ...(options.nonce ? { nonce: options.nonce } : {}),
      ...(options.identity ? { identity: options.identity } : {}),
    });
    if (this.hello) this.hello = { ...this.hello, bootId: result.bootId };
    return result;
  }

  /** Runs a process; stdout/stderr are delivered to the sinks in order, with backpressure. */
  exec(request: Omit<ExecRequest, 'op' | 'stdin'>, handlers: ExecHandlers = {}): Promise<ExecExit> {
    return this.processCall({ op: 'exec', ...request, stdin: handlers.stdin !== undefined }, handlers);
  }

  /** The agent keeps journaled execs (`journal` on exec, `attachExec`): its hello said so. */
  get keepsJournals(): boolean {
    return this.hello?.features?.includes(EXEC_JOURNAL_FEATURE) ?? false;
  }

  /** The agent answers `exec.stat` and attaches that only watch (background commands). */
  get watchesJournals(): boolean {
    return this.hello?.features?.includes(EXEC_WATCH_FEATURE) ?? false;
  }

  /** A journaled exec may keep its stdin open (`stdinOpen`) for `inputExec`. */
  get takesInput(): boolean {
    return this.hello?.features?.includes(EXEC_INPUT_FEATURE) ?? false;
  }

  /** A journaled exec may be told to keep only the tail of its output (`keepBytes`). */
  get trimsJournals(): boolean {
    return this.hello?.features?.includes(EXEC_KEEP_FEATURE) ?? false;
  }

  /**
   * Takes up a journaled exec that an earlier host session started (a restarted daemon): its
   * output from the offsets given, as it comes, then its exit, as `exec` delivers them. With
   * `watch`, aborting ends only this read (at once), never the process.
   */
  attachExec(
    journal: { journal: string; stdoutOffset: number; stderrOffset: number; watch?: boolean },
    handlers: Omit<ExecHandlers, 'stdin' | 'onPty'> = {},
  ): Promise<ExecExit> {
    return this.processCall({ op: 'exec.attach', ...journal }, handlers);
  }

  /** Where a journaled exec stands: its process, exit and output size. */
  statExec(journal: string, options: CallOptions = {}): Promise<ExecStat> {
    return this.call({ op: 'exec.stat', journal }, options);
  }

  /** Writes to the open stdin of a journaled exec (`stdinOpen`); `eof` then closes it. */
  inputExec(
    journal: string,
    data: Buffer,
    eof: boolean,
    options: CallOptions = {},
  ): Promise<{ bytes: number }> {
    return this.call({ op: 'exec.input', journal, data: data.toString('base64'), eof }, options);
  }

  /** The host has kept a journaled exec's exit: the guest removes its journal. */
  forgetExec(journal: string, options: CallOptions = {}): Promise<void> {
    return this.call({ op: 'exec.forget', journal }, options).then(() => undefined);
  }

  private processCall(
    request: Request & { op: 'exec' | 'exec.attach' },
    handlers: ExecHandlers,
  ): Promise<ExecExit> {
    return new Promise<ExecExit>((resolve, reject) => {
      let settled = false;
      let started = false;
      let delivering = Promise.resolve();
      let unanswered: NodeJS.Timeout | undefined;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(unanswered);
        handlers.signal?.removeEventListener('abort', onAbort);
        fn();
      };
      // The guest ends a cancelled process and answers in ms; one that does not (hung, or hostile)
      // must not hold the caller (a task's queue slot) forever: the call is failed here.
      const onAbort = () => {
        // A watch holds no process: nothing to wait for, the guest just stops sending.
        if ((request.op === 'exec.attach' || request.op === 'exec') && request.watch) {
          this.abandon(channel);
          const reason: unknown = handlers.signal?.reason;
          return settle(() => reject(reason instanceof Error ? reason : new Error('the watch was aborted')));
        }
        this.cancel(channel);
        unanswered ??= setTimeout(() => {
          this.finish(channel);
          settle(() =>
            reject(
              new AgentboxError(
                'guest_unreachable',
                `the guest did not end the process within ${EXEC_CANCEL_GRACE_MS / 1000} s of its cancel`,
              ),
            ),
          );
        }, EXEC_CANCEL_GRACE_MS).unref();
      };
      const channel = this.open(request, {
        onJson: (message) => {
          let reply;
          try {
            reply = this.reply(message);
          } catch (err) {
            this.finish(channel);
            return settle(() => reject(err));
          }
          switch (reply.type) {
            case 'started':
              // Once per exec: a guest repeating it would queue work outside the output's flow control.
              if (started) {
                this.abandon(channel);
                return settle(() =>
                  reject(new AgentboxError('guest_error', 'the guest said twice that the process started')),
                );
              }
              started = true;
              handlers.onStarted?.(reply.pid);
              return;
            case 'skipped': {
              // In order with the output around it.
              const { stream, offset } = reply;
              delivering = delivering.then(async () => {
                if (settled) return;
                try {
                  await handlers.onSkipped?.(stream, offset);
                } catch (err) {
                  this.abandon(channel);
                  settle(() => reject(err instanceof Error ? err : new Error(String(err))));
                }
              });
              return;
            }
            case 'exit': {
              const exit = ExecExitSchema.parse(reply);
              this.finish(channel);
              // Output delivered before the exit is flushed to the sinks first.
              void delivering.then(
                () => settle(() => resolve(exit)),
                (err: Error) => settle(() => reject(err)),
              );
              return;
            }
            case 'error':
              this.finish(channel);
              return settle(() => reject(new AgentboxError(reply.code, reply.message)));
            default:
              this.finish(channel);
              return settle(() =>
                reject(new AgentboxError('guest_error', `unexpected ${reply.type} reply to exec`)),
              );
          }
        },
        onData: (stream, chunk) => {
          const sink = stream === 'data' ? handlers.onStdout : handlers.onStderr;
          // The chain never rejects: a sink that throws (its parser choking on what the process
          // printed) fails this call and ends the process, rather than leaving a rejection that
          // nothing handles until an exit that may never come.
          delivering = delivering.then(async () => {
            if (settled) return;
            try {
              if (sink) await sink(chunk);
            } catch (err) {
              this.abandon(channel);
              settle(() => reject(err instanceof Error ? err : new Error(String(err))));
              return;
            }
            this.mux.consumed(channel, chunk.length);
          });
        },
        onEnd: () => undefined,
        fail: (err) => settle(() => reject(err)),
      });
      handlers.onPty?.({
        resize: (rows, cols) =>
          void this.mux.sendJson(channel, { type: 'resize', rows, cols }).catch(() => undefined),
      });
      if (handlers.signal) {
        if (handlers.signal.aborted) onAbort();
        else handlers.signal.addEventListener('abort', onAbort, { once: true });
      }
      if (handlers.stdin !== undefined)
        void this.stream(channel, handlers.stdin, (err) => {
          onAbort();
          settle(() => reject(err));
        });
    });
  }

  /**
   * Gives up on a call: the guest is asked to drop it (the cancel still goes out, after what was
   * queued before it) and the channel is forgotten here, so any answer is dropped.
   */
  private abandon(channel: number): void {
    this.lastActivity = performance.now();
    this.calls.delete(channel);
    this.mux.post(channel, { type: 'cancel' }, true);
  }

  /** Asks the guest to drop a call (its reply, an error, still comes). */
  private cancel(channel: number): void {
    void this.mux.sendJson(channel, { type: 'cancel' }).catch(() => undefined);
  }

  /**
   * Sends `source` on a call's channel, then End. A source that fails (a client gone mid-upload)
   * goes to `onSourceError`, which cancels the call: the guest must drop what it received (an
   * upload's temporary file, an exec's process), not wait for the rest of it forever.
   */
  private async stream(
    channel: number,
    source: Buffer | Readable,
    onSourceError: (err: AgentboxError) => void,
  ): Promise<void> {
    try {
      if (Buffer.isBuffer(source)) {
        if (source.length > 0) await this.mux.sendData(channel, 'data', source);
      } else {
        for await (const chunk of source) {
          if (!this.calls.has(channel)) return;
          await this.mux.sendData(
            channel,
            'data',
            Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string),
          );
        }
      }
      if (this.calls.has(channel)) await this.mux.sendEnd(channel);
    } catch (err) {
      // A failed send is the channel's failure, which the call reports itself.
      if (!this.calls.has(channel) || this.closedError) return;
      onSourceError(
        new AgentboxError(
          'invalid_request',
          `the request body stopped before its end: ${err instanceof Error ? err.message : String(err)}`,
        ),
      );
    }
  }

  /**
   * Port publishing: a byte stream to 127.0.0.1:`port` in the guest (the guest connects; a refused
   * connect destroys the stream with an error). Destroying it cancels the guest connection.
   */
  connectPort(port: number): Duplex {
    // Replies arrive asynchronously, after the stream below exists.
    const ref: { stream?: PortChannel } = {};
    const channel = this.open(
      { op: 'port.connect', port },
      {
        onJson: (m) => ref.stream?.onReply(m),
        onData: (_s, c) => ref.stream?.onData(c),
        onEnd: () => ref.stream?.onEnd(),
        fail: (e) => ref.stream?.destroy(e),
      },
    );
    ref.stream = new PortChannel(this.mux, channel, () => this.finish(channel));
    return ref.stream;
  }

  /** TCP ports listening in the guest on a wildcard or loopback address. */
  listeners(): Promise<Listener[]> {
    return this.call({ op: 'net.listeners' });
  }

  /**
   * Streams a file out of the guest into `sink`; resolves with its size. The guest must keep
   * sending: the deadline runs between frames (while the sink holds none back), not for the whole
   * file; `signal` ends the read (a client that went away).
   */
  readFile(path: string, sink: Sink, options: CallOptions = {}): Promise<{ size: number }> {
    return new Promise((resolve, reject) => {
      let size: number | undefined;
      /** Chunks not yet taken by the sink: while any wait, the slow side is the host's reader. */
      let queued = 0;
      let delivering = Promise.resolve();
      const end = new CallEnd(options.signal, reject, () => this.abandon(channel));
      const channel = this.open(
        { op: 'file.read', path },
        {
          onJson: (message) => {
            idle.refresh();
            let reply;
            try {
              reply = this.reply(message);
            } catch (err) {
              return end.giveUp(err as Error);
            }
            if (reply.type === 'file' && size === undefined) {
              size = FileHeaderSchema.parse(reply).size;
              return;
            }
            this.finish(channel);
            if (reply.type === 'error')
              return end.settle(() => reject(new AgentboxError(reply.code, reply.message)));
            if (reply.type !== 'result' || size === undefined)
              return end.settle(() =>
                reject(new AgentboxError('guest_error', 'unexpected reply to file.read')),
              );
            const total = size;
            void delivering.then(() => end.settle(() => resolve({ size: total })));
          },
          onData: (_stream, chunk) => {
            idle.refresh();
            // (No check against the size: /proc files say 0 and have more.)
            if (size === undefined)
              return end.giveUp(
                new AgentboxError('guest_error', `the guest sent ${path}'s bytes before its header`),
              );
            queued++;
            delivering = delivering.then(async () => {
              if (end.settled) return;
              try {
                await sink(chunk);
              } catch (err) {
                return end.giveUp(err instanceof Error ? err : new Error(String(err)));
              }
              queued--;
              idle.refresh();
              this.mux.consumed(channel, chunk.length);
            });
          },
          onEnd: () => undefined,
          fail: (err) => end.settle(() => reject(err)),
        },
      );
      const ms = this.deadline('file.read', options);
      const idle: NodeJS.Timeout = setTimeout(() => {
        if (queued > 0) {
          idle.refresh();
          return;
        }
        end.giveUp(
          new AgentboxError('guest_unreachable', `the guest stopped sending ${path} for ${ms / 1000} s`),
        );
      }, ms).unref();
      end.timer = idle;
      end.followSignal();
    });
  }

  /**
   * Reads a whole (small) file into memory; past `maxBytes` (default 64 MiB) it is refused, and
   * what a guest sends beyond it is dropped as it comes, not held.
   */
  async readFileBuffer(path: string, options: { maxBytes?: number } = {}): Promise<Buffer> {
    const maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
    const chunks: Buffer[] = [];
    let bytes = 0;
    await this.readFile(path, (c) => {
      bytes += c.length;
      if (bytes <= maxBytes) chunks.push(c);
    });
    if (bytes > maxBytes)
      throw new AgentboxError(
        'guest_error',
        `${path} is larger than ${maxBytes} bytes: not read into memory`,
      );
    return Buffer.concat(chunks);
  }

  /** Writes a file atomically (temp + rename in the guest). */
  writeFile(
    path: string,
    source: Buffer | Readable,
    options: { mode?: number; makeParents?: boolean } & CallOptions = {},
  ): Promise<{ bytes: number }> {
    return this.unary(
      {
        op: 'file.write',
        path,
        makeParents: options.makeParents ?? false,
        ...(options.mode !== undefined ? { mode: options.mode } : {}),
      },
      source,
      options,
    );
  }
}

function toGuestError(err: Error): AgentboxError {
  return err instanceof AgentboxError
    ? err
    : new AgentboxError('guest_unreachable', `guest channel failed: ${err.message}`);
}
