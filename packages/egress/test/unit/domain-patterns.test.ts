import { describe, expect, it } from 'vitest';
import {
  DOMAIN_PATTERN_ERRORS,
  EGRESS_PRESETS,
  EgressPolicySchema,
  canonicalizeHost,
  formatIp,
  matchesDomainPattern,
  parseCidr,
  parseDomainPattern,
  parseIp,
} from '@agentbox/protocol';

describe('domain patterns (one module for the schema and the matcher)', () => {
  const VALID: Array<[string, string]> = [
    ['example.com', 'example.com'],
    ['EXAMPLE.com', 'example.com'],
    ['example.com.', 'example.com'],
    ['*.example.com', '*.example.com'],
    ['*.Example.COM.', '*.example.com'],
    ['a-b.c_d.example', 'a-b.c_d.example'],
    ['xn--bcher-kva.example', 'xn--bcher-kva.example'],
    ['*.github.io', '*.github.io'],
    ['intranet', 'intranet'],
  ];
  it.each(VALID)('accepts %s as %s', (raw, canonical) => {
    expect(parseDomainPattern(raw)).toEqual({ ok: true, pattern: canonical });
  });

  const INVALID: Array<[string, string]> = [
    ['*', DOMAIN_PATTERN_ERRORS.tooBroad],
    ['*.', DOMAIN_PATTERN_ERRORS.tooBroad],
    ['*.com', DOMAIN_PATTERN_ERRORS.tooBroad],
    ['*.COM.', DOMAIN_PATTERN_ERRORS.tooBroad],
    ['*.co.uk', DOMAIN_PATTERN_ERRORS.tooBroad],
    ['**.example.com', DOMAIN_PATTERN_ERRORS.misplacedWildcard],
    ['*example.com', DOMAIN_PATTERN_ERRORS.misplacedWildcard],
    ['a.*.example.com', DOMAIN_PATTERN_ERRORS.misplacedWildcard],
    ['example.*', DOMAIN_PATTERN_ERRORS.misplacedWildcard],
    ['1.2.3.4', DOMAIN_PATTERN_ERRORS.ipLiteral],
    ['[::1]', DOMAIN_PATTERN_ERRORS.ipLiteral],
    ['127.1', DOMAIN_PATTERN_ERRORS.ipLiteral],
    ['*.10', DOMAIN_PATTERN_ERRORS.ipLiteral],
    ['', DOMAIN_PATTERN_ERRORS.invalid],
    ['exa mple.com', DOMAIN_PATTERN_ERRORS.invalid],
    ['-bad.example.com', DOMAIN_PATTERN_ERRORS.invalid],
    ['a..example.com', DOMAIN_PATTERN_ERRORS.invalid],
    ['example.com..', DOMAIN_PATTERN_ERRORS.invalid],
    ['https://example.com', DOMAIN_PATTERN_ERRORS.invalid],
    ['example.com:443', DOMAIN_PATTERN_ERRORS.invalid],
    ['exämple.com', DOMAIN_PATTERN_ERRORS.invalid],
  ];
  it.each(INVALID)('rejects %j', (raw, error) => {
    expect(parseDomainPattern(raw)).toEqual({ ok: false, error });
  });

  it('matches exact names and strict subdomains only', () => {
    expect(matchesDomainPattern('example.com', 'example.com')).toBe(true);
    expect(matchesDomainPattern('a.example.com', 'example.com')).toBe(false);
    expect(matchesDomainPattern('a.example.com', '*.example.com')).toBe(true);
    expect(matchesDomainPattern('a.b.example.com', '*.example.com')).toBe(true);
    expect(matchesDomainPattern('example.com', '*.example.com')).toBe(false);
    expect(matchesDomainPattern('badexample.com', '*.example.com')).toBe(false);
    expect(matchesDomainPattern('.example.com', '*.example.com')).toBe(false);
  });

  it('the schema refuses exactly what the parser refuses, and canonicalizes what it accepts', () => {
    for (const [raw] of INVALID) {
      expect(EgressPolicySchema.safeParse({ allowDomains: [raw] }).success).toBe(false);
      expect(EgressPolicySchema.safeParse({ denyDomains: [raw] }).success).toBe(false);
    }
    for (const [raw, canonical] of VALID) {
      expect(EgressPolicySchema.parse({ allowDomains: [raw] }).allowDomains).toEqual([canonical]);
    }
    const issue = EgressPolicySchema.safeParse({ allowDomains: ['*.com'] }).error?.issues[0];
    expect(issue?.message).toBe(DOMAIN_PATTERN_ERRORS.tooBroad);
    expect(issue?.path).toEqual(['allowDomains', 0]);
  });

  it('every preset entry is itself a canonical, valid pattern', () => {
    for (const domains of Object.values(EGRESS_PRESETS)) {
      for (const domain of domains) expect(parseDomainPattern(domain)).toEqual({ ok: true, pattern: domain });
    }
  });
});

