import { describe, expect, it } from 'vitest';
import type { EgressPolicyInput } from '@agentbox/protocol';
import { compilePolicy, decide, DEFAULT_INJECTION_RULES, type EgressRequest } from '../../src/index.js';

/**
 * decide() on a table: each row is a request, a policy and the expected code. The policies are
 * small on purpose so each row shows the one rule it exercises.
 */

const BASE: EgressPolicyInput = {
  allowDomains: ['example.com', '*.example.org', 'api.anthropic.com', 'github.com', 'api.github.com'],
  denyDomains: ['bad.example.org'],
};
const WITH_IPS: EgressPolicyInput = {
  ...BASE,
  allowIPs: ['203.0.114.0/24', '10.1.2.3', '127.0.0.1', '2606:4700::/32'],
};
const LAN: EgressPolicyInput = { ...WITH_IPS, allowLan: true };
const REPOS: EgressPolicyInput = { ...BASE, repos: ['Acme/Widgets'] };
const REPOS_GRAPHQL: EgressPolicyInput = { ...REPOS, githubGraphqlOperations: ['RepositoryInfo'] };
const HOST = '198.51.99.7'; // stands for one of this host's addresses

interface Row {
  name: string;
  request: Partial<EgressRequest> & { host: string };
  policy?: EgressPolicyInput;
  rules?: boolean;
  hostAddresses?: string[];
  code: string;
  intercept?: boolean;
  inject?: string[];
  /** Expected bodyCheck of an allow (absent: none). */
  bodyCheck?: string;
}

const connect = (host: string, port = 443, extra: Partial<EgressRequest> = {}) => ({
  stage: 'connect' as const,
  host,
  port,
  ...extra,
});
const tlsReq = (host: string, extra: Partial<EgressRequest> = {}) => ({
  stage: 'tls_request' as const,
  host,
  port: 443,
  sni: host,
  hostHeader: host,
  method: 'GET',
  path: '/',
  ...extra,
});

