import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { EgressDenyCode } from '@agentbox/protocol';
import type { BoxSession } from './box-session.js';
import { decide, type EgressRequest } from './decide.js';
import { forwardRequest, readBodyCapped, type ForwardPlan } from './forward.js';
import { GITHUB_GRAPHQL_MAX_BODY_BYTES, judgeGithubGraphql } from './github-graphql.js';
import { auditPath, endToEndHeaders, pathOnly, respondDenied } from './http-util.js';
import { answerOAuthRefresh, isOAuthRule } from './oauth-refresh.js';
import type { OpenHold } from './open-registry.js';
import { findPlaceholders, headersHavePlaceholder, injectHeaders } from './placeholders.js';
import { chatRequestUnpriced } from './chat-request-check.js';
import { contentCodingOf, decodeBodyOffLoop } from './content-coding.js';
import { classifyModelCall, MAX_CHAT_REQUEST_BYTES, type ModelCallKind } from './spend.js';
import type { MeteredCall, SpendLedger } from './spend-ledger.js';
import type { ConnectTarget } from './upstream.js';

/**
 * Requests inside TLS the gateway terminated (only hosts with a credential rule, or GitHub when a
 * repos list is set). Each request is decided again with what is now visible: the SNI must equal
 * the CONNECT host and the Host header, the GitHub path must name a listed repository (for GitHub
 * GraphQL, the body is read whole and judged instead). Only then are the rule's placeholders
 * swapped, and the request goes upstream over verified TLS.
 */

export interface InterceptedConnection {
  /** Canonical CONNECT host: the only name this TLS session may talk to. */
  readonly host: string;
  readonly port: number;
  readonly target: ConnectTarget;
  /** The box's socket under the TLS (what policy updates cut, once per connection). */
  readonly connection: object;
  /** Destroys the TLS session and the box's socket. */
  readonly cut: () => void;
}

