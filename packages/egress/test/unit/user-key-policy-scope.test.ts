import { describe, expect, it } from 'vitest';
import {
  EgressPolicySchema,
  parseCidr,
  RepoGrantSchema,
  repoGranted,
  type EgressPolicyInput,
} from '@agentbox/protocol';
import {
  narrowToGrants,
  nonPublicClassesIn,
  repoGrantExcess,
  userPolicyExcess,
  USER_EGRESS_PORTS,
} from '../../src/index.js';

/** The fields of `input` (parsed as the daemon parses it) a user key may not ask for. */
const excessOf = (input: EgressPolicyInput) =>
  userPolicyExcess(EgressPolicySchema.parse(input)).map((e) => e.field);

describe('userPolicyExcess(): what a user key may ask of an egress policy', () => {
  it('allows public destinations by name or address on the default ports', () => {
    expect(excessOf({})).toEqual([]);
    expect(
      excessOf({
        allowDomains: ['example.com', '*.example.org'],
        denyDomains: ['bad.example.org'],
        presets: ['anthropic', 'github', 'npm'],
        repos: ['acme/widgets'],
        githubGraphqlOperations: ['RepositoryInfo'],
        allowIPs: ['8.8.8.8', '1.1.1.0/24', '2606:4700::/32', '64:ff9b::808:808'],
        allowPorts: [443],
      }),
    ).toEqual([]);
    expect(excessOf({ allowPorts: [80, 443], allowLan: false, allowHost: false })).toEqual([]);
  });

  it('refuses allowLan and allowHost', () => {
    expect(excessOf({ allowLan: true })).toEqual(['allowLan']);
    expect(excessOf({ allowHost: true })).toEqual(['allowHost']);
  });

  it.each([
    ['10.0.0.0/8', 'private'],
    ['10.1.2.3', 'private'],
    ['172.16.0.0/12', 'private'],
    ['192.168.0.0/16', 'private'],
    ['192.168.1.7', 'private'],
    ['100.64.0.0/10', 'cgnat'],
    ['127.0.0.1', 'loopback'],
    ['169.254.169.254', 'metadata'],
    ['169.254.0.0/16', 'link-local'],
    ['0.0.0.0/0', 'private'], // holds public addresses too, but not only
    ['8.0.0.0/5', 'private'], // 8.0.0.0–15.255.255.255 takes in 10/8
    ['fd00::/8', 'ula'],
    ['fe80::1', 'link-local'],
    ['::1', 'loopback'],
    ['::/0', 'ula'],
    ['::ffff:10.0.0.1', 'private'], // canonicalized by the schema, still IPv4 inside IPv6
    ['::ffff:0:0/96', 'private'],
    ['64:ff9b::a00:1', 'private'], // NAT64 of 10.0.0.1
  ])('refuses allowIPs %s (%s)', (entry, cls) => {
    const excess = userPolicyExcess(EgressPolicySchema.parse({ allowIPs: ['8.8.8.8', entry] }));
    expect(excess.map((e) => e.field)).toEqual(['allowIPs.1']);
    expect(excess[0]!.reason).toContain(cls);
  });

  it('refuses any port beyond the default 80 and 443', () => {
    expect([...USER_EGRESS_PORTS]).toEqual([80, 443]);
    for (const port of [22, 5432, 6379, 8080, 8443]) {
      const excess = userPolicyExcess(EgressPolicySchema.parse({ allowPorts: [443, port] }));
      expect(excess.map((e) => e.field)).toEqual(['allowPorts']);
      expect(excess[0]!.reason).toContain(String(port));
    }
  });

  it('refuses the test-only upstreams map', () => {
    expect(excessOf({ upstreams: { 'api.anthropic.com': '10.0.0.5:22' } })).toEqual(['upstreams']);
  });

  it('names every field that goes too far, in order', () => {
    expect(
      excessOf({
        allowLan: true,
        allowHost: true,
        allowIPs: ['8.8.8.8', '192.168.0.0/16', '1.1.1.1', '127.0.0.1'],
        allowPorts: [22, 443],
      }),
    ).toEqual(['allowLan', 'allowHost', 'allowIPs.1', 'allowIPs.3', 'allowPorts']);
  });
});