const ROWS: Row[] = [
  // --- domains ---
  { name: 'exact allowed domain', request: connect('example.com'), code: 'allowed' },
  { name: 'allowed domain, uppercase + trailing dot', request: connect('EXAMPLE.COM.'), code: 'allowed' },
  {
    name: 'subdomain of an exact entry is not allowed',
    request: connect('www.example.com'),
    code: 'domain_not_allowed',
  },
  { name: 'wildcard matches a subdomain', request: connect('a.example.org'), code: 'allowed' },
  { name: 'wildcard matches a deep subdomain', request: connect('x.y.example.org'), code: 'allowed' },
  { name: 'wildcard does not match its apex', request: connect('example.org'), code: 'domain_not_allowed' },
  {
    name: 'suffix trick is not a subdomain',
    request: connect('evilexample.org'),
    code: 'domain_not_allowed',
  },
  {
    name: 'allowed name as a prefix of another',
    request: connect('example.com.evil.net'),
    code: 'domain_not_allowed',
  },
  {
    name: 'deny list wins over a wildcard allow',
    request: connect('bad.example.org'),
    code: 'domain_denied',
  },
  { name: 'deny list wins, any case', request: connect('BAD.Example.ORG'), code: 'domain_denied' },
  {
    name: 'unknown domain is denied by default',
    request: connect('unknown.net'),
    code: 'domain_not_allowed',
  },
  {
    name: 'empty policy denies everything',
    request: connect('example.com'),
    policy: {},
    code: 'domain_not_allowed',
  },
  {
    name: 'preset opens its domains',
    request: connect('registry.npmjs.org'),
    policy: { presets: ['npm'] },
    code: 'allowed',
  },
  {
    name: 'preset wildcard (githubusercontent)',
    request: connect('objects.githubusercontent.com'),
    policy: { presets: ['github'] },
    code: 'allowed',
  },
  {
    name: 'deny list beats a preset',
    request: connect('registry.npmjs.org'),
    policy: { presets: ['npm'], denyDomains: ['registry.npmjs.org'] },
    code: 'domain_denied',
  },
  // --- names that always mean this machine or metadata ---
  { name: 'localhost', request: connect('localhost'), code: 'address_not_allowed' },
  {
    name: 'localhost even when allowed',
    request: connect('localhost'),
    policy: { allowDomains: ['localhost'] },
    code: 'address_not_allowed',
  },
  { name: 'sub.localhost', request: connect('app.localhost'), code: 'address_not_allowed' },
  {
    name: 'GCP metadata name',
    request: connect('metadata.google.internal', 80),
    code: 'address_not_allowed',
  },
  {
    name: 'metadata name even when allow-listed',
    request: connect('metadata.google.internal', 80),
    policy: { allowDomains: ['metadata.google.internal'] },
    code: 'address_not_allowed',
  },
  // --- malformed ---
  { name: 'empty host', request: connect(''), code: 'bad_request' },
  { name: 'userinfo in host', request: connect('user@example.com'), code: 'bad_request' },
  { name: 'space in host', request: connect('exa mple.com'), code: 'bad_request' },
  { name: 'CRLF in host', request: connect('example.com\r\nX: y'), code: 'bad_request' },
  { name: 'non-ASCII host', request: connect('exämple.com'), code: 'bad_request' },
  { name: 'port 0', request: connect('example.com', 0), code: 'bad_request' },
  { name: 'port too large', request: connect('example.com', 70000), code: 'bad_request' },
  // --- ports ---
  { name: 'port 80 is open by default', request: connect('example.com', 80), code: 'allowed' },
  { name: 'port 22 is not', request: connect('example.com', 22), code: 'port_not_allowed' },
  {
    name: 'port opened by allowPorts',
    request: connect('example.com', 8443),
    policy: { ...BASE, allowPorts: [8443] },
    code: 'allowed',
  },
  // --- IP literals ---
  { name: 'IP literal not listed', request: connect('93.184.216.34'), code: 'ip_literal_not_allowed' },
  { name: 'IPv6 literal not listed', request: connect('[2606:2800::1]'), code: 'ip_literal_not_allowed' },
  { name: 'decimal IPv4 notation', request: connect('2130706433'), code: 'ip_literal_not_allowed' },
  { name: 'short IPv4 notation', request: connect('127.1'), code: 'ip_literal_not_allowed' },
  { name: 'hex IPv4 notation', request: connect('0x7f.0.0.1'), code: 'ip_literal_not_allowed' },
  { name: 'IP in allowIPs CIDR', request: connect('203.0.114.9'), policy: WITH_IPS, code: 'allowed' },
  { name: 'IPv6 in allowIPs CIDR', request: connect('[2606:4700::1111]'), policy: WITH_IPS, code: 'allowed' },
  {
    name: 'IP just outside the CIDR',
    request: connect('203.0.115.1'),
    policy: WITH_IPS,
    code: 'ip_literal_not_allowed',
  },
  {
    name: 'allowIPs cannot open loopback',
    request: connect('127.0.0.1'),
    policy: WITH_IPS,
    code: 'address_not_allowed',
  },
  {
    name: 'listed private IP needs allowLan',
    request: connect('10.1.2.3'),
    policy: WITH_IPS,
    code: 'address_not_allowed',
  },
  { name: 'listed private IP with allowLan', request: connect('10.1.2.3'), policy: LAN, code: 'allowed' },
  {
    name: 'unlisted private IP even with allowLan',
    request: connect('10.0.0.1'),
    policy: LAN,
    code: 'ip_literal_not_allowed',
  },
  { name: 'metadata IP literal', request: connect('169.254.169.254', 80), code: 'ip_literal_not_allowed' },
  {
    name: 'metadata IP even when listed',
    request: connect('169.254.169.254', 80),
    policy: { allowIPs: ['169.254.0.0/16'], allowLan: true },
    code: 'address_not_allowed',
  },
  // --- resolved addresses ---
  {
    name: 'name resolving to a public address',
    request: connect('example.com', 443, { addresses: ['93.184.216.34'] }),
    code: 'allowed',
  },
  {
    name: 'rebinding to loopback',
    request: connect('example.com', 443, { addresses: ['127.0.0.1'] }),
    code: 'address_not_allowed',
  },
  {
    name: 'one bad address among good ones',
    request: connect('example.com', 443, { addresses: ['93.184.216.34', '10.0.0.5'] }),
    code: 'address_not_allowed',
  },
  {
    name: 'IPv4-mapped loopback',
    request: connect('example.com', 443, { addresses: ['::ffff:127.0.0.1'] }),
    code: 'address_not_allowed',
  },
  {
    name: 'IPv6 loopback',
    request: connect('example.com', 443, { addresses: ['::1'] }),
    code: 'address_not_allowed',
  },
  {
    name: 'metadata address',
    request: connect('example.com', 443, { addresses: ['169.254.169.254'] }),
    code: 'address_not_allowed',
  },
  {
    name: 'AWS IPv6 metadata',
    request: connect('example.com', 443, { addresses: ['fd00:ec2::254'] }),
    policy: { ...BASE, allowLan: true },
    code: 'address_not_allowed',
  },
  {
    name: 'CGNAT without allowLan',
    request: connect('example.com', 443, { addresses: ['100.64.1.1'] }),
    code: 'address_not_allowed',
  },
  {
    name: 'ULA with allowLan',
    request: connect('example.com', 443, { addresses: ['fd12::1'] }),
    policy: { ...BASE, allowLan: true },
    code: 'allowed',
  },
  {
    name: 'no address at all',
    request: connect('example.com', 443, { addresses: [] }),
    code: 'address_not_allowed',
  },
  {
    name: 'garbage address',
    request: connect('example.com', 443, { addresses: ['not-an-ip'] }),
    code: 'address_not_allowed',
  },
  {
    name: "the host's own address",
    request: connect('example.com', 443, { addresses: [HOST] }),
    hostAddresses: [HOST],
    code: 'address_not_allowed',
  },
  {
    name: "the host's own address with allowHost",
    request: connect('example.com', 443, { addresses: [HOST] }),
    policy: { ...BASE, allowHost: true },
    hostAddresses: [HOST],
    code: 'allowed',
  },
  {
    name: 'allowHost does not open loopback',
    request: connect('example.com', 443, { addresses: ['127.0.0.1'] }),
    policy: { ...BASE, allowHost: true },
    hostAddresses: ['127.0.0.1'],
    code: 'address_not_allowed',
  },
  // --- interception and injection ---
  {
    name: 'rule host is intercepted',
    request: connect('api.anthropic.com'),
    rules: true,
    code: 'allowed',
    intercept: true,
  },
  {
    name: 'other hosts are tunnelled',
    request: connect('example.com'),
    rules: true,
    code: 'allowed',
    intercept: false,
  },
  {
    name: 'no rules, no interception',
    request: connect('api.anthropic.com'),
    code: 'allowed',
    intercept: false,
  },
  {
    name: 'inside TLS: rule host gets its rules',
    request: tlsReq('api.anthropic.com'),
    rules: true,
    code: 'allowed',
    inject: ['ANTHROPIC_API_KEY', 'CLAUDE_CODE_OAUTH_TOKEN'],
  },
  {
    name: 'plain HTTP never injects',
    request: { ...tlsReq('api.anthropic.com'), stage: 'http', port: 80 },
    policy: BASE,
    rules: true,
    code: 'allowed',
    inject: [],
  },
  {
    name: 'SNI differs from CONNECT host',
    request: tlsReq('api.anthropic.com', { sni: 'example.com' }),
    rules: true,
    code: 'sni_mismatch',
  },
  { name: 'no SNI', request: tlsReq('api.anthropic.com', { sni: null }), rules: true, code: 'sni_mismatch' },
  {
    name: 'Host header differs (domain fronting)',
    request: tlsReq('api.anthropic.com', { hostHeader: 'example.com' }),
    rules: true,
    code: 'sni_mismatch',
  },
  {
    name: 'Host header with another port',
    request: tlsReq('api.anthropic.com', { hostHeader: 'api.anthropic.com:8443' }),
    rules: true,
    code: 'sni_mismatch',
  },
  {
    name: 'Host header with the right port',
    request: tlsReq('api.anthropic.com', { hostHeader: 'API.anthropic.com:443' }),
    rules: true,
    code: 'allowed',
  },
  {
    name: 'missing Host header',
    request: tlsReq('api.anthropic.com', { hostHeader: undefined }),
    rules: true,
    code: 'bad_request',
  },
  // --- GitHub repos ---
  {
    name: 'repos list intercepts github.com',
    request: connect('github.com'),
    policy: REPOS,
    code: 'allowed',
    intercept: true,
  },
  {
    name: 'listed repo: info/refs',
    request: tlsReq('github.com', { path: '/acme/widgets.git/info/refs?service=git-upload-pack' }),
    policy: REPOS,
    code: 'allowed',
  },
  {
    name: 'listed repo: upload-pack, any case',
    request: tlsReq('github.com', { method: 'POST', path: '/ACME/Widgets/git-upload-pack' }),
    policy: REPOS,
    code: 'allowed',
  },
  {
    name: 'listed repo: receive-pack',
    request: tlsReq('github.com', { method: 'POST', path: '/acme/widgets.git/git-receive-pack' }),
    policy: REPOS,
    code: 'allowed',
  },
  {
    name: 'other repo',
    request: tlsReq('github.com', { path: '/acme/secret.git/info/refs' }),
    policy: REPOS,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'listed repo, web page',
    request: tlsReq('github.com', { path: '/acme/widgets' }),
    policy: REPOS,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'API for a listed repo',
    request: tlsReq('api.github.com', { path: '/repos/acme/widgets/pulls' }),
    policy: REPOS,
    code: 'allowed',
  },
  {
    name: 'API for another repo',
    request: tlsReq('api.github.com', { path: '/repos/acme/other/pulls' }),
    policy: REPOS,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'API dot-segment escape',
    request: tlsReq('api.github.com', { path: '/repos/acme/widgets/../../other/x/pulls' }),
    policy: REPOS,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'API encoded slash',
    request: tlsReq('api.github.com', { path: '/repos/acme/widgets%2F..%2F..%2Fother/x' }),
    policy: REPOS,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'API outside /repos',
    request: tlsReq('api.github.com', { path: '/user' }),
    policy: REPOS,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'GraphQL is refused when no operation is listed',
    request: tlsReq('api.github.com', { method: 'POST', path: '/graphql' }),
    policy: REPOS,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'GraphQL POST with listed operations goes on to the body check',
    request: tlsReq('api.github.com', { method: 'POST', path: '/graphql' }),
    policy: REPOS_GRAPHQL,
    code: 'allowed',
    bodyCheck: 'github_graphql',
  },
  {
    name: 'GraphQL GET with the query in the query string',
    request: tlsReq('api.github.com', { method: 'GET', path: '/graphql?query=%7Bviewer%7Blogin%7D%7D' }),
    policy: REPOS_GRAPHQL,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'GraphQL POST with a query string',
    request: tlsReq('api.github.com', { method: 'POST', path: '/graphql?query=x' }),
    policy: REPOS_GRAPHQL,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'GraphQL endpoint spelled otherwise',
    request: tlsReq('api.github.com', { method: 'POST', path: '/GraphQL/' }),
    policy: REPOS_GRAPHQL,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'GraphQL over plain HTTP (body never judged there)',
    request: { stage: 'http', host: 'api.github.com', port: 80, method: 'POST', path: '/graphql' },
    policy: REPOS_GRAPHQL,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'a REST path needs no body check',
    request: tlsReq('api.github.com', { path: '/repos/acme/widgets/pulls' }),
    policy: REPOS_GRAPHQL,
    code: 'allowed',
  },
  {
    name: 'without repos, GitHub is not path-checked',
    request: tlsReq('github.com', { path: '/acme/secret.git/info/refs' }),
    policy: BASE,
    code: 'allowed',
  },
  // --- GitHub credentials: only for listed repositories ---
  {
    name: 'github preset without repos: GitHub is tunnelled, its token rules notwithstanding',
    request: connect('github.com'),
    policy: { presets: ['github'] },
    rules: true,
    code: 'allowed',
    intercept: false,
  },
  {
    name: 'github preset without repos: git to any repository goes without the token',
    request: tlsReq('github.com', { path: '/someone/anything.git/info/refs?service=git-upload-pack' }),
    policy: { presets: ['github'] },
    rules: true,
    code: 'allowed',
    inject: [],
  },
  {
    name: 'github preset without repos: the API goes without the token',
    request: tlsReq('api.github.com', { path: '/repos/someone/anything/contents/x' }),
    policy: { presets: ['github'] },
    rules: true,
    code: 'allowed',
    inject: [],
  },
  {
    name: 'github preset without repos: uploads go without the token',
    request: tlsReq('uploads.github.com', {
      method: 'POST',
      path: '/repos/someone/anything/releases/1/assets',
    }),
    policy: { presets: ['github'] },
    rules: true,
    code: 'allowed',
    inject: [],
  },
  {
    name: 'repos listed: the token goes with a listed repository',
    request: tlsReq('github.com', { method: 'POST', path: '/acme/widgets.git/git-receive-pack' }),
    policy: { presets: ['github'], repos: ['acme/widgets'] },
    rules: true,
    code: 'allowed',
    inject: ['GITHUB_TOKEN'],
  },
  {
    name: 'repos listed: the API token goes with a listed repository',
    request: tlsReq('api.github.com', { path: '/repos/acme/widgets/pulls' }),
    policy: { presets: ['github'], repos: ['acme/widgets'] },
    rules: true,
    code: 'allowed',
    inject: ['GITHUB_TOKEN'],
  },
  {
    name: 'repos listed: a repository not listed is refused, so nothing is injected',
    request: tlsReq('github.com', { path: '/acme/secret.git/info/refs' }),
    policy: { presets: ['github'], repos: ['acme/widgets'] },
    rules: true,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'empty repos list: GitHub is governed and every repository refused',
    request: tlsReq('github.com', { path: '/acme/widgets.git/info/refs' }),
    policy: { presets: ['github'], repos: [] },
    rules: true,
    code: 'github_repo_not_allowed',
  },
  {
    name: 'no repos: other credential hosts still get their rules',
    request: tlsReq('api.anthropic.com'),
    policy: { presets: ['anthropic', 'github'] },
    rules: true,
    code: 'allowed',
    inject: ['ANTHROPIC_API_KEY', 'CLAUDE_CODE_OAUTH_TOKEN'],
  },
];

