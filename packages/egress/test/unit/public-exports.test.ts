import { describe, expect, it } from 'vitest';
import * as egress from '../../src/index.js';

describe('@agentbox/egress public surface', () => {
  it('exports exactly these runtime names', () => {
    expect(Object.keys(egress).sort()).toEqual([
      'ALWAYS_DENIED_CLASSES',
      'DEFAULT_INJECTION_RULES',
      'DENY_HEADER',
      'ERROR_HEADER',
      'GITHUB_GRAPHQL_MAX_BODY_BYTES',
      'GITHUB_HOSTS',
      'LAN_CLASSES',
      'MemoryAuditSink',
      'NULL_AUDIT_SINK',
      'PLACEHOLDER_PREFIX',
      'REVOKED_KEY_POLICY',
      'SECRET_ENV_PREFIX',
      'SecretStore',
      'USER_EGRESS_PORTS',
      'benchEgress',
      'checkAddress',
      'classifyAddress',
      'compilePolicy',
      'createCertificateAuthority',
      'createEgressGateway',
      'decide',
      'findPlaceholders',
      'githubRepoOfRequest',
      'hostAddressKeys',
      'isGitHubHost',
      'isInjectableSecret',
      'judgeGithubGraphql',
      'loadCertificateAuthority',
      'narrowToGrants',
      'nonPublicClassesIn',
      'normalizeIp',
      'parseAddress',
      'repoFromGitUrl',
      'repoGrantExcess',
      'rulesForHost',
      'systemLookup',
      'userPolicyExcess',
    ]);
  });
});