describe('nonPublicClassesIn()', () => {
  const classes = (text: string) => [...nonPublicClassesIn(parseCidr(text)!)].sort();

  it('is empty for public prefixes and names the classes a prefix overlaps', () => {
    expect(classes('8.8.8.8')).toEqual([]);
    expect(classes('11.0.0.0/8')).toEqual([]);
    expect(classes('2606:4700::/32')).toEqual([]);
    expect(classes('10.0.0.0/7')).toEqual(['private']); // 10/8 and 11/8
    expect(classes('10.2.3.0/24')).toEqual(['private']); // inside 10/8
    expect(classes('169.254.0.0/16')).toEqual(['link_local', 'metadata']);
    expect(classes('::ffff:127.0.0.0/104')).toEqual(['loopback']);
  });
});

describe("repoGrantExcess(): repositories the host token would serve beyond a key's grants", () => {
  const excess = (policy: EgressPolicyInput, grants: string[]) =>
    repoGrantExcess(EgressPolicySchema.parse(policy), RepoGrantSchema.array().parse(grants)).map(
      (e) => e.field,
    );

  it('covers a repository by name, by owner, or all; case and .git do not matter', () => {
    const grants = RepoGrantSchema.array().parse(['Acme/*', 'solo/One.git']);
    expect(grants).toEqual(['acme/*', 'solo/one']);
    expect(repoGranted(grants, 'acme/widgets')).toBe(true);
    expect(repoGranted(grants, 'solo/one')).toBe(true);
    expect(repoGranted(grants, 'solo/two')).toBe(false);
    // An owner grant is not a prefix match: acme-evil is another owner.
    expect(repoGranted(grants, 'acme-evil/widgets')).toBe(false);
    expect(repoGranted(['*'], 'anyone/anything')).toBe(true);
    expect(repoGranted([], 'acme/widgets')).toBe(false);
  });

  it('names each repository no grant covers, and nothing for a policy without repos', () => {
    expect(excess({}, [])).toEqual([]);
    expect(excess({ presets: ['github'] }, [])).toEqual([]);
    expect(excess({ repos: ['ACME/Widgets.git', 'other/x', 'acme/y'] }, ['acme/*'])).toEqual(['repos.1']);
    expect(excess({ repos: ['a/b'] }, [])).toEqual(['repos.0']);
  });

  it('refuses every GraphQL operation unless every repository is granted: GraphQL is not held to repos', () => {
    const policy = { repos: ['acme/w'], githubGraphqlOperations: ['Issues', 'mutation Close'] };
    expect(excess(policy, ['acme/*'])).toEqual(['githubGraphqlOperations.0', 'githubGraphqlOperations.1']);
    expect(excess({ repos: ['acme/w'], githubGraphqlOperations: [] }, ['acme/*'])).toEqual([]);
    expect(excess(policy, ['*'])).toEqual([]);
  });

  it('takes only well-formed grants', () => {
    for (const bad of ['acme', '*/x', 'acme/*/x', 'ac me/x', '-acme/x', 'acme/**', ''])
      expect(RepoGrantSchema.safeParse(bad).success, bad).toBe(false);
  });
});

describe('narrowToGrants(): the policy a box is held to while its key has these grants', () => {
  const policy = EgressPolicySchema.parse({
    presets: ['github', 'npm'],
    allowDomains: ['example.com'],
    repos: ['acme/a', 'acme/b', 'solo/c'],
    githubGraphqlOperations: ['Issues', 'mutation Close'],
  });

  it('keeps the policy itself when the grants cover it', () => {
    expect(narrowToGrants(policy, ['*'])).toBe(policy);
    const noGraphql = EgressPolicySchema.parse({ repos: ['acme/a'] });
    expect(narrowToGrants(noGraphql, ['acme/*'])).toBe(noGraphql);
    const noRepos = EgressPolicySchema.parse({ presets: ['github'] });
    expect(narrowToGrants(noRepos, [])).toBe(noRepos);
  });

  it('cuts repos and GraphQL operations only; an emptied repos list stays a list', () => {
    expect(narrowToGrants(policy, ['acme/*'])).toEqual({
      ...policy,
      repos: ['acme/a', 'acme/b'],
      githubGraphqlOperations: [],
    });
    const none = narrowToGrants(policy, []);
    expect(none.repos).toEqual([]);
    expect(none).toMatchObject({ presets: ['github', 'npm'], allowDomains: ['example.com'] });
    expect(repoGrantExcess(none, [])).toEqual([]);
  });
});
