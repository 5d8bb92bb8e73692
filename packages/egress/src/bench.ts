import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { MemoryAuditSink } from './audit.js';
import { createEgressGateway } from './gateway.js';

/**
 * What the gateway costs, measured on loopback: the same requests direct to a local upstream and
 * through a real gateway box (fed by a local TCP server standing in for the VM channel). For
 * `agentbox bench`; it needs no network and no VM.
 */

export interface EgressBenchOptions {
  /** Requests per latency series (default 200). */
  readonly requests?: number;
  /** Size of the throughput download (default 64 MiB). */
  readonly payloadBytes?: number;
}

export interface EgressBenchResult {
  readonly requests: number;
  readonly payloadBytes: number;
  /** p50 of a fresh connection + GET of a tiny body: direct, and through a CONNECT tunnel. */
  readonly connectLatencyMs: { readonly direct: number; readonly proxied: number; readonly added: number };
  /** p50 of a GET on a kept-alive connection: direct, and as a plain-HTTP proxy request. */
  readonly requestLatencyMs: { readonly direct: number; readonly proxied: number; readonly added: number };
  /** Download rate of the payload: direct, through a CONNECT tunnel, through the HTTP forwarder. */
  readonly throughputMBps: { readonly direct: number; readonly tunnel: number; readonly http: number };
}

const HOST = 'bench.agentbox.test';

function p50(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

const round = (n: number): number => Math.round(n * 1000) / 1000;

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** One GET over `socket` (already connected, possibly tunnelled); resolves with the body size. */
function getOver(socket: net.Socket, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ createConnection: () => socket, path, headers: { host: HOST } });
    req.on('response', (res) => {
      let size = 0;
      res.on('data', (c: Buffer) => (size += c.length));
      res.on('end', () => resolve(size));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
    // A tunnel hands the socket over paused (nothing may be lost before the parser listens).
    socket.resume();
  });
}

function dial(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', noDelay: true }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Opens a CONNECT tunnel through the proxy; resolves with the tunnelled socket. */
async function tunnel(proxyPort: number, upstreamPort: number): Promise<net.Socket> {
  const socket = await dial(proxyPort);
  socket.write(`CONNECT ${HOST}:${upstreamPort} HTTP/1.1\r\nHost: ${HOST}:${upstreamPort}\r\n\r\n`);
  await new Promise<void>((resolve, reject) => {
    let head = '';
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.removeListener('data', onData);
      socket.pause();
      if (!head.startsWith('HTTP/1.1 200')) reject(new Error(`CONNECT refused: ${head.split('\r\n')[0]}`));
      else {
        const rest = Buffer.from(head.slice(end + 4), 'latin1');
        if (rest.length > 0) socket.unshift(rest);
        resolve();
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
  return socket;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

function keptAliveGet(agent: http.Agent, port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent, headers: { host: HOST } });
    req.on('response', (res) => {
      let size = 0;
      res.on('data', (c: Buffer) => (size += c.length));
      res.on('end', () => resolve(size));
    });
    req.on('error', reject);
    req.end();
  });
}

export async function benchEgress(options: EgressBenchOptions = {}): Promise<EgressBenchResult> {
  const requests = options.requests ?? 200;
  const payloadBytes = options.payloadBytes ?? 64 * 1024 * 1024;
  const block = Buffer.alloc(64 * 1024, 0x61);
  const upstream = http.createServer((req, res) => {
    if (req.url === '/big') {
      res.writeHead(200, { 'content-length': payloadBytes });
      let left = payloadBytes;
      const pump = (): void => {
        while (left > 0) {
          const chunk = block.subarray(0, Math.min(block.length, left));
          left -= chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    } else {
      res.writeHead(200, { 'content-length': 2 });
      res.end('ok');
    }
  });
  const upstreamPort = await listen(upstream);
  const gateway = createEgressGateway({ allowUpstreamMap: true, audit: new MemoryAuditSink({ limit: 100 }) });
  const box = await gateway.openBox({
    boxId: 'box-bench00000',
    policy: {
      allowDomains: [HOST],
      allowPorts: [80, upstreamPort],
      upstreams: { [HOST]: `127.0.0.1:${upstreamPort}` },
    },
  });
  const channel = net.createServer((socket) => box.handleConnection(socket));
  const proxyPort = await listen(channel);
  const directAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const proxyAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const connectDirect: number[] = [];
    const connectProxied: number[] = [];
    const requestDirect: number[] = [];
    const requestProxied: number[] = [];
    for (let i = 0; i < requests; i++) {
      connectDirect.push(await timed(async () => getOver(await dial(upstreamPort), '/small')));
      connectProxied.push(await timed(async () => getOver(await tunnel(proxyPort, upstreamPort), '/small')));
      requestDirect.push(await timed(() => keptAliveGet(directAgent, upstreamPort, '/small')));
      requestProxied.push(await timed(() => keptAliveGet(proxyAgent, proxyPort, `http://${HOST}/small`)));
    }
    const mbps = (ms: number): number => round(payloadBytes / 1e6 / (ms / 1000));
    const direct = await timed(async () => getOver(await dial(upstreamPort), '/big'));
    const viaTunnel = await timed(async () => getOver(await tunnel(proxyPort, upstreamPort), '/big'));
    const viaHttp = await timed(() => keptAliveGet(proxyAgent, proxyPort, `http://${HOST}/big`));
    const cd = p50(connectDirect);
    const cp = p50(connectProxied);
    const rd = p50(requestDirect);
    const rp = p50(requestProxied);
    return {
      requests,
      payloadBytes,
      connectLatencyMs: { direct: round(cd), proxied: round(cp), added: round(cp - cd) },
      requestLatencyMs: { direct: round(rd), proxied: round(rp), added: round(rp - rd) },
      throughputMBps: { direct: mbps(direct), tunnel: mbps(viaTunnel), http: mbps(viaHttp) },
    };
  } finally {
    directAgent.destroy();
    proxyAgent.destroy();
    await gateway.close();
    await new Promise<void>((resolve) => channel.close(() => resolve()));
    upstream.closeAllConnections();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
  }
}
