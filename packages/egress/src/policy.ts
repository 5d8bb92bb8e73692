import {
  AgentboxError,
  EGRESS_PRESETS,
  EgressPolicySchema,
  SecretInjectionRuleSchema,
  parseCidr,
  type EgressPolicyInput,
  type IpCidr,
  type SecretInjectionRule,
} from '@agentbox/protocol';
import type { z } from 'zod';

/**
 * A box's policy in the form decide() reads: presets expanded, CIDRs parsed, the injection rules
 * of the secrets the box holds attached. Immutable; build a new one to change anything.
 */
export interface CompiledPolicy {
  readonly allowDomains: readonly string[];
  readonly denyDomains: readonly string[];
  readonly allowIPs: readonly IpCidr[];
  readonly allowPorts: ReadonlySet<number>;
  readonly allowLan: boolean;
  readonly allowHost: boolean;
  /**
   * Lowercase `owner/name`; undefined when GitHub is not restricted by repository (and then gets
   * no credential injected).
   */
  readonly repos: ReadonlySet<string> | undefined;
  /** `query Name` / `mutation Name` allowed on api.github.com/graphql (only read under `repos`). */
  readonly githubGraphqlOperations: ReadonlySet<string>;
  /** Canonical keys of the host's own addresses (see address-policy.ts). */
  readonly hostAddresses: ReadonlySet<string>;
  /** Injection rules of the secrets this box holds. */
  readonly rules: readonly SecretInjectionRule[];
  /** Test-only host → connect address; consulted by the gateway, never by decide(). */
  readonly upstreams: ReadonlyMap<string, UpstreamAddress>;
}

export interface UpstreamAddress {
  readonly address: string;
  readonly port: number;
}

export type SecretInjectionRuleInput = z.input<typeof SecretInjectionRuleSchema>;

/**
 * Where the usual agent credentials may go. A rule does not open the destination: the policy must
 * still allow the host (e.g. with the `anthropic` preset).
 */
export const DEFAULT_INJECTION_RULES: readonly SecretInjectionRuleInput[] = [
  {
    secret: 'ANTHROPIC_API_KEY',
    hosts: ['api.anthropic.com'],
    inject: { type: 'header', header: 'x-api-key' },
  },
  { secret: 'CLAUDE_CODE_OAUTH_TOKEN', hosts: ['api.anthropic.com'], inject: { type: 'bearer' } },
  {
    secret: 'CLAUDE_CODE_OAUTH_REFRESH_TOKEN',
    hosts: ['console.anthropic.com', 'platform.claude.com'],
    inject: { type: 'oauth_refresh', path: '/v1/oauth/token', accessSecret: 'CLAUDE_CODE_OAUTH_TOKEN' },
  },
  { secret: 'OPENAI_API_KEY', hosts: ['api.openai.com'], inject: { type: 'bearer' } },
  { secret: 'GITHUB_TOKEN', hosts: ['github.com'], inject: { type: 'basic' } },
  { secret: 'GITHUB_TOKEN', hosts: ['api.github.com', 'uploads.github.com'], inject: { type: 'bearer' } },
];

export interface CompilePolicyOptions {
  /** Canonical keys of the host's own addresses; see hostAddressKeys(). */
  readonly hostAddresses?: Iterable<string>;
  /** Injection rules of the secrets the box holds (already filtered to them). */
  readonly rules?: readonly SecretInjectionRuleInput[];
}

function parseUpstream(text: string): UpstreamAddress {
  const colon = text.lastIndexOf(':');
  const host = text.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  return { address: host, port: Number(text.slice(colon + 1)) };
}

/** Validates a policy (zod) and compiles it; throws AgentboxError(invalid_request) naming the field. */
export function compilePolicy(input: EgressPolicyInput, options: CompilePolicyOptions = {}): CompiledPolicy {
  const parsed = EgressPolicySchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.join('.') ?? '';
    throw new AgentboxError(
      'invalid_request',
      `invalid egress policy at ${where || '(root)'}: ${issue?.message}`,
      {
        details: { field: where },
      },
    );
  }
  const policy = parsed.data;
  const rules = (options.rules ?? []).map((rule) => {
    const result = SecretInjectionRuleSchema.safeParse(rule);
    if (!result.success) {
      throw new AgentboxError(
        'invalid_request',
        `invalid injection rule: ${result.error.issues[0]?.message}`,
      );
    }
    return result.data;
  });
  const allowDomains = new Set(policy.allowDomains);
  for (const preset of policy.presets) for (const domain of EGRESS_PRESETS[preset]) allowDomains.add(domain);
  const upstreams = new Map<string, UpstreamAddress>();
  for (const [host, target] of Object.entries(policy.upstreams ?? {})) {
    upstreams.set(host.toLowerCase().replace(/\.$/, ''), parseUpstream(target));
  }
  return Object.freeze({
    allowDomains: [...allowDomains],
    denyDomains: [...policy.denyDomains],
    allowIPs: policy.allowIPs.map((text) => parseCidr(text)!),
    allowPorts: new Set(policy.allowPorts),
    allowLan: policy.allowLan,
    allowHost: policy.allowHost,
    repos: policy.repos === undefined ? undefined : new Set(policy.repos),
    githubGraphqlOperations: new Set(policy.githubGraphqlOperations ?? []),
    hostAddresses: new Set(options.hostAddresses ?? []),
    rules,
    upstreams,
  });
}

/** Rules whose hosts include `host` (canonical). */
export function rulesForHost(policy: CompiledPolicy, host: string): SecretInjectionRule[] {
  return policy.rules.filter((rule) => rule.hosts.includes(host));
}
