import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Readable } from 'node:stream';
import type { EgressAuditRecord } from '@agentbox/protocol';
import { PlaceholderSpotter, ReplaceTransform } from './body-scan.js';
import { contentCodingOf, createDecoder } from './content-coding.js';
import { auditPath, endToEndHeaders, respondFailed } from './http-util.js';
import { scrubHeaders, scrubText, type HeaderMap } from './placeholders.js';
import type { MeteredCall } from './spend-ledger.js';
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
  /** A model call whose answer is priced as it streams (see spend-ledger.ts). */
  readonly meter?: MeteredCall;
}

/**
 * How long the gateway keeps reading a metered answer after the box hung up, to learn what the
 * call cost (its prompt is billed once the API has it, whether or not anyone reads the answer).
 */
export const METER_DRAIN_MS = 60_000;

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
  const meter = plan.meter;
  /** The answer's body before the scrub: what the meter reads, and drains once the box is gone. */
  let answer: Readable | undefined;
  let draining = false;

  const finish = (): void => {
    if (recorded) return;
    recorded = true;
    if (meter) meter.end(sentWhole);
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
      ...(meter ? { costUsd: meter.costUsd } : {}),
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
  /** The request reached the upstream whole: it may have been acted on (and billed). */
  let sentWhole = false;
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

  upstream.once('finish', () => (sentWhole = true));
  // A budget passed mid-answer: the model stops generating once its caller is gone.
  meter?.onCut(() => {
    upstream.destroy();
    res.destroy();
  });
  upstream.on('response', (upRes) => {
    upRes.on('error', () => {
      if (!res.writableEnded) res.destroy();
    });
    meter?.response(upRes.statusCode ?? 502, upRes.headers['content-type']);
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
    if (meter) {
      answer = body;
      body.on('data', (chunk: Buffer) => meter.data(chunk));
      upRes.on('end', finish);
    }
    upRes.on('data', (chunk: Buffer) => {
      bytesDown += chunk.length;
    });
    if (draining) {
      drain();
      return;
    }
    res.writeHead(
      upRes.statusCode ?? 502,
      scrubText(upRes.statusMessage ?? '', plan.scrub),
      scrubHeaders(headers, plan.scrub),
    );
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

  /**
   * The box hung up on a metered call whose cost is not known yet: the answer is read (and
   * dropped) until it is, the upstream ends, or METER_DRAIN_MS pass.
   */
  const drain = (): void => {
    if (answer === undefined) return; // no answer yet: the response handler calls back
    answer.unpipe();
    answer.on('data', () => {
      if (!meter!.wantsUsage) upstream.destroy();
    });
    answer.resume();
  };
  // A metered call is over when its upstream is, which can be after the box hung up.
  if (meter) upstream.once('close', finish);

  res.on('close', () => {
    if (res.writableFinished) return finish();
    // The guest went away: release the upstream side, unless a model call must still be priced.
    if (meter?.wantsUsage && sentWhole) {
      draining = true;
      const timer = setTimeout(() => upstream.destroy(), METER_DRAIN_MS);
      upstream.once('close', () => clearTimeout(timer));
      drain();
      return;
    }
    upstream.destroy();
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
