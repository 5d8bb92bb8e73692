export {
  createEgressGateway,
  isInjectableSecret,
  type EgressGateway,
  type EgressGatewayOptions,
  type EgressBox,
  type EgressIdentity,
  type OpenBoxOptions,
} from './gateway.js';
export { decide, type EgressDecision, type EgressRequest, type EgressStage } from './decide.js';
export {
  compilePolicy,
  rulesForHost,
  DEFAULT_INJECTION_RULES,
  type CompiledPolicy,
  type CompilePolicyOptions,
  type SecretInjectionRuleInput,
  type UpstreamAddress,
} from './policy.js';
export {
  checkAddress,
  classifyAddress,
  normalizeIp,
  parseAddress,
  hostAddressKeys,
  nonPublicClassesIn,
  ALWAYS_DENIED_CLASSES,
  LAN_CLASSES,
  type AddressClass,
  type AddressRules,
  type AddressVerdict,
} from './address-policy.js';
export {
  narrowToGrants,
  repoGrantExcess,
  REVOKED_KEY_POLICY,
  userPolicyExcess,
  USER_EGRESS_PORTS,
  type PolicyExcess,
} from './policy-scope.js';
export {
  githubRepoOfRequest,
  repoFromGitUrl,
  isGitHubHost,
  GITHUB_HOSTS,
  type GitHubPathResult,
} from './github-paths.js';
export {
  judgeGithubGraphql,
  GITHUB_GRAPHQL_MAX_BODY_BYTES,
  type GithubGraphqlPolicy,
  type GithubGraphqlVerdict,
} from './github-graphql.js';
export { SecretStore, SECRET_ENV_PREFIX, type SecretChangeListener } from './secrets.js';
export type { CallReading, MessagesUsage, ModelCallKind, TokenPrice } from './spend.js';
export type { BudgetEnd, OpenBudgetOptions, SpendAccount, SpendBudget } from './spend-ledger.js';
export { PLACEHOLDER_PREFIX, findPlaceholders } from './placeholders.js';
export { MemoryAuditSink, NULL_AUDIT_SINK, type AuditSink } from './audit.js';
export {
  createCertificateAuthority,
  loadCertificateAuthority,
  type CaKeyPair,
  type CertificateAuthority,
  type CreateCaOptions,
  type IssuedCertificate,
} from './ca.js';
export { DENY_HEADER, ERROR_HEADER } from './http-util.js';
export { systemLookup, type LookupFn } from './upstream.js';
export { benchEgress, type EgressBenchOptions, type EgressBenchResult } from './bench.js';
