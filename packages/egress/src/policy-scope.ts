import {
  DEFAULT_EGRESS_PORTS,
  EgressPolicySchema,
  parseCidr,
  repoGranted,
  type EgressPolicy,
} from '@agentbox/protocol';
import { nonPublicClassesIn } from './address-policy.js';

/**
 * What an API key of `user` scope may ask of a box's egress policy. Pure. A user key's box reaches
 * public destinations only, by name or by public address, on the default ports; the LAN, the host
 * itself, local or private prefixes in `allowIPs`, other ports and the test-only `upstreams` map
 * are the operator's to open, with an admin key. Its `repos` (where the host's GitHub token is
 * injected) must be granted to the key (repoGrantExcess). Domains and presets are not limited here.
 */

/** Ports a user key may list in `allowPorts`: the default ones. */
export const USER_EGRESS_PORTS: ReadonlySet<number> = new Set(DEFAULT_EGRESS_PORTS);

/** One part of a policy beyond what a user key may ask for. */
export interface PolicyExcess {
  /** Path of the field in the policy, e.g. `allowLan`, `allowIPs.2`. */
  readonly field: string;
  /** What it would open, for the error message. */
  readonly reason: string;
}

/** The parts of `policy` (parsed: defaults filled in) a user key may not ask for; empty when none. */
export function userPolicyExcess(policy: EgressPolicy): PolicyExcess[] {
  const excess: PolicyExcess[] = [];
  if (policy.allowLan) {
    excess.push({ field: 'allowLan', reason: 'it opens the LAN (RFC 1918, CGNAT and ULA addresses)' });
  }
  if (policy.allowHost) excess.push({ field: 'allowHost', reason: "it opens the host's own addresses" });
  policy.allowIPs.forEach((text, i) => {
    const prefix = parseCidr(text);
    const classes = prefix === undefined ? ['unparseable'] : [...nonPublicClassesIn(prefix)];
    if (classes.length > 0) {
      excess.push({
        field: `allowIPs.${i}`,
        reason: `${text} holds non-public addresses (${classes.join(', ').replaceAll('_', '-')})`,
      });
    }
  });
  const ports = policy.allowPorts.filter((port) => !USER_EGRESS_PORTS.has(port));
  if (ports.length > 0) {
    excess.push({
      field: 'allowPorts',
      reason: `${ports.length > 1 ? 'ports' : 'port'} ${ports.join(', ')} ${ports.length > 1 ? 'are' : 'is'} beyond the default ${[...USER_EGRESS_PORTS].join(' and ')}`,
    });
  }
  if (policy.upstreams !== undefined && Object.keys(policy.upstreams).length > 0) {
    excess.push({ field: 'upstreams', reason: 'the test-only upstream map points names at any address' });
  }
  return excess;
}

/**
 * The parts of `policy` that would use the host's GitHub token beyond `grants` (RepoGrantSchema,
 * canonical): each repository in `repos` no grant covers, and any GraphQL operation unless the
 * grants cover every repository (`*`). GraphQL is not confined to `repos`: a mutation names node
 * ids, and a query may walk from a listed repository to others (`parent`, `source`, cross
 * references), each read with the token.
 */
export function repoGrantExcess(policy: EgressPolicy, grants: readonly string[]): PolicyExcess[] {
  const excess: PolicyExcess[] = [];
  (policy.repos ?? []).forEach((repo, i) => {
    if (!repoGranted(grants, repo)) {
      excess.push({
        field: `repos.${i}`,
        reason: `${repo} is not among the repositories granted to this key`,
      });
    }
  });
  if (!grants.includes('*')) {
    (policy.githubGraphqlOperations ?? []).forEach((operation, i) => {
      excess.push({
        field: `githubGraphqlOperations.${i}`,
        reason: `${operation} may reach repositories beyond repos (GraphQL walks from one to others); it needs a grant of every repository (*)`,
      });
    });
  }
  return excess;
}

/**
 * The policy a box is held to while its key has `grants` (pure): `repos` cut to the repositories
 * the grants cover, GraphQL operations dropped unless they cover every repository (`*`, see
 * repoGrantExcess). A `repos` list cut to nothing stays an empty list (GitHub refused), never
 * becomes no list (GitHub public). Returns `policy` itself when nothing is cut.
 */
export function narrowToGrants(policy: EgressPolicy, grants: readonly string[]): EgressPolicy {
  const repos = policy.repos?.filter((repo) => repoGranted(grants, repo));
  const operations = grants.includes('*')
    ? policy.githubGraphqlOperations
    : policy.githubGraphqlOperations && [];
  if (repos?.length === policy.repos?.length && operations?.length === policy.githubGraphqlOperations?.length)
    return policy;
  return {
    ...policy,
    ...(repos ? { repos } : {}),
    ...(operations ? { githubGraphqlOperations: operations } : {}),
  };
}

/** The policy of a box whose key was revoked: nothing is reachable (deny by default). */
export const REVOKED_KEY_POLICY: EgressPolicy = Object.freeze(EgressPolicySchema.parse({}));
