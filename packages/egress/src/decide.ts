import {
  canonicalizeHost,
  ipInCidr,
  isNumericHostName,
  matchesDomainPattern,
  type EgressDenyCode,
  type SecretInjectionRule,
} from '@agentbox/protocol';
import { ALWAYS_DENIED_CLASSES, checkAddress, normalizeIp } from './address-policy.js';
import { githubRepoOfRequest, isGitHubGraphqlTarget, isGitHubHost } from './github-paths.js';
import { rulesForHost, type CompiledPolicy } from './policy.js';

/**
 * The egress decision: a pure function of what the gateway has seen of a connection so far and the
 * box's compiled policy. The gateway calls it at each stage (CONNECT line, after DNS, per request
 * inside intercepted TLS) with what is visible then; every check whose input is present runs.
 * Deny by default, deny list first, and any exception becomes a deny (fails closed).
 */

export type EgressStage =
  /** A CONNECT line: host and port (and, once resolved, the addresses). */
  | 'connect'
  /** A plain-HTTP proxy request (absolute URI): method and path are visible. */
  | 'http'
  /** A request inside TLS the gateway terminated: SNI, Host header, method and path are visible. */
  | 'tls_request';

export interface EgressRequest {
  readonly stage: EgressStage;
  /** Destination host as the guest wrote it (CONNECT authority or absolute-URI host). */
  readonly host: string;
  readonly port: number;
  /** Every address DNS returned (or the literal); absent before resolution and for mapped upstreams. */
  readonly addresses?: readonly string[];
  /** SNI of the guest's ClientHello; null when it sent none. tls_request only. */
  readonly sni?: string | null;
  /** The Host header of the request, verbatim. tls_request only. */
  readonly hostHeader?: string;
  readonly method?: string;
  /** Request target (origin-form path and query). */
  readonly path?: string;
}

export type EgressDecision =
  | {
      readonly action: 'allow';
      readonly code: 'allowed';
      readonly reason: string;
      /** Terminate TLS for this CONNECT (an injection rule or a repos list needs to see inside). */
      readonly intercept: boolean;
      /** Rules that may swap placeholders on this request (tls_request only). */
      readonly inject: readonly SecretInjectionRule[];
      /**
       * The request may pass only if its body passes this check too (read whole, up to a cap,
       * before anything goes upstream): `github_graphql` → judgeGithubGraphql().
       */
      readonly bodyCheck?: 'github_graphql';
    }
  | { readonly action: 'deny'; readonly code: EgressDenyCode; readonly reason: string };

/** Names that always mean this machine or a cloud metadata service, whatever DNS says. */
const LOOPBACK_NAMES = ['localhost', '*.localhost', 'localhost.localdomain', 'ip6-localhost', 'ip6-loopback'];
const METADATA_NAMES = [
  'metadata',
  'metadata.google.internal',
  'metadata.goog',
  'instance-data',
  'instance-data.ec2.internal',
];

function deny(code: EgressDenyCode, reason: string): EgressDecision {
  return { action: 'deny', code, reason };
}

function matchesAny(host: string, patterns: readonly string[]): string | undefined {
  return patterns.find((pattern) => matchesDomainPattern(host, pattern));
}

/** Splits a Host header into canonical host and port (default `defaultPort`). */
function parseHostHeader(value: string, defaultPort: number): { host: string; port: number } | undefined {
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$/.exec(value);
  if (m === null) return undefined;
  const host = canonicalizeHost(m[1]!);
  return host === undefined
    ? undefined
    : { host: host.host, port: m[2] === undefined ? defaultPort : Number(m[2]) };
}

