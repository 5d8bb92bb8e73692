import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { BoxSession } from './box-session.js';
import { decide } from './decide.js';
import { forwardRequest } from './forward.js';
import { endToEndHeaders, respondDenied } from './http-util.js';
import { answerOAuthRefresh, isOAuthRule } from './oauth-refresh.js';
import { findPlaceholders, headersHavePlaceholder, injectHeaders } from './placeholders.js';
import type { ConnectTarget } from './upstream.js';

/**
 * Requests inside TLS the gateway terminated (only hosts with a credential rule, or GitHub when a
 * repos list is set). Each request is decided again with what is now visible: the SNI must equal
 * the CONNECT host and the Host header, the GitHub path must name a listed repository. Only then
 * are the rule's placeholders swapped, and the request goes upstream over verified TLS.
 */

export interface InterceptedConnection {
  /** Canonical CONNECT host: the only name this TLS session may talk to. */
  readonly host: string;
  readonly port: number;
  readonly target: ConnectTarget;
}

function pathOnly(target: string): string {
  const q = target.search(/[?#]/);
  return q < 0 ? target : target.slice(0, q);
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
  const decision = decide(
    {
      stage: 'tls_request',
      host: conn.host,
      port: conn.port,
      sni: typeof servername === 'string' && servername !== '' ? servername.toLowerCase() : null,
      ...(req.headers.host === undefined ? {} : { hostHeader: req.headers.host }),
      method,
      path,
      ...(conn.target.mapped ? {} : { addresses: conn.target.addresses }),
    },
    session.currentPolicy(),
  );
  if (decision.action === 'deny') {
    const leak = urlLeak || headersHavePlaceholder(req.headers);
    session.recordDeny(conn.host, conn.port, method, path, decision, leak);
    respondDenied(res, decision.code, decision.reason);
    // Drain what the box still sends so the 403 is read rather than reset.
    req.resume();
    return;
  }

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
  forwardRequest(
    req,
    res,
    {
      scheme: 'https',
      target: conn.target,
      path,
      headers: injection.headers,
      scrub: injection.scrub,
      injected: injection.injected,
      leak: injection.leak || urlLeak,
      mode: 'intercept',
    },
    session.forwardDeps,
  );
}
