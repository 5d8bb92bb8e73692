import { z } from 'zod';

/**
 * Egress policy of a box: the wire shape (zod) and the pure host / IP / domain-pattern functions that
 * both the schema and the gateway's matcher use, so that neither accepts what the other refuses.
 * Everything here is pure and browser-safe (no node imports): the dashboard validates policies too.
 */

// ---- IP addresses ----

/** A parsed IP address: 4 or 16 bytes in network order. */
export interface IpAddress {
  readonly version: 4 | 6;
  readonly bytes: Uint8Array;
}

/** An IP prefix; a bare address is a /32 or /128. */
export interface IpCidr extends IpAddress {
  readonly prefix: number;
}

function parseIpv4Bytes(text: string): number[] | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const part of parts) {
    // Leading zeros are refused: inet_aton reads them as octal, so "010.0.0.1" is ambiguous.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

function parseIpv6Groups(text: string): number[] | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const parseSide = (side: string, allowV4Tail: boolean): number[] | undefined => {
    if (side === '') return [];
    const parts = side.split(':');
    const groups: number[] = [];
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      if (allowV4Tail && i === parts.length - 1 && part.includes('.')) {
        const v4 = parseIpv4Bytes(part);
        if (v4 === undefined) return undefined;
        groups.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return undefined;
        groups.push(parseInt(part, 16));
      }
    }
    return groups;
  };
  if (halves.length === 1) {
    const groups = parseSide(halves[0]!, true);
    return groups?.length === 8 ? groups : undefined;
  }
  const head = parseSide(halves[0]!, false);
  const tail = parseSide(halves[1]!, true);
  if (head === undefined || tail === undefined || head.length + tail.length > 7) return undefined;
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

/** Parses a dotted-quad IPv4 or an RFC 4291 IPv6 address (no brackets, no zone id). */
export function parseIp(text: string): IpAddress | undefined {
  if (text.includes(':')) {
    const groups = parseIpv6Groups(text);
    if (groups === undefined) return undefined;
    const bytes = new Uint8Array(16);
    groups.forEach((g, i) => {
      bytes[i * 2] = g >> 8;
      bytes[i * 2 + 1] = g & 0xff;
    });
    return { version: 6, bytes };
  }
  const v4 = parseIpv4Bytes(text);
  return v4 === undefined ? undefined : { version: 4, bytes: Uint8Array.from(v4) };
}

/** Canonical text of an address: dotted quad, or RFC 5952 IPv6 (lowercase, longest zero run as `::`). */
export function formatIp(ip: IpAddress): string {
  if (ip.version === 4) return Array.from(ip.bytes).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((ip.bytes[i]! << 8) | ip.bytes[i + 1]!);
  let bestStart = -1;
  let bestLen = 1; // RFC 5952: a single zero group is not compressed
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Parses `addr` or `addr/prefix`; host bits below the prefix must be zero (else it is ambiguous). */
export function parseCidr(text: string): IpCidr | undefined {
  const slash = text.indexOf('/');
  const ip = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (ip === undefined) return undefined;
  const max = ip.version === 4 ? 32 : 128;
  if (slash < 0) return { ...ip, prefix: max };
  const prefixText = text.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > max) return undefined;
  for (let bit = prefix; bit < max; bit++) {
    if ((ip.bytes[bit >> 3]! >> (7 - (bit & 7))) & 1) return undefined;
  }
  return { ...ip, prefix };
}

/** True when `ip` lies inside `cidr` (same family only; normalize IPv4-mapped IPv6 first). */
export function ipInCidr(ip: IpAddress, cidr: IpCidr): boolean {
  if (ip.version !== cidr.version) return false;
  const fullBytes = cidr.prefix >> 3;
  for (let i = 0; i < fullBytes; i++) if (ip.bytes[i] !== cidr.bytes[i]) return false;
  const rest = cidr.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (ip.bytes[fullBytes]! & mask) === (cidr.bytes[fullBytes]! & mask);
}

// ---- host names ----

export type CanonicalHost =
  | { readonly kind: 'ip'; readonly host: string; readonly ip: IpAddress }
  | { readonly kind: 'name'; readonly host: string };

const LABEL_RE = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * Canonical form of a destination host as the guest wrote it: lowercase, one trailing dot dropped,
 * IPv6 brackets removed and the address re-printed canonically. Undefined when it is not a valid
 * host name or IP literal (whitespace, `@`, empty labels, non-ASCII, ...).
 */