export async function handleInterceptedRequest(
  session: BoxSession,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const conn = session.intercepted.get(req.socket);
  const method = req.method ?? 'GET';
  const path = req.url ?? '';
  if (conn === undefined) {
    respondDenied(res, 'bad_request', 'unknown intercepted connection');
    return;
  }
  const urlLeak = findPlaceholders(path).length > 0;
  if (!path.startsWith('/')) {
    const reason = 'requests inside TLS must use an origin-form target (/path)';
    session.recordDeny(conn.host, conn.port, method, undefined, { code: 'bad_request', reason }, urlLeak);
    respondDenied(res, 'bad_request', reason);
    return;
  }
  const servername = (req.socket as TLSSocket).servername;
  const request: EgressRequest = {
    stage: 'tls_request',
    host: conn.host,
    port: conn.port,
    sni: typeof servername === 'string' && servername !== '' ? servername.toLowerCase() : null,
    ...(req.headers.host === undefined ? {} : { hostHeader: req.headers.host }),
    method,
    path,
    ...(conn.target.mapped ? {} : { addresses: conn.target.addresses }),
  };
  const decision = decide(request, session.currentPolicy());
  const refuse = (code: EgressDenyCode, reason: string): void => {
    respondDenied(res, code, reason);
    // Drain what the box still sends so the 403 is read rather than reset.
    req.resume();
  };
  if (decision.action === 'deny') {
    const leak = urlLeak || headersHavePlaceholder(req.headers);
    session.recordDeny(conn.host, conn.port, method, path, decision, leak);
    refuse(decision.code, decision.reason);
    return;
  }
  // Held while in flight: a policy update that refuses it cuts the connection.
  const held = session.hold(
    conn.connection,
    { mode: 'intercept', target: conn.target, request },
    conn.cut,
    refuse,
  );
  if (held === undefined) return;
  res.once('close', () => held.release());

  const oauth = decision.inject.find(isOAuthRule);
  if (oauth !== undefined && method === 'POST' && pathOnly(path) === oauth.inject.path) {
    await answerOAuthRefresh(req, res, oauth, conn.target, {
      ...session.forwardDeps,
      registry: session.registry,
      store: session.store,
    });
    return;
  }

  const headerRules = decision.inject.filter((rule) => !isOAuthRule(rule));
  const injection = injectHeaders(endToEndHeaders(req.headers), headerRules, session.registry);
  let meter: MeteredCall | undefined;
  /** The body, when it was read to be judged: sent as read. */
  let body: Buffer | undefined;
  const ledger = session.spendLedger();
  if (ledger !== undefined) {
    const kind = classifyModelCall({ method, path, injected: injection.injected });
    const deny = (decision: { code: EgressDenyCode; reason: string }): void => {
      const leak =
        urlLeak ||
        headersHavePlaceholder(req.headers) ||
        (body !== undefined && findPlaceholders(body.toString('latin1')).length > 0);
      session.recordDeny(conn.host, conn.port, method, path, decision, leak);
      refuse(decision.code, decision.reason);
    };
    if (kind === 'chat' && ledger.limited) {
      // Held from its read until its answer ends; a box that hung up meanwhile gives its turn back.
      const turn = session.bodyTurn();
      let closed = false;
      res.once('close', () => {
        closed = true;
        void turn.then((release) => release());
      });
      await turn;
      if (closed) return;
      const read = await readChatRequest(req);
      if (read === 'gone') {
        res.destroy(); // the box went away mid-body: nothing to answer, nothing sent upstream
        return;
      }
      body = read.body;
      if (read.unpriced !== undefined) {
        deny({
          code: 'budget_unmetered',
          reason: `${method} ${auditPath(path)} cannot be priced (${read.unpriced}), and a spend budget is set`,
        });
        return;
      }
    }
    const spend = admitSpend(ledger, kind, method, path);
    if (spend.refuse) {
      deny(spend.refuse);
      return;
    }
    meter = spend.meter;
  }
  const headers = { ...injection.headers };
  if (body !== undefined) {
    delete headers.expect;
    headers['content-length'] = String(body.length);
  }
  const plan: ForwardPlan = {
    scheme: 'https',
    target: conn.target,
    path,
    headers,
    scrub: injection.scrub,
    injected: injection.injected,
    leak: injection.leak || urlLeak,
    mode: 'intercept',
    ...(meter ? { meter } : {}),
    ...(body !== undefined ? { body } : {}),
  };
  if (decision.bodyCheck === 'github_graphql') {
    await forwardGithubGraphql(session, req, res, conn, plan, held);
  } else {
    forwardRequest(req, res, plan, session.forwardDeps);
  }
}

const usd = (value: number): string => `$${value.toFixed(value >= 0.01 ? 2 : 4)}`;

/**
 * A model call on a box with a spend ledger: refused once a budget (or the key's cap) is spent,
 * or when it could spend in a way the gateway cannot price under a limit; a Messages or
 * Responses API call is metered.
 */
function admitSpend(
  ledger: SpendLedger,
  kind: ModelCallKind,
  method: string,
  path: string,
): { refuse?: { code: EgressDenyCode; reason: string }; meter?: MeteredCall } {
  if (kind === 'free') return {};
  const spent = ledger.exceededBudget();
  if (spent !== undefined) {
    const reason =
      spent.exceeded === 'unreadable'
        ? 'the spend budget on this box is closed: the cost of one of its model calls could not be read'
        : spent.exceeded === 'account'
          ? `this box's API key has reached its model spend cap (${usd(spent.limitUsd)}): ${usd(spent.spentUsd)} by the host's count`
          : `the spend budget on this box (${usd(spent.limitUsd)}) is spent: ${usd(spent.spentUsd)} by the host's count`;
    return { refuse: { code: 'budget_exceeded', reason } };
  }
  if (kind === 'unmetered') {
    if (!ledger.limited) return {};
    return {
      refuse: {
        code: 'budget_unmetered',
        reason: `${method} ${auditPath(path)} may spend in a way the gateway cannot price, and a spend budget is set`,
      },
    };
  }
  return { meter: ledger.startCall(kind) };
}

