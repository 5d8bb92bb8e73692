import { DEFAULT_EGRESS_PORTS, parseCidr, type EgressPolicy } from '@agentbox/protocol';
import { nonPublicClassesIn } from './address-policy.js';

/**
 * What an API key of `user` scope may ask of a box's egress policy. Pure. A user key's box reaches
 * public destinations only, by name or by public address, on the default ports; the LAN, the host
 * itself, local or private prefixes in `allowIPs`, other ports and the test-only `upstreams` map
 * are the operator's to open, with an admin key. Domains, presets and `repos` are not limited here.
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
