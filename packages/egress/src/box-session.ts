import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import {
  canonicalizeHost,
  type EgressAuditRecord,
  type EgressDenyCode,
  type EgressErrorCode,
} from '@agentbox/protocol';
import type { CertificateAuthority } from './ca.js';
import { decide, type EgressDecision, type EgressRequest } from './decide.js';
import { forwardRequest, type ForwardDeps } from './forward.js';
import {
  DENY_HEADER,
  ERROR_HEADER,
  auditPath,
  endToEndHeaders,
  hostHeaderFor,
  parseAbsoluteHttpUri,
  parseAuthority,
  respondDenied,
  respondFailed,
  writeRawResponse,
} from './http-util.js';
import type { OpenFacts } from './open-connections.js';
import { OpenRegistry, type OpenHold } from './open-registry.js';
import { findPlaceholders, headersHavePlaceholder, type PlaceholderRegistry } from './placeholders.js';
import type { CompiledPolicy } from './policy.js';
import type { SecretStore } from './secrets.js';
import type { SpendLedger } from './spend-ledger.js';
import { handleInterceptedRequest, type InterceptedConnection } from './tls-intercept.js';
import {
  describeNetError,
  dialTarget,
  resolveTarget,
  type ConnectTarget,
  type LookupFn,
} from './upstream.js';

/**
 * One box's side of the gateway: a private HTTP server fed with the box's proxy connections
 * (CONNECT and absolute-URI requests), a second one fed with the TLS it terminates, the box's CA
 * and placeholders, and every live stream so close() can cut them all.
 */

export interface BoxSessionDeps {
  readonly boxId: string;
  readonly policy: CompiledPolicy;
  readonly registry: PlaceholderRegistry;
  readonly store: SecretStore;
  readonly ca: CertificateAuthority;
  readonly lookup: LookupFn;
  readonly hostAddresses: () => ReadonlySet<string>;
  readonly record: (record: EgressAuditRecord) => void;
  readonly now: () => Date;
  readonly upstreamCa: readonly string[] | undefined;
  readonly connectTimeoutMs: number;
  readonly dnsTimeoutMs: number;
  /** The box's spend ledger: while a budget is open on it, or always when keys have accounts. */
  readonly spend: () => SpendLedger | undefined;
}

const CONNECT_OK = 'HTTP/1.1 200 Connection Established\r\n\r\n';

/**
 * Requests of one box whose bodies the gateway may read whole and hold at once (a Chat Completions
 * call under a spend limit: up to MAX_CHAT_REQUEST_BYTES each, until its answer ends). Later ones
 * wait for a turn: a box with its hundreds of channels cannot make the daemon hold gigabytes.
 */
export const MAX_HELD_BODIES_PER_BOX = 4;
const INTERNAL = 'internal gateway error; refused';

/** Stops sharing an upstream pool: idle sockets go now, busy ones when their request ends. */
function retireAgent(agent: http.Agent): void {
  agent.keepSocketAlive = () => false;
  for (const sockets of Object.values(agent.freeSockets))
    for (const socket of sockets ?? []) socket.destroy();
}

/** A placeholder in the URL or any header of a request that gets no injection: a leak to record. */
function hasPlaceholder(req: IncomingMessage): boolean {
  return findPlaceholders(req.url ?? '').length > 0 || headersHavePlaceholder(req.headers);
}