export function canonicalizeHost(raw: string): CanonicalHost | undefined {
  if (raw.length === 0 || raw.length > 255) return undefined;
  if (raw.startsWith('[')) {
    if (!raw.endsWith(']')) return undefined;
    const ip = parseIp(raw.slice(1, -1));
    return ip?.version === 6 ? { kind: 'ip', host: formatIp(ip), ip } : undefined;
  }
  const ip = parseIp(raw);
  if (ip !== undefined) return { kind: 'ip', host: formatIp(ip), ip };
  let name = raw.toLowerCase();
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (name.length === 0 || name.length > 253) return undefined;
  return name.split('.').every((label) => LABEL_RE.test(label)) ? { kind: 'name', host: name } : undefined;
}

/**
 * True for names whose last label is numeric (`127.1`, `0x7f.1`, `2130706433`): resolvers read them
 * as IPv4 in a legacy notation, and no real TLD is numeric, so they are IP literals in disguise.
 */
export function isNumericHostName(name: string): boolean {
  const last = name.slice(name.lastIndexOf('.') + 1);
  return /^(0x[0-9a-f]*|[0-9]+)$/.test(last);
}

// ---- domain patterns ----

/** Two-label public suffixes a wildcard may not cover (`*.co.uk` is as broad as `*.com`). */
// prettier-ignore
const MULTI_LABEL_PUBLIC_SUFFIXES: ReadonlySet<string> = new Set([
  'co.uk', 'org.uk', 'ac.uk', 'gov.uk', 'me.uk', 'net.uk', 'ltd.uk', 'plc.uk',
  'com.au', 'net.au', 'org.au', 'edu.au', 'gov.au', 'co.nz', 'org.nz', 'net.nz',
  'co.jp', 'ne.jp', 'or.jp', 'ac.jp', 'co.kr', 'or.kr', 'co.in', 'net.in', 'org.in',
  'co.za', 'org.za', 'com.br', 'net.br', 'org.br', 'com.cn', 'net.cn', 'org.cn',
  'com.tw', 'com.hk', 'com.sg', 'com.my', 'com.mx', 'com.ar', 'com.tr', 'co.il',
]);

export const DOMAIN_PATTERN_ERRORS = {
  tooBroad: 'wildcard too broad: use `*.example.com` (a registrable domain), never `*` or `*.tld`',
  misplacedWildcard: 'a wildcard may only be the whole first label, as in `*.example.com`',
  ipLiteral: 'an IP address is not a domain: list it under allowIPs',
  invalid: 'not a valid host name (letters, digits, `-` and `_` in dot-separated labels)',
} as const;

export type DomainPatternResult = { ok: true; pattern: string } | { ok: false; error: string };

/**
 * Validates and canonicalizes one domain pattern: an exact host (`api.example.com`) or a suffix
 * wildcard (`*.example.com`, matching subdomains but not the apex).
 */
export function parseDomainPattern(raw: string): DomainPatternResult {
  const wildcard = raw.startsWith('*.');
  const body = wildcard ? raw.slice(2) : raw;
  if (raw === '*' || raw === '*.') return { ok: false, error: DOMAIN_PATTERN_ERRORS.tooBroad };
  if (body.includes('*')) return { ok: false, error: DOMAIN_PATTERN_ERRORS.misplacedWildcard };
  const host = canonicalizeHost(body);
  if (host === undefined) return { ok: false, error: DOMAIN_PATTERN_ERRORS.invalid };
  if (host.kind === 'ip' || isNumericHostName(host.host)) {
    return { ok: false, error: DOMAIN_PATTERN_ERRORS.ipLiteral };
  }
  if (wildcard && (!host.host.includes('.') || MULTI_LABEL_PUBLIC_SUFFIXES.has(host.host))) {
    return { ok: false, error: DOMAIN_PATTERN_ERRORS.tooBroad };
  }
  return { ok: true, pattern: wildcard ? `*.${host.host}` : host.host };
}

/** Matches a canonical host name against a canonical pattern from parseDomainPattern. */
export function matchesDomainPattern(host: string, pattern: string): boolean {
  if (pattern.startsWith('*.')) return host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1;
  return host === pattern;
}

// ---- presets ----

/** Named domain sets a policy can switch on instead of listing the domains itself. */
export const EGRESS_PRESETS = {
  anthropic: [
    'api.anthropic.com',
    'console.anthropic.com',
    'platform.claude.com',
    'claude.ai',
    'statsig.anthropic.com',
  ],
  openai: ['api.openai.com', 'auth.openai.com', 'chatgpt.com'],
  github: [
    'github.com',
    'api.github.com',
    'codeload.github.com',
    'uploads.github.com',
    '*.githubusercontent.com',
  ],
  npm: ['registry.npmjs.org', 'registry.yarnpkg.com'],
  pypi: ['pypi.org', 'files.pythonhosted.org'],
  debian: ['deb.debian.org', 'security.debian.org'],
} as const satisfies Record<string, readonly string[]>;
export type EgressPresetName = keyof typeof EGRESS_PRESETS;
export const EGRESS_PRESET_NAMES = Object.keys(EGRESS_PRESETS) as [EgressPresetName, ...EgressPresetName[]];

