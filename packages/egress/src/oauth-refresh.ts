import https from 'node:https';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { SecretInjectionRule } from '@agentbox/protocol';
import { contentCodingOf, decodeBody } from './content-coding.js';
import { readBody, type ForwardDeps } from './forward.js';
import { auditPath, endToEndHeaders, respondFailed } from './http-util.js';
import { findPlaceholders, scrubHeaders, scrubText, type PlaceholderRegistry } from './placeholders.js';
import type { SecretStore } from './secrets.js';
import { describeNetError, pinnedLookup, type ConnectTarget } from './upstream.js';

/**
 * OAuth refresh on the host (Claude's subscription login). The box holds only a placeholder for
 * the refresh token; its POST to the token endpoint is completed here with the real refresh
 * token, and the answer is rewritten so the box gets a fresh placeholder for the new access token
 * (valid for this box only) and keeps its refresh placeholder, which now stands for the rotated
 * refresh token in the host store.
 */

type OAuthRule = SecretInjectionRule & { inject: { type: 'oauth_refresh' } };

export function isOAuthRule(rule: SecretInjectionRule): rule is OAuthRule {
  return rule.inject.type === 'oauth_refresh';
}

const REQUEST_LIMIT = 64 * 1024;
const RESPONSE_LIMIT = 1024 * 1024;

export interface OAuthRefreshDeps extends ForwardDeps {
  readonly registry: PlaceholderRegistry;
  readonly store: SecretStore;
}

type Form = { kind: 'json'; data: Record<string, unknown> } | { kind: 'form'; data: URLSearchParams };

