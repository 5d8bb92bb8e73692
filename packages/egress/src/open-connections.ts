import net from 'node:net';
import type { EgressDenyCode } from '@agentbox/protocol';
import { decide, type EgressDecision, type EgressRequest } from './decide.js';
import { isGitHubHost } from './github-paths.js';
import type { CompiledPolicy } from './policy.js';
import type { ConnectTarget } from './upstream.js';

/**
 * What a box has open, decided again when its policy changes: a tunnel, a TLS session the gateway
 * terminated, or a request in flight (plain HTTP, or inside terminated TLS). Pure: the session
 * holds these facts and cuts whatever redecideOpen() refuses under the new policy.
 */

export interface OpenFacts {
  /** tunnel: opaque CONNECT; intercept: TLS terminated here; http: a plain-HTTP proxy request. */
  readonly mode: 'tunnel' | 'intercept' | 'http';
  /** Where the bytes go: the destination and the checked addresses (or mapped upstream) dialled. */
  readonly target: ConnectTarget;
  /** The request in flight, as it was decided; absent for a tunnel or a TLS session itself. */
  readonly request?: EgressRequest;
  /** A GitHub GraphQL request in flight whose body was judged: the operation and repositories it names. */
  readonly graphql?: { readonly operation: string; readonly repos: readonly string[] };
}

function deny(code: EgressDenyCode, reason: string): EgressDecision {
  return { action: 'deny', code, reason };
}

/** Whether the policy still sends the target's host where the connection went (test-only map). */
function sameDestination(target: ConnectTarget, policy: CompiledPolicy): boolean {
  const mapped = net.isIP(target.host) === 0 ? policy.upstreams.get(target.host) : undefined;
  if (!target.mapped) return mapped === undefined;
  return mapped !== undefined && mapped.address === target.addresses[0] && mapped.port === target.connectPort;
}

/**
 * Decides an open connection or request again under `policy`: the destination with the addresses
 * it was dialled at, then the request in flight with everything that was visible of it. A tunnel
 * to a host the policy now wants TLS-terminated (GitHub under a new `repos` list) is refused too,
 * as it would bypass the per-request checks. Never throws.
 */
export function redecideOpen(open: OpenFacts, policy: CompiledPolicy): EgressDecision {
  const { target } = open;
  if (!sameDestination(target, policy)) {
    return deny(
      'address_not_allowed',
      `the policy no longer sends ${target.host} where this connection goes`,
    );
  }
  const addresses = target.mapped ? {} : { addresses: target.addresses };
  const connection = decide({ stage: 'connect', host: target.host, port: target.port, ...addresses }, policy);
  if (connection.action === 'deny') return connection;
  if (open.mode === 'tunnel' && connection.intercept) {
    const code = isGitHubHost(target.host) ? 'github_repo_not_allowed' : 'policy_error';
    return deny(code, `${target.host} is now checked inside TLS; an opaque tunnel to it is not allowed`);
  }
  if (open.request === undefined) return connection;
  const request = decide({ ...open.request, ...addresses }, policy);
  if (request.action === 'deny' || request.bodyCheck !== 'github_graphql' || open.graphql === undefined) {
    // A GraphQL body not read yet is judged against the policy of the moment it is read.
    return request;
  }
  const { operation, repos } = open.graphql;
  if (!policy.githubGraphqlOperations.has(operation)) {
    return deny('github_repo_not_allowed', `GitHub GraphQL: ${operation} is no longer listed`);
  }
  const unlisted = repos.find((repo) => policy.repos?.has(repo) !== true);
  if (unlisted !== undefined) {
    return deny('github_repo_not_allowed', `GitHub repository ${unlisted} is not in the box's repos`);
  }
  return request;
}