/**
 * Reads a Chat Completions request whole (up to MAX_CHAT_REQUEST_BYTES) to see whether its answer
 * will say what it cost; 'gone' when the box went away before the end.
 */
async function readChatRequest(req: IncomingMessage): Promise<'gone' | { body?: Buffer; unpriced?: string }> {
  if (Number(req.headers['content-length'] ?? 0) > MAX_CHAT_REQUEST_BYTES)
    return { unpriced: `its body is larger than ${MAX_CHAT_REQUEST_BYTES} bytes` };
  let body: Buffer | undefined;
  try {
    body = await readBodyCapped(req, MAX_CHAT_REQUEST_BYTES);
  } catch {
    return 'gone';
  }
  if (body === undefined) return { unpriced: `its body is larger than ${MAX_CHAT_REQUEST_BYTES} bytes` };
  const coding = contentCodingOf(req.headers['content-encoding']);
  if (coding.kind === 'refuse') return { body, unpriced: coding.reason };
  let plain = body;
  if (coding.kind === 'decode') {
    try {
      plain = await decodeBodyOffLoop(coding.coding, body, MAX_CHAT_REQUEST_BYTES);
    } catch {
      return {
        body,
        unpriced: `its ${coding.coding} body does not decode within ${MAX_CHAT_REQUEST_BYTES} bytes`,
      };
    }
  }
  const unpriced = await chatRequestUnpriced(plain);
  return unpriced === undefined ? { body } : { body, unpriced };
}

/**
 * GitHub GraphQL names its repositories in the body: read it whole (up to the cap), judge it, and
 * send upstream the re-serialized request that was judged, or refuse before GitHub sees anything.
 */
async function forwardGithubGraphql(
  session: BoxSession,
  req: IncomingMessage,
  res: ServerResponse,
  conn: InterceptedConnection,
  plan: ForwardPlan,
  held: OpenHold,
): Promise<void> {
  const method = req.method ?? 'GET';
  const refuse = (reason: string, leak: boolean): void => {
    const decision = { code: 'github_repo_not_allowed', reason: `GitHub GraphQL: ${reason}` } as const;
    session.recordDeny(conn.host, conn.port, method, plan.path, decision, leak);
    respondDenied(res, decision.code, decision.reason);
    req.resume();
  };
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > GITHUB_GRAPHQL_MAX_BODY_BYTES) {
    refuse(`the request body is larger than ${GITHUB_GRAPHQL_MAX_BODY_BYTES} bytes`, plan.leak);
    return;
  }
  let body: Buffer | undefined;
  try {
    body = await readBodyCapped(req, GITHUB_GRAPHQL_MAX_BODY_BYTES);
  } catch {
    res.destroy(); // the box went away mid-body: nothing to answer, nothing sent upstream
    return;
  }
  if (body === undefined) {
    refuse(`the request body is larger than ${GITHUB_GRAPHQL_MAX_BODY_BYTES} bytes`, plan.leak);
    return;
  }
  const policy = session.currentPolicy();
  const verdict = judgeGithubGraphql(body, {
    repos: policy.repos ?? new Set(),
    operations: policy.githubGraphqlOperations,
  });
  if (!verdict.allow) {
    refuse(verdict.reason, plan.leak || findPlaceholders(body.toString('latin1')).length > 0);
    return;
  }
  held.facts = { ...held.facts, graphql: { operation: verdict.operation, repos: verdict.repos } };
  // The body sent is the judged one, re-serialized as plain JSON: no encoding header may reinterpret it.
  const headers = { ...plan.headers };
  for (const name of ['content-length', 'content-encoding', 'content-type', 'expect']) delete headers[name];
  headers['content-type'] = 'application/json';
  headers['content-length'] = String(verdict.body.length);
  const on = verdict.repos.length > 0 ? ` on ${verdict.repos.join(', ')}` : '';
  forwardRequest(
    req,
    res,
    { ...plan, headers, body: verdict.body, reason: `GitHub GraphQL ${verdict.operation}${on} is allowed` },
    session.forwardDeps,
  );
}
