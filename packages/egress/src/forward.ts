import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Readable } from 'node:stream';
import type { EgressAuditRecord } from '@agentbox/protocol';
import { PlaceholderSpotter, ReplaceTransform } from './body-scan.js';
import { contentCodingOf, createDecoder } from './content-coding.js';
import { auditPath, endToEndHeaders, respondFailed } from './http-util.js';
import { scrubHeaders, scrubText, type HeaderMap } from './placeholders.js';
import { describeNetError, pinnedLookup, type ConnectTarget } from './upstream.js';

/**
 * Sends one HTTP request the policy allowed to its destination and streams the answer back: plain
 * HTTP for absolute-URI proxy requests, HTTPS (certificate verified) for requests inside TLS the
 * gateway terminated. Writes one audit record when the exchange ends, with byte counts.
 */

export interface ForwardDeps {
  readonly boxId: string;
  readonly record: (record: EgressAuditRecord) => void;
  readonly now: () => Date;
  readonly httpAgent: http.Agent;
  readonly httpsAgent: https.Agent;
}

export interface ForwardPlan {
  readonly scheme: 'http' | 'https';
  readonly target: ConnectTarget;
  /** Request target sent upstream (origin-form). */
  readonly path: string;
  /** End-to-end headers after injection, Host included. */
  readonly headers: HeaderMap;
  /** [real, shown] pairs replaced in the response (values injected on this request). */
  readonly scrub: ReadonlyArray<readonly [string, string]>;
  readonly injected: readonly string[];
  /** A placeholder was already seen in the URL or headers. */
  readonly leak: boolean;
  readonly mode: 'http' | 'intercept';
  /** The body to send instead of streaming the box's (already read and judged); headers must match it. */
  readonly body?: Buffer;
  /** What the audit record says when the exchange succeeds (default: the host is allowed). */
  readonly reason?: string;
}

/**
 * Headers for a request whose answer will be scrubbed: the scrub reads plain bytes, so the answer
 * is asked for whole (no Range: a slice of an echo can hold part of a value) and uncoded.
 */
function scrubbableRequestHeaders(headers: HeaderMap): HeaderMap {
  const out: HeaderMap = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name !== 'accept-encoding' && name !== 'range' && name !== 'if-range') out[name] = value;
  }
  out['accept-encoding'] = 'identity';
  return out;
}

