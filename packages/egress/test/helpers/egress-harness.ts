import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { EgressPolicyInput } from '@agentbox/protocol';
import {
  createCertificateAuthority,
  createEgressGateway,
  MemoryAuditSink,
  SecretStore,
  type CertificateAuthority,
  type EgressBox,
  type EgressGateway,
  type EgressIdentity,
  type EgressGatewayOptions,
} from '../../src/index.js';

/**
 * Test harness: fake upstreams on 127.0.0.1 (HTTP, and HTTPS with a test CA), a gateway with one
 * box, and a local TCP server that hands each accepted socket to box.handleConnection() — the
 * stand-in for the VM channel. Clients then talk HTTP proxy protocol to that server.
 */

export interface Echo {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  servername?: string;
}

export type Handler = (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => void;

const echoHandler: Handler = (req, body, res) => {
  const echo: Echo = {
    method: req.method ?? '',
    url: req.url ?? '',
    headers: req.headers,
    body: body.toString('utf8'),
    ...(req.socket instanceof tls.TLSSocket ? { servername: String(req.socket.servername) } : {}),
  };
  const out = JSON.stringify(echo);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
  res.end(out);
};

export interface FakeUpstream {
  readonly port: number;
  /** Every request the upstream received, in order. */
  readonly seen: Echo[];
  handler: Handler;
  close(): Promise<void>;
}

function collect(server: http.Server | https.Server, upstream: { seen: Echo[]; handler: Handler }): void {
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      upstream.seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: body.toString(),
      });
      upstream.handler(req, body, res);
    });
  });
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

async function startUpstream(server: http.Server | https.Server): Promise<FakeUpstream> {
  const state = { seen: [] as Echo[], handler: echoHandler };
  collect(server, state);
  const port = await listen(server);
  return {
    port,
    seen: state.seen,
    get handler() {
      return state.handler;
    },
    set handler(h: Handler) {
      state.handler = h;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export function startHttpUpstream(): Promise<FakeUpstream> {
  return startUpstream(http.createServer());
}

/** An HTTPS upstream whose certificate (from `ca`) covers `hosts`, chosen by SNI. */
export async function startHttpsUpstream(ca: CertificateAuthority, hosts: string[]): Promise<FakeUpstream> {
  const contexts = new Map<string, tls.SecureContext>();
  for (const host of hosts) {
    const cert = await ca.issue(host);
    contexts.set(host, tls.createSecureContext({ key: cert.keyPem, cert: cert.certPem }));
  }
  const first = await ca.issue(hosts[0]!);
  const server = https.createServer({
    key: first.keyPem,
    cert: first.certPem,
    SNICallback: (name, cb) => cb(null, contexts.get(name) ?? contexts.get(hosts[0]!)),
  });
  return startUpstream(server);
}

export interface Harness {
  readonly gateway: EgressGateway;
  readonly box: EgressBox;
  readonly audit: MemoryAuditSink;
  readonly secrets: SecretStore;
  /** Port of the local server standing in for the guest proxy's VM channel. */
  readonly proxyPort: number;
  close(): Promise<void>;
}

export interface HarnessOptions extends Omit<EgressGatewayOptions, 'audit' | 'secrets'> {
  readonly policy: EgressPolicyInput;
  readonly secrets?: Record<string, string>;
  readonly boxSecrets?: string[];
  readonly boxId?: string;
  /** The box's CA and placeholders from an earlier gateway (a daemon before a restart). */
  readonly identity?: EgressIdentity;
}

export async function startHarness(options: HarnessOptions): Promise<Harness> {
  const audit = new MemoryAuditSink();
  const secrets = new SecretStore();
  for (const [name, value] of Object.entries(options.secrets ?? {})) secrets.set(name, value);
  const gateway = createEgressGateway({
    allowUpstreamMap: true,
    hostAddresses: () => [],
    ...options,
    audit,
    secrets,
  });
  const box = await gateway.openBox({
    boxId: options.boxId ?? 'box-test000001',
    policy: options.policy,
    ...(options.boxSecrets === undefined ? {} : { secrets: options.boxSecrets }),
    ...(options.identity === undefined ? {} : { identity: options.identity }),
  });
  const channel = net.createServer((socket) => box.handleConnection(socket));
  const proxyPort = await listen(channel);
  return {
    gateway,
    box,
    audit,
    secrets,
    proxyPort,
    close: async () => {
      await gateway.close();
      await new Promise<void>((resolve) => channel.close(() => resolve()));
    },
  };
}

export interface ProxyResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A response read by these helpers: the body bytes too (a coded body does not survive `body`). */
export interface ReceivedResponse extends ProxyResponse {
  raw: Buffer;
}

function readResponse(res: http.IncomingMessage): Promise<ReceivedResponse> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => {
      const raw = Buffer.concat(chunks);
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: raw.toString(), raw });
    });
    res.on('error', reject);
  });
}