export class BoxSession {
  readonly boxId: string;
  readonly registry: PlaceholderRegistry;
  readonly store: SecretStore;
  readonly intercepted = new WeakMap<object, InterceptedConnection>();
  #policy: CompiledPolicy;
  readonly #deps: BoxSessionDeps;
  readonly #live = new Set<Duplex>();
  readonly #proxyServer: http.Server;
  readonly #innerServer: http.Server;
  readonly #contexts = new Map<string, Promise<tls.SecureContext>>();
  readonly #open = new OpenRegistry((facts, denial) => {
    const { target, request } = facts;
    const method = request?.method ?? (facts.mode === 'http' ? undefined : 'CONNECT');
    this.recordDeny(target.host, target.port, method, request?.path, denial, false);
  });
  #forwardDeps: ForwardDeps;
  #closed = false;
  #heldBodies = 0;
  readonly #bodyWaiters: Array<() => void> = [];

  constructor(deps: BoxSessionDeps) {
    this.#deps = deps;
    this.boxId = deps.boxId;
    this.registry = deps.registry;
    this.store = deps.store;
    this.#policy = deps.policy;
    const serverOptions: http.ServerOptions = {
      requestTimeout: 0,
      headersTimeout: 60_000,
      keepAliveTimeout: 30_000,
    };
    // An unexpected exception anywhere below is a refusal (fail closed), never a crash.
    const refuseOnError = (res: ServerResponse) => () => respondDenied(res, 'policy_error', INTERNAL);
    this.#proxyServer = http.createServer(serverOptions);
    this.#proxyServer.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.#onProxyRequest(req, res).catch(refuseOnError(res));
    });
    this.#proxyServer.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.#onConnect(req, socket, head).catch(() =>
        writeRawResponse(socket, 403, DENY_HEADER, 'policy_error', INTERNAL),
      );
    });
    this.#innerServer = http.createServer(serverOptions);
    this.#innerServer.on('request', (req: IncomingMessage, res: ServerResponse) => {
      handleInterceptedRequest(this, req, res).catch(refuseOnError(res));
    });
    this.#innerServer.on('connect', (req: IncomingMessage, socket: Duplex) => {
      this.#denyRaw(socket, req, 'bad_request', 'CONNECT inside CONNECT');
    });
    for (const server of [this.#proxyServer, this.#innerServer]) {
      server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
        this.#denyRaw(socket, req, 'bad_request', 'protocol upgrades (WebSocket) are not proxied');
      });
      server.on('clientError', (_err: Error, socket: Duplex) => {
        writeRawResponse(socket, 400, DENY_HEADER, 'bad_request', 'malformed HTTP from the box');
      });
    }
    this.#forwardDeps = this.#newForwardDeps();
  }

  /** What forwarded requests use now: the upstream pools of the current policy. */
  get forwardDeps(): ForwardDeps {
    return this.#forwardDeps;
  }

  #newForwardDeps(): ForwardDeps {
    const agentOptions = { keepAlive: true, maxSockets: 64, maxFreeSockets: 8 };
    const upstreamCa = this.#deps.upstreamCa;
    return {
      boxId: this.#deps.boxId,
      record: this.#deps.record,
      now: this.#deps.now,
      httpAgent: new http.Agent(agentOptions),
      httpsAgent: new https.Agent({
        ...agentOptions,
        ...(upstreamCa === undefined ? {} : { ca: [...tls.rootCertificates, ...upstreamCa] }),
      }),
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * A turn to read a request body whole and hold it (see MAX_HELD_BODIES_PER_BOX): resolves, once
   * there is one, with its release (which may be called more than once).
   */
  bodyTurn(): Promise<() => void> {
    const grant = (): (() => void) => {
      this.#heldBodies++;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        this.#heldBodies--;
        this.#bodyWaiters.shift()?.();
      };
    };
    if (this.#heldBodies < MAX_HELD_BODIES_PER_BOX) return Promise.resolve(grant());
    return new Promise((resolve) => this.#bodyWaiters.push(() => resolve(grant())));
  }

  /** The box's spend ledger, if its calls are being metered (see BoxSessionDeps.spend). */
  spendLedger(): SpendLedger | undefined {
    return this.#deps.spend();
  }

  /** The compiled policy with the host's current addresses (interfaces can change while a box runs). */
  currentPolicy(): CompiledPolicy {
    return { ...this.#policy, hostAddresses: this.#deps.hostAddresses() };
  }

  /**
   * Replaces the policy, and takes back what it no longer allows: every open tunnel, terminated
   * TLS session and request in flight is decided again, and those refused are cut and audited as
   * denials. Later requests on kept-alive connections are decided one by one anyway.
   */
  setPolicy(policy: CompiledPolicy): void {
    this.#policy = policy;
    // Pooled upstream sockets were dialled under the old policy (addresses, upstream map): new
    // requests get fresh pools; requests in flight keep theirs only if decided again below.
    const retired = this.#forwardDeps;
    this.#forwardDeps = this.#newForwardDeps();
    retireAgent(retired.httpAgent);
    retireAgent(retired.httpsAgent);
    this.#open.redecideAll(this.currentPolicy());
  }

  /**
   * Holds an open connection or request so policy updates decide it again (see OpenRegistry):
   * decided at once against the current policy too; undefined when refused, `refuse` answered.
   */
  hold(
    connection: object,
    facts: OpenFacts,
    cut: () => void,
    refuse: (code: EgressDenyCode, reason: string) => void,
  ): OpenHold | undefined {
    return this.#open.hold(this.currentPolicy(), connection, facts, cut, refuse);
  }

  handleConnection(stream: Duplex): void {
    if (this.#closed) {
      stream.destroy();
      return;
    }
    this.track(stream);
    this.#proxyServer.emit('connection', stream);
  }

  /** Keeps a stream to destroy on close(); its errors end it instead of crashing the process. */
  track(stream: Duplex): void {
    this.#live.add(stream);
    stream.on('error', () => stream.destroy());
    stream.once('close', () => this.#live.delete(stream));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const stream of this.#live) stream.destroy();
    this.#live.clear();
    this.#open.clear();
    this.#forwardDeps.httpAgent.destroy();
    this.#forwardDeps.httpsAgent.destroy();
    // Never listened: close() only stops the servers' connection-checking timers.
    await Promise.all(
      [this.#proxyServer, this.#innerServer].map(
        (s) => new Promise<void>((resolve) => s.close(() => resolve())),
      ),
    );
    this.#contexts.clear();
    this.registry.clear();
  }

  record(record: EgressAuditRecord): void {
    this.#deps.record(record);
  }

  /** Base audit fields of a step. */
  auditBase(host: string, port: number, method: string | undefined, target: string | undefined) {
    return {
      boxId: this.boxId,
      ts: this.#deps.now().toISOString(),
      host,
      port,
      ...(method === undefined ? {} : { method }),
      ...(target === undefined ? {} : { path: auditPath(target) }),
    };
  }

  recordDeny(
    host: string,
    port: number,
    method: string | undefined,
    target: string | undefined,
    decision: { code: EgressDenyCode; reason: string },
    leak: boolean,
  ): void {
    this.record({
      ...this.auditBase(host, port, method, target),
      decision: 'deny',
      code: decision.code,
      reason: decision.reason,
      bytesUp: 0,
      bytesDown: 0,
      placeholderLeak: leak,
    });
  }

  recordFailure(
    host: string,
    port: number,
    method: string | undefined,
    target: string | undefined,
    code: EgressErrorCode,
    reason: string,
  ): void {
    this.record({
      ...this.auditBase(host, port, method, target),
      decision: 'error',
      code,
      reason,
      bytesUp: 0,
      bytesDown: 0,
      placeholderLeak: false,
    });
  }

  #denyRaw(socket: Duplex, req: IncomingMessage, code: EgressDenyCode, reason: string): void {
    const authority = parseAuthority(req.url ?? '');
    this.recordDeny(
      authority?.host ?? (req.url ?? '').slice(0, 255),
      authority?.port ?? 0,
      req.method,
      undefined,
      {
        code,
        reason,
      },
      false,
    );
    writeRawResponse(socket, 403, DENY_HEADER, code, reason);
  }

  /**
   * The steps shared by CONNECT and plain HTTP: decide on the name, resolve it (unless mapped),
   * decide again on every address. Returns the target or the refusal already answered.
   */
  async #admit(
    request: EgressRequest,
    refuse: (code: EgressDenyCode, reason: string) => void,
    fail: (code: EgressErrorCode, reason: string) => void,
  ): Promise<{ target: ConnectTarget; decision: EgressDecision & { action: 'allow' } } | undefined> {
    const policy = this.currentPolicy();
    let decision = decide(request, policy);
    if (decision.action === 'deny') return void refuse(decision.code, decision.reason);
    const host = canonicalizeHost(request.host);
    if (host === undefined) return void refuse('bad_request', 'invalid host');
    const resolved = await resolveTarget(
      host,
      request.port,
      policy,
      this.#deps.lookup,
      this.#deps.dnsTimeoutMs,
    );
    if (!resolved.ok) return void fail('dns_failed', resolved.reason);
    if (!resolved.target.mapped) {
      decision = decide({ ...request, addresses: resolved.target.addresses }, policy);
      if (decision.action === 'deny') return void refuse(decision.code, decision.reason);
    }
    return { target: resolved.target, decision };
  }

  async #onConnect(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const authority = parseAuthority(req.url ?? '');
    if (authority === undefined) {
      this.#denyRaw(socket, req, 'bad_request', 'CONNECT needs host:port');
      return;
    }
    const { host, port } = authority;
    const admitted = await this.#admit(
      { stage: 'connect', host, port },
      (code, reason) => {
        this.recordDeny(
          canonicalizeHost(host)?.host ?? host,
          port,
          'CONNECT',
          undefined,
          { code, reason },
          false,
        );
        writeRawResponse(socket, 403, DENY_HEADER, code, reason);
      },
      (code, reason) => {
        this.recordFailure(canonicalizeHost(host)?.host ?? host, port, 'CONNECT', undefined, code, reason);
        writeRawResponse(socket, 502, ERROR_HEADER, code, reason);
      },
    );
    if (admitted === undefined) return;
    if (socket.destroyed || this.#closed) return;
    const mode = admitted.decision.intercept ? 'intercept' : 'tunnel';
    // What a policy update that refuses this connection destroys: the box's socket, and the
    // upstream socket or terminated TLS once they exist.
    const parts: Duplex[] = [socket];
    const held = this.hold(
      socket,
      { mode, target: admitted.target },
      () => parts.forEach((part) => part.destroy()),
      (code, reason) => writeRawResponse(socket, 403, DENY_HEADER, code, reason),
    );
    if (held === undefined) return;
    socket.once('close', () => held.release());
    if (mode === 'intercept') await this.#intercept(socket, head, admitted.target, parts);
    else await this.#tunnel(socket, head, admitted.target, parts);
  }

  async #tunnel(socket: Duplex, head: Buffer, target: ConnectTarget, parts: Duplex[]): Promise<void> {
    let upstream: Duplex;
    try {
      upstream = await dialTarget(target, this.#deps.connectTimeoutMs);
    } catch (err) {
      const reason = `cannot connect to ${target.host}:${target.port}: ${describeNetError(err)}`;
      this.recordFailure(target.host, target.port, 'CONNECT', undefined, 'upstream_failed', reason);
      writeRawResponse(socket, 502, ERROR_HEADER, 'upstream_failed', reason);
      return;
    }
    if (socket.destroyed || this.#closed) {
      upstream.destroy();
      return;
    }
    this.track(upstream);
    parts.push(upstream);
    const base = this.auditBase(target.host, target.port, 'CONNECT', undefined);
    let bytesUp = head.length;
    let bytesDown = 0;
    let recorded = false;
    const finish = (): void => {
      if (recorded) return;
      recorded = true;
      this.record({
        ...base,
        mode: 'tunnel',
        decision: 'allow',
        code: 'allowed',
        reason: `${target.host} is allowed; tunnelled untouched`,
        bytesUp,
        bytesDown,
        placeholderLeak: false,
      });
    };
    socket.write(CONNECT_OK);
    if (head.length > 0) upstream.write(head);
    socket.on('data', (chunk: Buffer) => (bytesUp += chunk.length));
    upstream.on('data', (chunk: Buffer) => (bytesDown += chunk.length));
    socket.pipe(upstream);
    upstream.pipe(socket);
    socket.once('close', () => {
      upstream.destroy();
      finish();
    });
    upstream.once('close', () => {
      // The destination is gone: let what it sent drain to the box, then close the box's side too.
      if (!socket.destroyed) socket.end();
      setTimeout(() => socket.destroy(), 10_000).unref();
      finish();
    });
  }

  #secureContext(host: string): Promise<tls.SecureContext> {
    let pending = this.#contexts.get(host);
    if (pending === undefined) {
      pending = this.#deps.ca
        .issue(host)
        .then((cert) => tls.createSecureContext({ key: cert.keyPem, cert: cert.certPem }));
      this.#contexts.set(host, pending);
      pending.catch(() => this.#contexts.delete(host));
    }
    return pending;
  }

  async #intercept(socket: Duplex, head: Buffer, target: ConnectTarget, parts: Duplex[]): Promise<void> {
    let secureContext: tls.SecureContext;
    try {
      secureContext = await this.#secureContext(target.host);
    } catch (err) {
      const reason = `cannot issue a certificate for ${target.host}: ${describeNetError(err)}`;
      this.recordFailure(target.host, target.port, 'CONNECT', undefined, 'upstream_failed', reason);
      writeRawResponse(socket, 502, ERROR_HEADER, 'upstream_failed', reason);
      return;
    }
    if (socket.destroyed || this.#closed) return;
    this.record({
      ...this.auditBase(target.host, target.port, 'CONNECT', undefined),
      mode: 'intercept',
      decision: 'allow',
      code: 'allowed',
      reason: `${target.host} is allowed; TLS terminated on the host (credential rule or repos list)`,
      bytesUp: 0,
      bytesDown: 0,
      placeholderLeak: false,
    });
    socket.write(CONNECT_OK);
    if (head.length > 0) socket.unshift(head);
    const tlsSocket = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext,
      ALPNProtocols: ['http/1.1'],
    });
    parts.push(tlsSocket);
    this.intercepted.set(tlsSocket, {
      host: target.host,
      port: target.port,
      target,
      connection: socket,
      cut: () => parts.forEach((part) => part.destroy()),
    });
    this.track(tlsSocket);
    this.#innerServer.emit('connection', tlsSocket);
  }

  async #onProxyRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '';
    const parsed = parseAbsoluteHttpUri(url);
    if (parsed === undefined) {
      const reason = /^https:/i.test(url)
        ? 'https:// URIs must be sent with CONNECT'
        : 'this is a proxy: send an absolute http:// URI or CONNECT host:port';
      this.recordDeny('', 0, req.method, undefined, { code: 'bad_request', reason }, false);
      respondDenied(res, 'bad_request', reason);
      return;
    }
    const { authority, target: path } = parsed;
    const shownHost = canonicalizeHost(authority.host)?.host ?? authority.host;
    const leak = hasPlaceholder(req);
    const request = {
      stage: 'http',
      host: authority.host,
      port: authority.port,
      method: req.method ?? 'GET',
      path,
    } as const;
    const admitted = await this.#admit(
      request,
      (code, reason) => {
        this.recordDeny(shownHost, authority.port, req.method, path, { code, reason }, leak);
        respondDenied(res, code, reason);
      },
      (code, reason) => {
        this.recordFailure(shownHost, authority.port, req.method, path, code, reason);
        respondFailed(res, code, reason);
      },
    );
    if (admitted === undefined || res.destroyed) return;
    const held = this.hold(
      res,
      { mode: 'http', target: admitted.target, request },
      () => res.destroy(),
      (code, reason) => respondDenied(res, code, reason),
    );
    if (held === undefined) return;
    res.once('close', () => held.release());
    const headers = endToEndHeaders(req.headers);
    headers.host = hostHeaderFor(admitted.target.host, authority.port, 80);
    forwardRequest(
      req,
      res,
      { scheme: 'http', target: admitted.target, path, headers, scrub: [], injected: [], leak, mode: 'http' },
      this.forwardDeps,
    );
  }
}