// ---- schemas ----

/** Destination ports a policy allows when it names none (and all a `user` API key may ask for). */
export const DEFAULT_EGRESS_PORTS: readonly number[] = Object.freeze([80, 443]);

export const DomainPatternSchema = z
  .string()
  .max(255)
  .superRefine((raw, ctx) => {
    const result = parseDomainPattern(raw);
    if (!result.ok) ctx.addIssue({ code: 'custom', message: result.error });
  })
  .overwrite((raw) => {
    const result = parseDomainPattern(raw);
    return result.ok ? result.pattern : raw;
  })
  .describe('Exact host (`api.example.com`) or subdomain wildcard (`*.example.com`); case-insensitive.');

export const IpCidrSchema = z
  .string()
  .max(64)
  .refine(
    (raw) => parseCidr(raw) !== undefined,
    'an IP address or CIDR with zero host bits, e.g. 203.0.113.0/24',
  )
  .overwrite((raw) => {
    const cidr = parseCidr(raw);
    return cidr === undefined ? raw : `${formatIp(cidr)}/${cidr.prefix}`;
  })
  .describe('IP address or CIDR (`203.0.113.7`, `2001:db8::/32`); canonicalized to `addr/prefix`.');

export const GitHubRepoSchema = z
  .string()
  .max(200)
  .regex(/^[A-Za-z0-9](?:[A-Za-z0-9-]*)\/[A-Za-z0-9._-]+$/, 'a GitHub repository as owner/name')
  .overwrite((raw) => raw.toLowerCase().replace(/\.git$/, ''))
  .describe('GitHub repository `owner/name` (case-insensitive, `.git` suffix dropped).');

/**
 * A GitHub repository an API key may have the host's GitHub token used for: `owner/name`,
 * `owner/*` (every repository of that owner) or `*` (any). Set by the operator on the key
 * (`agentbox keys create|update --repo`); a user key's box may list in `repos` only what its grants
 * cover. Admin keys need no grant.
 */
export const RepoGrantSchema = z
  .string()
  .max(200)
  .regex(
    /^(?:\*|[A-Za-z0-9](?:[A-Za-z0-9-]*)\/(?:\*|[A-Za-z0-9._-]+))$/,
    'a GitHub repository grant: owner/name, owner/* or *',
  )
  .overwrite((raw) => raw.toLowerCase().replace(/\.git$/, ''))
  .describe('Repository grant: `owner/name`, `owner/*` or `*` (case-insensitive).');

/** Whether `grants` (canonical, as RepoGrantSchema leaves them) cover the canonical repo `owner/name`. */
export function repoGranted(grants: readonly string[], repo: string): boolean {
  const owner = repo.slice(0, repo.indexOf('/'));
  return grants.some((grant) => grant === '*' || grant === repo || grant === `${owner}/*`);
}

export const GitHubGraphqlOperationSchema = z
  .string()
  .max(140)
  .regex(
    /^(?:(?:query|mutation) )?[_A-Za-z][_0-9A-Za-z]*$/,
    'a GraphQL operation name, optionally after `query ` or `mutation `',
  )
  .overwrite((raw) => (raw.includes(' ') ? raw : `query ${raw}`))
  .describe(
    'GraphQL operation allowed on api.github.com/graphql under `repos`: `Name` or `query Name` ' +
      '(a query), `mutation Name` (a mutation); canonicalized to `query Name` / `mutation Name`.',
  );

const HostNameKeySchema = z
  .string()
  .max(255)
  .refine((raw) => canonicalizeHost(raw)?.kind === 'name', 'a host name');

const HostPortSchema = z
  .string()
  .max(64)
  .regex(/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d{1,5}$/, 'IP:PORT, e.g. 127.0.0.1:8443');

