import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { EgressDenyCode, EgressErrorCode } from '@agentbox/protocol';
import type { HeaderMap } from './placeholders.js';

/** Header naming the policy that refused a request, so agents can tell a block from a network fault. */
export const DENY_HEADER = 'x-agentbox-deny';
/** Header naming why an allowed request failed on the way (DNS, upstream). */
export const ERROR_HEADER = 'x-agentbox-error';

export interface Authority {
  /** Host as written, brackets kept for IPv6 (canonicalize with canonicalizeHost). */
  readonly host: string;
  readonly port: number;
}

/** Parses `host:port`, `[v6]:port` or, with a default port, a bare host. No userinfo. */
export function parseAuthority(text: string, defaultPort?: number): Authority | undefined {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:@[\]/\s]+)(?::(\d{1,5}))?$/.exec(text);
  if (m === null) return undefined;
  if (m[2] === undefined && defaultPort === undefined) return undefined;
  const port = m[2] === undefined ? defaultPort! : Number(m[2]);
  return port >= 1 && port <= 65535 ? { host: m[1]!, port } : undefined;
}

/** Splits a plain-HTTP proxy request's absolute URI; only `http:` is proxied this way. */
export function parseAbsoluteHttpUri(url: string): { authority: Authority; target: string } | undefined {
  const m = /^http:\/\/([^/?#]*)([/?][^#]*)?$/i.exec(url);
  if (m === null) return undefined;
  const authority = parseAuthority(m[1]!, 80);
  if (authority === undefined) return undefined;
  const rest = m[2] ?? '/';
  return { authority, target: rest.startsWith('?') ? `/${rest}` : rest };
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Copies end-to-end headers only: hop-by-hop ones and those the Connection header lists go. */
export function endToEndHeaders(headers: IncomingHttpHeaders): HeaderMap {
  const listed = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: HeaderMap = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || listed.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Host header value for a destination (port only when not the scheme's default). */
export function hostHeaderFor(host: string, port: number, defaultPort: number): string {
  const shown = host.includes(':') ? `[${host}]` : host;
  return port === defaultPort ? shown : `${shown}:${port}`;
}

function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').slice(0, 500);
}

function denyBody(code: string, reason: string): string {
  return `agentbox egress: ${code}: ${oneLine(reason)}\n`;
}

/** One refusal or failure answer: status, the header naming the code, a one-line reason. */
function respondWithCode(
  res: ServerResponse,
  status: 403 | 502,
  header: string,
  code: string,
  reason: string,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = denyBody(code, reason);
  res.writeHead(status, {
    [header]: code,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    connection: 'close',
  } satisfies OutgoingHttpHeaders);
  res.end(body);
}

/** Answers a refused plain-HTTP or intercepted request: 403 + X-Agentbox-Deny + one-line reason. */
export function respondDenied(res: ServerResponse, code: EgressDenyCode, reason: string): void {
  respondWithCode(res, 403, DENY_HEADER, code, reason);
}

/** Answers an allowed request that failed on the way: 502 + X-Agentbox-Error. */
export function respondFailed(res: ServerResponse, code: EgressErrorCode, reason: string): void {
  respondWithCode(res, 502, ERROR_HEADER, code, reason);
}

/** The same answers written raw on a CONNECT socket (no ServerResponse exists for CONNECT). */
export function writeRawResponse(
  socket: Duplex,
  status: 403 | 502 | 400,
  header: string,
  code: string,
  reason: string,
): void {
  const body = denyBody(code, reason);
  const statusText = status === 403 ? 'Forbidden' : status === 502 ? 'Bad Gateway' : 'Bad Request';
  const head =
    `HTTP/1.1 ${status} ${statusText}\r\n${header}: ${code}\r\n` +
    `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
    `Connection: close\r\n\r\n`;
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(head + body);
}

/** The path part of a request target, without the query or fragment. */
export function pathOnly(target: string): string {
  const q = target.search(/[?#]/);
  return q < 0 ? target : target.slice(0, q);
}

/** The path part of a request target, without the query (what the audit keeps), truncated. */
export function auditPath(target: string): string {
  return pathOnly(target).slice(0, 1024);
}