/** A plain-HTTP proxy request (absolute URI) through the gateway. */
export function proxyHttp(
  proxyPort: number,
  url: string,
  options: { method?: string; headers?: http.OutgoingHttpHeaders; body?: string } = {},
): Promise<ReceivedResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port: proxyPort,
      method: options.method ?? 'GET',
      path: url,
      headers: options.headers,
      agent: false,
    });
    req.on('response', (res) => void readResponse(res).then(resolve, reject));
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Raw CONNECT: the proxy's answer, and the socket when it was 200. */
export function connect(
  proxyPort: number,
  authority: string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; socket?: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port: proxyPort,
      method: 'CONNECT',
      path: authority,
      headers: { host: authority },
      agent: false,
    });
    req.on('connect', (res: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      if (res.statusCode === 200) {
        if (head.length > 0) socket.unshift(head);
        resolve({ status: 200, headers: res.headers, body: '', socket });
        return;
      }
      const chunks: Buffer[] = [head];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('close', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

export interface HttpsOptions {
  /** CONNECT target; default `${host}:443`. */
  authority?: string;
  /** TLS server name; default the host. */
  servername?: string;
  /** Host header; default the host. */
  hostHeader?: string;
  /** Trusted CA PEMs (the box CA for intercepted hosts, the test CA for tunnelled ones). */
  ca: string[];
  /** Skip the certificate name check (to send a mismatched SNI on purpose). */
  skipNameCheck?: boolean;
  method?: string;
  headers?: http.OutgoingHttpHeaders;
  body?: string | Buffer;
}

/** CONNECT, then TLS with the given SNI, then one HTTP request with the given Host header. */
export async function proxyHttps(proxyPort: number, host: string, path: string, options: HttpsOptions) {
  const tunnel = await connect(proxyPort, options.authority ?? `${host}:443`);
  if (tunnel.socket === undefined) {
    return {
      status: tunnel.status,
      headers: tunnel.headers,
      body: tunnel.body,
      raw: Buffer.from(tunnel.body),
      peerCertIssuer: '',
    };
  }
  const servername = options.servername ?? host;
  const secure = await new Promise<tls.TLSSocket>((resolve, reject) => {
    const s = tls.connect({
      socket: tunnel.socket,
      servername,
      ca: options.ca,
      ALPNProtocols: ['http/1.1'],
      ...(options.skipNameCheck === true ? { checkServerIdentity: () => undefined } : {}),
    });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
  const peerCertIssuer = String(secure.getPeerCertificate().issuer.CN);
  return new Promise<ReceivedResponse & { peerCertIssuer: string }>((resolve, reject) => {
    const req = http.request({
      createConnection: () => secure,
      method: options.method ?? 'GET',
      path,
      headers: { host: options.hostHeader ?? host, ...options.headers },
    });
    req.on('response', (res) => {
      readResponse(res).then((r) => {
        secure.destroy();
        resolve({ ...r, peerCertIssuer });
      }, reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** A test CA for fake upstreams (what a real public CA is to the real upstreams). */
export function createTestCa(): Promise<CertificateAuthority> {
  return createCertificateAuthority({ commonName: 'agentbox test upstream CA' });
}