export const EgressPolicySchema = z
  .object({
    allowDomains: z
      .array(DomainPatternSchema)
      .max(2000)
      .default([])
      .describe('Destinations the box may reach by name. Nothing else is reachable (deny by default).'),
    denyDomains: z
      .array(DomainPatternSchema)
      .max(2000)
      .default([])
      .describe('Destinations refused even when an allow entry or preset matches (deny wins).'),
    allowIPs: z
      .array(IpCidrSchema)
      .max(2000)
      .default([])
      .describe(
        'IP literals the box may connect to directly. Loopback, link-local and metadata addresses stay ' +
          'refused; private ranges also need allowLan.',
      ),
    allowPorts: z
      .array(z.number().int().min(1).max(65535))
      .min(1)
      .max(100)
      .default([...DEFAULT_EGRESS_PORTS])
      .describe('Destination ports the box may connect to.'),
    allowLan: z
      .boolean()
      .default(false)
      .describe('Allow private addresses (RFC 1918, CGNAT 100.64/10, ULA fc00::/7) when a rule matches.'),
    allowHost: z
      .boolean()
      .default(false)
      .describe("Allow the host's own (non-loopback) addresses when a rule matches."),
    presets: z
      .array(z.enum(EGRESS_PRESET_NAMES))
      .default([])
      .describe(`Named domain sets added to allowDomains: ${EGRESS_PRESET_NAMES.join(', ')}.`),
    repos: z
      .array(GitHubRepoSchema)
      .max(1000)
      .optional()
      .describe(
        'When set, GitHub (github.com, api.github.com, codeload, raw) is reachable only for these ' +
          'repositories, the only ones the host GitHub token is injected for; anything else to GitHub ' +
          'is refused. Without it, GitHub hosts the policy allows are reached with no token injected. ' +
          'A user key may list only the repositories granted to it (`agentbox keys update --repo`).',
      ),
    githubGraphqlOperations: z
      .array(GitHubGraphqlOperationSchema)
      .max(200)
      .optional()
      .describe(
        'With `repos` set: GraphQL operations api.github.com/graphql accepts, by name (default none: ' +
          'GraphQL is refused). A request passes only as one named operation from this list whose ' +
          'every `repository(owner, name)` is in `repos`; a query may select nothing else at its root. ' +
          'Mutations act on node ids, which are not checked against `repos`, and a query may walk to ' +
          'other repositories: a user key may list operations only when granted every repository (`*`).',
      ),
    upstreams: z
      .record(HostNameKeySchema, HostPortSchema)
      .optional()
      .describe(
        'Tests only (the gateway refuses it unless configured to accept it): host name → IP:PORT to ' +
          'connect to instead of resolving DNS. Policy checks still apply to the host name.',
      ),
  })
  .strict()
  .describe('Network egress policy of a box.');
export type EgressPolicy = z.infer<typeof EgressPolicySchema>;
export type EgressPolicyInput = z.input<typeof EgressPolicySchema>;

export const SecretNameSchema = z
  .string()
  .max(128)
  .regex(/^[A-Z][A-Z0-9_]*$/, 'UPPER_SNAKE_CASE, as the environment variable the box sees')
  .describe('Secret name; the box sees a placeholder in the environment variable of that name.');

const RuleHostSchema = z
  .string()
  .max(255)
  .refine((raw) => {
    const host = canonicalizeHost(raw);
    return host?.kind === 'name' && !isNumericHostName(host.host);
  }, 'an exact host name (no wildcard, no IP)')
  .overwrite((raw) => canonicalizeHost(raw)?.host ?? raw);

export const SecretInjectionSchema = z
  .discriminatedUnion('type', [
    z
      .object({
        type: z.literal('header'),
        header: z
          .string()
          .regex(/^[A-Za-z0-9-]+$/)
          .overwrite((h) => h.toLowerCase())
          .describe('Header whose whole value is the placeholder, e.g. x-api-key.'),
      })
      .strict(),
    z
      .object({ type: z.literal('bearer') })
      .strict()
      .describe('Authorization: Bearer|token <placeholder>.'),
    z
      .object({ type: z.literal('basic') })
      .strict()
      .describe('Authorization: Basic user:placeholder (git).'),
    z
      .object({
        type: z.literal('oauth_refresh'),
        path: z
          .string()
          .regex(/^\/[!-~]*$/)
          .describe('Token endpoint path, e.g. /v1/oauth/token.'),
        accessSecret: SecretNameSchema.describe('Secret whose placeholder stands for the new access token.'),
      })
      .strict()
      .describe('Answer OAuth refresh_token grants on the host with the real refresh token.'),
  ])
  .describe('Where the placeholder may be swapped for the real value.');

export const SecretInjectionRuleSchema = z
  .object({
    secret: SecretNameSchema,
    hosts: z
      .array(RuleHostSchema)
      .min(1)
      .max(20)
      .describe('Exact hosts (SNI and Host) the secret may go to.'),
    inject: SecretInjectionSchema,
  })
  .strict()
  .describe('Maps a host-side secret to the hosts and the header it may be injected into.');