describe('hosts, IPs and CIDRs', () => {
  it('canonicalizes hosts: case, trailing dot, IPv6 brackets and spelling', () => {
    expect(canonicalizeHost('API.Example.COM.')).toEqual({ kind: 'name', host: 'api.example.com' });
    expect(canonicalizeHost('[2001:DB8:0:0:0:0:0:1]')).toMatchObject({ kind: 'ip', host: '2001:db8::1' });
    expect(canonicalizeHost('::FFFF:127.0.0.1')).toMatchObject({ kind: 'ip', host: '::ffff:7f00:1' });
    expect(canonicalizeHost('10.0.0.1')).toMatchObject({ kind: 'ip', host: '10.0.0.1' });
    for (const bad of ['[1.2.3.4]', '[::1', 'a b', 'a@b', '', 'a..b', '.'])
      expect(canonicalizeHost(bad)).toBeUndefined();
  });

  it('prints IPv6 per RFC 5952', () => {
    const cases: Array<[string, string]> = [
      ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
      ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['2001:db8:1:1:1:1:0:1', '2001:db8:1:1:1:1:0:1'],
      ['::', '::'],
      ['0:0:0:0:0:0:0:1', '::1'],
      ['fe80::', 'fe80::'],
    ];
    for (const [input, out] of cases) expect(formatIp(parseIp(input)!)).toBe(out);
  });

  it('parses CIDRs strictly', () => {
    expect(parseCidr('10.0.0.0/8')).toMatchObject({ version: 4, prefix: 8 });
    expect(parseCidr('2001:db8::/32')).toMatchObject({ version: 6, prefix: 32 });
    expect(parseCidr('1.2.3.4')).toMatchObject({ prefix: 32 });
    for (const bad of ['10.0.0.1/8', '10.0.0.0/33', '10.0.0.0/', '10.0.0.0/08', 'x/8', '::/129']) {
      expect(parseCidr(bad)).toBeUndefined();
    }
    expect(EgressPolicySchema.parse({ allowIPs: ['2001:DB8::/32', '1.2.3.4'] }).allowIPs).toEqual([
      '2001:db8::/32',
      '1.2.3.4/32',
    ]);
  });

  it('defaults fail closed and unknown fields are refused', () => {
    const policy = EgressPolicySchema.parse({});
    expect(policy).toMatchObject({
      allowDomains: [],
      allowIPs: [],
      allowLan: false,
      allowHost: false,
      allowPorts: [80, 443],
    });
    expect(policy.repos).toBeUndefined();
    expect(EgressPolicySchema.safeParse({ allowAll: true }).success).toBe(false);
    expect(EgressPolicySchema.safeParse({ presets: ['everything'] }).success).toBe(false);
    expect(EgressPolicySchema.parse({ repos: ['Acme/Widgets.git'] }).repos).toEqual(['acme/widgets']);
  });
});
