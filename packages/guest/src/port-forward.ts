import fsp from 'node:fs/promises';
import net from 'node:net';
import type { Listener, ParsedRequest } from '@agentbox/protocol';
import { GuestOpError, errnoCode, type RequestContext } from './context.js';

type PortConnect = Extract<ParsedRequest, { op: 'port.connect' }>;

/** Bytes read from the guest service that may wait for the channel before it is paused. */
const MAX_QUEUED_BYTES = 1024 * 1024;

function connect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, allowHalfOpen: true });
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/**
 * One published connection, host → guest: connects to the guest port on loopback (IPv4, then
 * IPv6) and relays bytes both ways on the request's channel until both directions ended. Resolves
 * when the connection is closed; a refused connect is an error reply.
 */
export async function portConnect(req: PortConnect, ctx: RequestContext): Promise<Record<string, never>> {
  let socket: net.Socket;
  try {
    socket = await connect('127.0.0.1', req.port).catch(() => connect('::1', req.port));
  } catch (err) {
    throw new GuestOpError(
      'guest_error',
      `nothing accepts connections on port ${req.port} in the box (${errnoCode(err) ?? 'error'})`,
    );
  }
  return new Promise((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve({});
    };
    ctx.onCancel(finish);
    ctx.onData(
      (chunk) => socket.write(chunk, () => ctx.mux.consumed(ctx.channel, chunk.length)),
      () => socket.end(),
    );
    let queued = 0;
    socket.on('data', (chunk: Buffer) => {
      queued += chunk.length;
      if (queued > MAX_QUEUED_BYTES) socket.pause();
      ctx.mux.sendData(ctx.channel, 'data', chunk).then(() => {
        queued -= chunk.length;
        if (queued <= MAX_QUEUED_BYTES) socket.resume();
      }, finish);
    });
    socket.on('end', () => void ctx.mux.sendEnd(ctx.channel).catch(() => undefined));
    socket.on('error', finish);
    socket.on('close', finish);
  });
}

const LISTEN_STATE = '0A';
const V4: Record<string, Listener['address']> = { '00000000': '0.0.0.0', '0100007F': '127.0.0.1' };
const V6: Record<string, Listener['address']> = {
  '00000000000000000000000000000000': '::',
  '00000000000000000000000001000000': '::1',
};

/** Listening TCP sockets on a wildcard or loopback address, from /proc/net/tcp{,6} text. */
export function parseProcNetTcp(text: string, v6: boolean): Listener[] {
  const out: Listener[] = [];
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 4 || fields[3] !== LISTEN_STATE) continue;
    const [ip, portHex] = fields[1]!.split(':');
    const address = (v6 ? V6 : V4)[ip ?? ''];
    const port = parseInt(portHex ?? '', 16);
    if (address && port > 0 && port < 65536) out.push({ port, address });
  }
  return out;
}

export async function listListeners(): Promise<Listener[]> {
  const read = (p: string) => fsp.readFile(p, 'utf8').catch(() => '');
  const [v4, v6] = await Promise.all([read('/proc/net/tcp'), read('/proc/net/tcp6')]);
  const seen = new Set<string>();
  return [...parseProcNetTcp(v4, false), ...parseProcNetTcp(v6, true)]
    .filter((l) => {
      const key = `${l.address}|${l.port}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    })
    .slice(0, 4096);
}