export type SecretInjectionRule = z.infer<typeof SecretInjectionRuleSchema>;
export type SecretInjection = z.infer<typeof SecretInjectionSchema>;

// ---- decisions and audit ----

/** Stable deny codes, sent as `X-Agentbox-Deny` and kept in the audit. */
export const EGRESS_DENY_CODES = [
  'domain_not_allowed',
  'domain_denied',
  'ip_literal_not_allowed',
  'address_not_allowed',
  'port_not_allowed',
  'github_repo_not_allowed',
  'sni_mismatch',
  'bad_request',
  'policy_error',
  /** A model call while a task's `maxSpendUsd` is spent (by the host's count). */
  'budget_exceeded',
  /** A call that may spend in a way the gateway cannot price, while a spend budget is set. */
  'budget_unmetered',
] as const;
export type EgressDenyCode = (typeof EGRESS_DENY_CODES)[number];

/** Codes of connections the policy allowed but that failed on the way (502 to the guest). */
export const EGRESS_ERROR_CODES = ['dns_failed', 'upstream_failed', 'oauth_refresh_failed'] as const;
export type EgressErrorCode = (typeof EGRESS_ERROR_CODES)[number];

export const EGRESS_AUDIT_CODES = ['allowed', ...EGRESS_DENY_CODES, ...EGRESS_ERROR_CODES] as const;
export type EgressAuditCode = (typeof EGRESS_AUDIT_CODES)[number];

export const EgressAuditRecordSchema = z
  .object({
    boxId: z.string().describe('Box that made the connection.'),
    ts: z.string().describe('ISO 8601 time of the decision.'),
    host: z.string().describe('Destination host as requested (canonical).'),
    port: z.number().int().describe('Destination port.'),
    method: z.string().optional().describe('HTTP method (CONNECT for tunnels).'),
    path: z.string().optional().describe('Request path without the query, where visible.'),
    mode: z
      .enum(['tunnel', 'intercept', 'http'])
      .optional()
      .describe('tunnel: opaque CONNECT; intercept: TLS terminated on the host; http: plain HTTP.'),
    decision: z.enum(['allow', 'deny', 'error']).describe('What happened.'),
    code: z.enum(EGRESS_AUDIT_CODES).describe('Stable machine-readable code.'),
    reason: z.string().describe('One-line explanation; never contains secret values.'),
    bytesUp: z.number().int().nonnegative().describe('Bytes sent from the box towards the destination.'),
    bytesDown: z.number().int().nonnegative().describe('Bytes received by the box from the destination.'),
    placeholderLeak: z
      .boolean()
      .describe('A secret placeholder was seen where it is not swapped (other host, header or body).'),
    injected: z
      .array(SecretNameSchema)
      .optional()
      .describe('Secrets swapped in on this request (names only).'),
    costUsd: z
      .number()
      .nonnegative()
      .optional()
      .describe(
        "A model call's cost as the gateway priced it from the API's answer (while a task counted spend).",
      ),
  })
  .strict()
  .describe('One egress decision of a box.');
export type EgressAuditRecord = z.infer<typeof EgressAuditRecordSchema>;

/** USD per million tokens of one model (or model family). */
export const TokenPriceSchema = z
  .object({
    input: z.number().nonnegative().max(100_000).describe('USD per million prompt tokens.'),
    output: z.number().nonnegative().max(100_000).describe('USD per million output tokens.'),
  })
  .strict();

/**
 * An operator's model prices (`serve --model-prices FILE`), ahead of the built-in table: model id
 * prefix (`claude-opus-5`, or a full id) → price; the longest matching prefix wins. Cache writes,
 * reads and long prompts are priced from `input` as for built-in models.
 */
const MODEL_ID_PREFIX = /^[a-z0-9][a-z0-9._:[\]-]{0,199}$/;

export const ModelPricesSchema = z
  .record(z.string(), TokenPriceSchema)
  .superRefine((prices, ctx) => {
    const ids = Object.keys(prices);
    if (ids.length > 1000) ctx.addIssue({ code: 'custom', message: 'at most 1000 models' });
    for (const id of ids)
      if (!MODEL_ID_PREFIX.test(id))
        ctx.addIssue({ code: 'custom', path: [id], message: 'not a lowercase model id or id prefix' });
  })
  .describe('Model id prefix → USD per million tokens.');
export type ModelPrices = z.infer<typeof ModelPricesSchema>;