export function forwardRequest(
  req: IncomingMessage,
  res: ServerResponse,
  plan: ForwardPlan,
  deps: ForwardDeps,
): void {
  const startedAt = deps.now();
  const method = req.method ?? 'GET';
  const spotter = new PlaceholderSpotter();
  let bytesUp = 0;
  let bytesDown = 0;
  let failure: string | undefined;
  let recorded = false;

  const finish = (): void => {
    if (recorded) return;
    recorded = true;
    deps.record({
      boxId: deps.boxId,
      ts: startedAt.toISOString(),
      host: plan.target.host,
      port: plan.target.port,
      method,
      path: auditPath(plan.path),
      mode: plan.mode,
      decision: failure === undefined ? 'allow' : 'error',
      code: failure === undefined ? 'allowed' : 'upstream_failed',
      reason:
        failure === undefined
          ? `${plan.reason ?? `${plan.target.host} is allowed`}${plan.injected.length > 0 ? '; credentials injected' : ''}`
          : failure,
      bytesUp,
      bytesDown,
      placeholderLeak: plan.leak || spotter.found,
      ...(plan.injected.length > 0 ? { injected: [...plan.injected] } : {}),
    });
  };

  const address = plan.target.addresses[0]!;
  const isName = net.isIP(plan.target.host) === 0;
  const options: https.RequestOptions = {
    host: plan.target.host,
    port: plan.target.connectPort,
    method,
    path: plan.path,
    headers: plan.scrub.length > 0 ? scrubbableRequestHeaders(plan.headers) : plan.headers,
    lookup: pinnedLookup(address),
    agent: plan.scheme === 'https' ? deps.httpsAgent : deps.httpAgent,
    ...(plan.scheme === 'https' && isName ? { servername: plan.target.host } : {}),
  };
  let upstream: http.ClientRequest;
  try {
    upstream = plan.scheme === 'https' ? https.request(options) : http.request(options);
  } catch (err) {
    // e.g. a header value node accepts from a client but refuses to send
    failure = `cannot send to ${plan.target.host}: ${describeNetError(err)}`;
    respondFailed(res, 'upstream_failed', failure);
    req.resume();
    finish();
    return;
  }

  upstream.on('response', (upRes) => {
    upRes.on('error', () => {
      if (!res.writableEnded) res.destroy();
    });
    const headers = endToEndHeaders(upRes.headers);
    const scrubbing = plan.scrub.length > 0;
    const hasBody = method !== 'HEAD' && upRes.statusCode !== 204 && upRes.statusCode !== 304;
    let body: Readable = upRes;
    if (scrubbing && hasBody) {
      // The scrub must see plain bytes: an upstream that encodes despite `identity` is decoded
      // here, or refused when the coding is unknown; never passed on unread.
      const coding = contentCodingOf(upRes.headers['content-encoding']);
      if (coding.kind === 'refuse') {
        failure = `${plan.target.host} answered with a body the gateway cannot scrub: ${coding.reason}`;
        upRes.destroy();
        respondFailed(res, 'upstream_failed', failure);
        return;
      }
      if (coding.kind === 'decode') {
        const decoder = createDecoder(coding.coding);
        decoder.on('error', () => {
          failure = `${plan.target.host} sent a ${coding.coding} body that does not decode`;
          res.destroy();
        });
        body = upRes.pipe(decoder);
        delete headers['content-encoding'];
      }
      // A scrubbed (or decoded) body can change length, so it goes out chunked.
      delete headers['content-length'];
    }
    res.writeHead(
      upRes.statusCode ?? 502,
      scrubText(upRes.statusMessage ?? '', plan.scrub),
      scrubHeaders(headers, plan.scrub),
    );
    upRes.on('data', (chunk: Buffer) => {
      bytesDown += chunk.length;
    });
    if (scrubbing) body = body.pipe(new ReplaceTransform(plan.scrub));
    body.pipe(res);
  });

  upstream.on('error', (err) => {
    if (res.writableEnded) return; // already answered (an unreadable body is refused whole)
    failure = `upstream ${plan.target.host}:${plan.target.port} failed: ${describeNetError(err)}`;
    if (!res.headersSent) respondFailed(res, 'upstream_failed', failure);
    else res.destroy();
  });

  if (plan.body === undefined) {
    req.on('data', (chunk: Buffer) => {
      bytesUp += chunk.length;
      spotter.push(chunk);
    });
    req.pipe(upstream);
  } else {
    bytesUp = plan.body.length;
    spotter.push(plan.body);
    upstream.end(plan.body);
  }

  res.on('close', () => {
    // The guest went away (or the exchange completed): release the upstream side either way.
    if (!res.writableFinished) upstream.destroy();
    finish();
  });
}

/**
 * Reads a request body of at most `limit` bytes. Past the limit it stops keeping what arrives,
 * drains the rest (so a refusal can still be answered) and gives undefined. Rejects when the box
 * goes away before the end.
 */
export function readBodyCapped(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      done();
      req.resume();
      resolve(undefined);
    };
    const onEnd = (): void => {
      done();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error): void => {
      done();
      reject(err);
    };
    const onClose = (): void => onError(new Error('the request ended before its body did'));
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onError);
    req.once('close', onClose);
  });
}

/** Reads a whole request or response body, refusing more than `limit` bytes. */
export async function readBody(stream: NodeJS.ReadableStream, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    size += buf.length;
    if (size > limit) throw new Error(`body larger than ${limit} bytes`);
    chunks.push(buf);
  }
  return Buffer.concat(chunks);
}