function decideUnsafe(req: EgressRequest, policy: CompiledPolicy): EgressDecision {
  const target = canonicalizeHost(req.host);
  if (target === undefined)
    return deny('bad_request', 'the destination is not a valid host name or IP address');
  const host = target.host;
  if (!Number.isInteger(req.port) || req.port < 1 || req.port > 65535) {
    return deny('bad_request', `invalid destination port ${req.port}`);
  }

  if (target.kind === 'ip') {
    const ip = normalizeIp(target.ip);
    if (!policy.allowIPs.some((cidr) => ipInCidr(ip, cidr))) {
      return deny('ip_literal_not_allowed', `${host} is an IP address and not in the box's allowIPs`);
    }
  } else {
    if (isNumericHostName(host)) {
      return deny('ip_literal_not_allowed', `${host} is an IP address in numeric notation`);
    }
    if (matchesAny(host, LOOPBACK_NAMES)) return deny('address_not_allowed', `${host} names this machine`);
    if (matchesAny(host, METADATA_NAMES))
      return deny('address_not_allowed', `${host} is a cloud metadata service`);
    const denied = matchesAny(host, policy.denyDomains);
    if (denied !== undefined) return deny('domain_denied', `${host} matches denyDomains entry ${denied}`);
    if (matchesAny(host, policy.allowDomains) === undefined) {
      return deny('domain_not_allowed', `${host} is not in the box's allowDomains or presets`);
    }
  }

  if (!policy.allowPorts.has(req.port))
    return deny('port_not_allowed', `port ${req.port} is not in allowPorts`);

  const addresses = target.kind === 'ip' ? [host, ...(req.addresses ?? [])] : (req.addresses ?? []);
  if (req.addresses !== undefined && req.addresses.length === 0) {
    return deny('address_not_allowed', `${host} resolved to no address`);
  }
  for (const address of addresses) {
    const verdict = checkAddress(address, policy);
    if (!verdict.allowed) {
      const why = ALWAYS_DENIED_CLASSES.has(verdict.class)
        ? verdict.class
        : verdict.class === 'host'
          ? 'this host; needs allowHost'
          : `${verdict.class}; needs allowLan`;
      const shown = verdict.address === host ? host : `${host} resolves to ${verdict.address}`;
      return deny('address_not_allowed', `${shown} (${why.replace('_', '-')})`);
    }
  }

  const github = target.kind === 'name' && isGitHubHost(host);
  const githubGoverned = github && policy.repos !== undefined;
  // Credentials go to GitHub only on requests judged against the box's `repos`: without a list,
  // GitHub is reached as anyone reaches it (tunnelled, nothing injected), so a token can never
  // act on a repository the box was not given.
  const rules = target.kind === 'name' && (!github || githubGoverned) ? rulesForHost(policy, host) : [];

  if (req.stage === 'tls_request') {
    if (req.sni !== host) {
      return deny('sni_mismatch', `TLS server name ${req.sni ?? '(none)'} is not the CONNECT host ${host}`);
    }
    const hostHeader = req.hostHeader === undefined ? undefined : parseHostHeader(req.hostHeader, req.port);
    if (hostHeader === undefined) return deny('bad_request', 'missing or invalid Host header');
    if (hostHeader.host !== host || hostHeader.port !== req.port) {
      return deny(
        'sni_mismatch',
        `Host header ${hostHeader.host} does not match the TLS server name ${host}`,
      );
    }
  }

  let bodyCheck = false;
  if (githubGoverned && req.stage !== 'connect') {
    if (req.path === undefined)
      return deny('github_repo_not_allowed', 'GitHub request without a visible path');
    if (isGitHubGraphqlTarget(host, req.path)) {
      const refusal = githubGraphqlRefusal(req, policy);
      if (refusal !== undefined) return deny('github_repo_not_allowed', `GitHub GraphQL: ${refusal}`);
      bodyCheck = true; // the repositories are named in the body: judged before it goes upstream
    } else {
      const found = githubRepoOfRequest(host, req.path);
      if (found.kind === 'none') return deny('github_repo_not_allowed', `GitHub ${host}: ${found.reason}`);
      if (policy.repos?.has(found.repo) !== true) {
        return deny('github_repo_not_allowed', `GitHub repository ${found.repo} is not in the box's repos`);
      }
    }
  }

  return {
    action: 'allow',
    code: 'allowed',
    reason: target.kind === 'ip' ? `${host} is in allowIPs` : `${host} is allowed`,
    intercept: req.stage === 'connect' && (rules.length > 0 || githubGoverned),
    // Secrets are only ever injected on the TLS-terminated path, never over plain HTTP.
    inject: req.stage === 'tls_request' ? rules : [],
    ...(bodyCheck ? { bodyCheck: 'github_graphql' as const } : {}),
  };
}

/**
 * Why a request to api.github.com/graphql is refused before its body is read, if it is. Only
 * `POST /graphql` inside terminated TLS, for a box that lists operations, goes on to the body.
 */
function githubGraphqlRefusal(req: EgressRequest, policy: CompiledPolicy): string | undefined {
  if (policy.githubGraphqlOperations.size === 0) {
    return "the box's githubGraphqlOperations is empty, so GraphQL is refused";
  }
  if (req.stage !== 'tls_request') return 'only judged over HTTPS';
  if (req.method !== 'POST') return `${req.method ?? 'a request without a method'} is refused; POST only`;
  if (req.path !== '/graphql') return 'the target must be exactly /graphql, without a query string';
  return undefined;
}

/** Decides one egress step. Never throws: an internal error is a `policy_error` deny. */
export function decide(request: EgressRequest, policy: CompiledPolicy): EgressDecision {
  try {
    return decideUnsafe(request, policy);
  } catch {
    return deny('policy_error', 'the egress policy could not be evaluated; denied');
  }
}