describe('decide(): the table', () => {
  it('has enough rows to mean something', () => {
    expect(ROWS.length).toBeGreaterThanOrEqual(40);
    expect(new Set(ROWS.map((r) => r.name)).size).toBe(ROWS.length);
  });

  it.each(ROWS)('$name → $code', (row) => {
    const policy = compilePolicy(row.policy ?? BASE, {
      rules: row.rules === true ? DEFAULT_INJECTION_RULES : [],
      hostAddresses: row.hostAddresses ?? [],
    });
    const request: EgressRequest = { stage: 'connect' as const, port: 443, ...row.request };
    const decision = decide(request, policy);
    expect(decision.code).toBe(row.code);
    expect(decision.action).toBe(row.code === 'allowed' ? 'allow' : 'deny');
    expect(decision.reason.length).toBeGreaterThan(5);
    if (decision.action === 'allow') {
      if (row.intercept !== undefined) expect(decision.intercept).toBe(row.intercept);
      if (row.inject !== undefined) expect(decision.inject.map((r) => r.secret).sort()).toEqual(row.inject);
      expect(decision.bodyCheck).toBe(row.bodyCheck);
    }
  });
});

describe('decide(): fails closed', () => {
  it('turns an exception inside the policy into a policy_error deny', () => {
    const policy = compilePolicy(BASE);
    const broken = { ...policy, allowDomains: null } as unknown as typeof policy;
    expect(decide({ stage: 'connect', host: 'example.com', port: 443 }, broken)).toMatchObject({
      action: 'deny',
      code: 'policy_error',
    });
  });

  it('is pure: the same input gives the same answer and the policy is not changed', () => {
    const policy = compilePolicy(BASE);
    const before = JSON.stringify({ ...policy, upstreams: [...policy.upstreams] });
    const request: EgressRequest = {
      stage: 'connect',
      host: 'a.example.org',
      port: 443,
      addresses: ['1.1.1.1'],
    };
    expect(decide(request, policy)).toEqual(decide(request, policy));
    expect(JSON.stringify({ ...policy, upstreams: [...policy.upstreams] })).toBe(before);
  });

  it('gives deny-list precedence regardless of list order (seeded shuffle, not vacuous)', () => {
    let seed = 42;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    let compared = 0;
    for (let i = 0; i < 50; i++) {
      const allow = ['*.example.org', 'x.example.org', 'example.com'].sort(() => rand() - 0.5);
      const deny = ['x.example.org', 'nothing.test'].sort(() => rand() - 0.5);
      const decision = decide(
        { stage: 'connect', host: 'x.example.org', port: 443 },
        compilePolicy({ allowDomains: allow, denyDomains: deny }),
      );
      expect(decision.code).toBe('domain_denied');
      compared++;
    }
    expect(compared).toBe(50);
  });
});