function parseForm(body: Buffer, contentType: string): Form | undefined {
  try {
    if (contentType.includes('application/json')) {
      const data: unknown = JSON.parse(body.toString('utf8'));
      return typeof data === 'object' && data !== null && !Array.isArray(data)
        ? { kind: 'json', data: data as Record<string, unknown> }
        : undefined;
    }
    if (contentType.includes('application/x-www-form-urlencoded')) {
      return { kind: 'form', data: new URLSearchParams(body.toString('utf8')) };
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** `body` as a JSON object whatever its content type said, or undefined. */
function jsonObject(body: Buffer): Record<string, unknown> | undefined {
  const form = parseForm(body, 'application/json');
  return form?.kind === 'json' ? { ...form.data } : undefined;
}

function field(form: Form, name: string): string | undefined {
  const value = form.kind === 'json' ? form.data[name] : form.data.get(name);
  return typeof value === 'string' ? value : undefined;
}

function withField(form: Form, name: string, value: string): Buffer {
  if (form.kind === 'json') return Buffer.from(JSON.stringify({ ...form.data, [name]: value }));
  const copy = new URLSearchParams(form.data);
  copy.set(name, value);
  return Buffer.from(copy.toString());
}

interface TokenAnswer {
  readonly status: number;
  readonly headers: OutgoingHttpHeaders;
  /** The body, decoded when the endpoint encoded it despite `identity`. */
  readonly body: Buffer;
  /** Bytes received on the wire. */
  readonly wireBytes: number;
}

/** The answer's body as plain bytes: decoded (bounded), or an error when its coding is unreadable. */
function plainBody(data: Buffer, contentEncoding: string | undefined): Buffer {
  const coding = contentCodingOf(contentEncoding);
  if (coding.kind === 'refuse') throw new Error(coding.reason);
  return coding.kind === 'decode' && data.length > 0 ? decodeBody(coding.coding, data, RESPONSE_LIMIT) : data;
}

function send(
  target: ConnectTarget,
  req: IncomingMessage,
  body: Buffer,
  deps: ForwardDeps,
): Promise<TokenAnswer> {
  const headers = endToEndHeaders(req.headers) as OutgoingHttpHeaders;
  headers['content-length'] = body.length;
  headers['accept-encoding'] = 'identity'; // the answer is rewritten, so it must be readable
  delete headers.range;
  delete headers['if-range'];
  return new Promise((resolve, reject) => {
    const upstream = https.request({
      host: target.host,
      port: target.connectPort,
      servername: target.host,
      method: req.method,
      path: req.url,
      headers,
      lookup: pinnedLookup(target.addresses[0]!),
      agent: deps.httpsAgent,
    });
    upstream.on('error', reject);
    upstream.on('response', (upRes) => {
      readBody(upRes, RESPONSE_LIMIT)
        .then((data) => {
          const answerHeaders = endToEndHeaders(upRes.headers) as OutgoingHttpHeaders;
          delete answerHeaders['content-encoding'];
          return {
            status: upRes.statusCode ?? 502,
            headers: answerHeaders,
            body: plainBody(data, upRes.headers['content-encoding']),
            wireBytes: data.length,
          };
        })
        .then(resolve, reject);
    });
    upstream.end(body);
  });
}

/** Handles a request to an oauth_refresh rule's token endpoint. Resolves when the answer is sent. */
export async function answerOAuthRefresh(
  req: IncomingMessage,
  res: ServerResponse,
  rule: OAuthRule,
  target: ConnectTarget,
  deps: OAuthRefreshDeps,
): Promise<void> {
  const startedAt = deps.now();
  let injected = false;
  let leak = false;
  let failure: string | undefined;
  let bytesUp = 0;
  let bytesDown = 0;
  const reveals: Array<[string, string]> = [];
  try {
    const body = await readBody(req, REQUEST_LIMIT);
    bytesUp = body.length;
    const form = parseForm(body, String(req.headers['content-type'] ?? ''));
    const presented = form === undefined ? undefined : field(form, 'refresh_token');
    const owned = presented !== undefined && deps.registry.secretOf(presented) === rule.secret;
    const realRefresh = owned ? deps.registry.realValue(presented) : undefined;
    let outgoing = body;
    if (form !== undefined && field(form, 'grant_type') === 'refresh_token' && realRefresh !== undefined) {
      outgoing = withField(form, 'refresh_token', realRefresh);
      reveals.push([realRefresh, presented!]);
      injected = true;
    }
    leak = findPlaceholders(body.toString('latin1')).some((p) => !(injected && p === presented));
    const answer = await send(target, req, outgoing, deps);
    bytesDown = answer.wireBytes;
    let out = answer.body;
    if (injected && answer.status >= 200 && answer.status < 300) {
      // A success that is not the token object cannot be rewritten, and may hold the new tokens
      // in a form the scrub below does not know: refused like any other failed refresh.
      const answerForm = parseForm(answer.body, String(answer.headers['content-type'] ?? ''));
      const data = answerForm?.kind === 'json' ? { ...answerForm.data } : jsonObject(answer.body);
      const rotated = typeof data?.refresh_token === 'string' ? data.refresh_token : undefined;
      if (rotated !== undefined) {
        // The old refresh token is spent: every box's refresh placeholder now stands for the new
        // one. Kept even from an answer the box is refused, or every box would be locked out.
        deps.store.set(rule.secret, rotated);
        reveals.push([rotated, presented!]);
      }
      if (answerForm?.kind !== 'json' || data === undefined || typeof data.access_token !== 'string') {
        throw new Error(`${target.host} answered ${answer.status} without a JSON token object`);
      }
      const access = data.access_token;
      const accessPlaceholder = deps.registry.mint(rule.inject.accessSecret, access);
      data.access_token = accessPlaceholder;
      reveals.push([access, accessPlaceholder]);
      if (rotated !== undefined) data.refresh_token = presented;
      out = Buffer.from(JSON.stringify(data));
    }
    // Whatever the answer, no real value the host sent or received goes back to the box.
    out = Buffer.from(scrubText(out.toString('utf8'), reveals));
    const headers = scrubHeaders(answer.headers, reveals);
    headers['content-length'] = out.length;
    res.writeHead(answer.status, headers);
    res.end(out);
  } catch (err) {
    failure = `OAuth refresh via ${target.host} failed: ${describeNetError(err)}`;
    respondFailed(res, 'oauth_refresh_failed', failure);
  } finally {
    deps.record({
      boxId: deps.boxId,
      ts: startedAt.toISOString(),
      host: target.host,
      port: target.port,
      method: req.method ?? 'POST',
      path: auditPath(req.url ?? '/'),
      mode: 'intercept',
      decision: failure === undefined ? 'allow' : 'error',
      code: failure === undefined ? 'allowed' : 'oauth_refresh_failed',
      reason: failure ?? (injected ? 'OAuth refresh answered on the host' : `${target.host} is allowed`),
      bytesUp,
      bytesDown,
      placeholderLeak: leak,
      ...(injected ? { injected: [rule.secret] } : {}),
    });
  }
}
