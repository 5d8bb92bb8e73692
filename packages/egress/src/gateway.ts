import os from 'node:os';
import type { Duplex } from 'node:stream';
import {
  AgentboxError,
  SecretInjectionRuleSchema,
  type EgressAuditRecord,
  ModelPricesSchema,
  type EgressPolicyInput,
  type ModelPrices,
  type SecretInjectionRule,
} from '@agentbox/protocol';
import { hostAddressKeys } from './address-policy.js';
import { NULL_AUDIT_SINK, type AuditSink } from './audit.js';
import { BoxSession } from './box-session.js';
import { caExpiresAt, createCertificateAuthority, loadCertificateAuthority, type CaKeyPair } from './ca.js';
import { PlaceholderRegistry } from './placeholders.js';
import { compilePolicy, DEFAULT_INJECTION_RULES, type SecretInjectionRuleInput } from './policy.js';
import { SecretStore } from './secrets.js';
import type { PriceOverrides } from './spend.js';
import { SpendLedger, type OpenBudgetOptions, type SpendAccount, type SpendBudget } from './spend-ledger.js';
import { systemLookup, type LookupFn } from './upstream.js';

/**
 * The host's egress gateway: one per host process, one session per box. The VM channel hands each
 * guest proxy connection over as a Duplex (handleConnection); everything the box reaches goes
 * through policy, DNS pinning, and (for credential hosts) TLS termination and injection here.
 */

export interface EgressGatewayOptions {
  /** Host-side secrets; default an empty store. */
  readonly secrets?: SecretStore;
  /** Where each secret may be injected; default DEFAULT_INJECTION_RULES. */
  readonly rules?: readonly SecretInjectionRuleInput[];
  /** Receives every decision; default discards. */
  readonly audit?: AuditSink;
  /** DNS resolution (all addresses); default dns.promises.lookup. Tests inject rebinding here. */
  readonly lookup?: LookupFn;
  /** Canonical keys of the host's own addresses; default from os.networkInterfaces(), per connection. */
  readonly hostAddresses?: () => Iterable<string>;
  /** Extra CA certificates (PEM) trusted for upstream TLS, on top of the system roots (tests). */
  readonly upstreamCaPem?: string | readonly string[];
  /**
   * Accept a policy's `upstreams` map. Tests only: a map can point a name at any address, so a
   * daemon that takes policies from API callers must leave this off (openBox then refuses it).
   */
  readonly allowUpstreamMap?: boolean;
  readonly connectTimeoutMs?: number;
  readonly dnsTimeoutMs?: number;
  /**
   * The operator's model prices (id prefix → USD per million tokens), ahead of the built-in table
   * spend budgets price calls with; validated like `serve --model-prices`.
   */
  readonly modelPrices?: ModelPrices;
  /**
   * The account a box's model calls are charged to besides its budgets (its API key's: what all
   * the key's boxes spent, and the key's cap); with this set, every box's model calls are metered.
   */
  readonly spendAccount?: (boxId: string) => SpendAccount | undefined;
  /** Validity of each box CA; default 365 days. */
  readonly caValidityDays?: number;
  readonly now?: () => Date;
  /** Called when the audit sink throws (value-free context). */
  readonly onError?: (err: unknown, context: string) => void;
}

export interface OpenBoxOptions {
  readonly boxId: string;
  readonly policy: EgressPolicyInput;
  /** Secret names this box gets placeholders for; default every stored secret that has a rule. */
  readonly secrets?: readonly string[];
  /**
   * Secrets of this box alone (say, credentials a caller gave with the box), layered over the
   * host's store for this box. Held in memory only, like the store.
   */
  readonly secretValues?: Readonly<Record<string, string>>;
  /** The box's egress identity from an earlier session (another daemon's): the same CA and placeholders. */
  readonly identity?: EgressIdentity;
}

/**
 * What a box's egress keeps across daemon restarts: its CA (what runs in the box trusts only the CA
 * it loaded when it started) and its placeholders (what it holds in its env). Kept on the host.
 */
export interface EgressIdentity {
  readonly ca: CaKeyPair;
  /** Secret name → the box's placeholder for it. */
  readonly placeholders: Readonly<Record<string, string>>;
}

export interface EgressBox {
  readonly boxId: string;
  /** PEM of the box CA; install in the guest (system store, NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, git). */
  readonly caCertPem: string;
  /** Environment for the box: secret name → placeholder. */
  readonly env: Readonly<Record<string, string>>;
  /** Secret name → placeholder (same as env). */
  readonly placeholders: ReadonlyMap<string, string>;
  /** Its CA and placeholders, for the host to keep: the next daemon opens the box with them. */
  readonly identity: EgressIdentity;
  /** One guest proxy connection: HTTP proxy protocol (CONNECT, absolute-URI HTTP) as raw bytes. */
  handleConnection(stream: Duplex): void;
  /**
   * Replaces the policy (same validation as openBox): it decides every later request, and every
   * open tunnel, terminated TLS session and request in flight is decided again under it; those it
   * refuses are cut and audited as denials.
   */
  updatePolicy(policy: EgressPolicyInput): void;
  /** Cuts every live connection of the box and forgets its placeholders. */
  close(): Promise<void>;
}

export interface EgressGateway {
  readonly secrets: SecretStore;
  openBox(options: OpenBoxOptions): Promise<EgressBox>;
  /**
   * Counts what the box's model calls cost from now until the budget is closed, priced from the
   * API's answers; with a limit, calls past it are refused and those in flight cut (see
   * spend-ledger.ts). Budgets belong to the box, not to its session: a re-attach keeps them.
   */
  openBudget(boxId: string, options?: OpenBudgetOptions): SpendBudget;
  /** The open box with that id. */
  box(boxId: string): EgressBox | undefined;
  /** Closes every open box. */
  close(): Promise<void>;
}

function parseRules(rules: readonly SecretInjectionRuleInput[]): SecretInjectionRule[] {
  return rules.map((rule, i) => {
    const result = SecretInjectionRuleSchema.safeParse(rule);
    if (!result.success) {
      throw new AgentboxError(
        'invalid_request',
        `injection rule ${i} is invalid: ${result.error.issues[0]?.message}`,
      );
    }
    return result.data;
  });
}

function parsePrices(prices: ModelPrices | undefined): PriceOverrides | undefined {
  if (prices === undefined) return undefined;
  const parsed = ModelPricesSchema.safeParse(prices);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new AgentboxError(
      'invalid_request',
      `model prices: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`,
    );
  }
  return new Map(Object.entries(parsed.data));
}

const DAY_MS = 24 * 3600 * 1000;

/** Rules that apply to a box holding `held`: its secrets' rules and the access rules OAuth refresh feeds. */
function rulesForSecrets(
  rules: readonly SecretInjectionRule[],
  held: ReadonlySet<string>,
): SecretInjectionRule[] {
  const names = new Set(held);
  for (const rule of rules) {
    if (held.has(rule.secret) && rule.inject.type === 'oauth_refresh') names.add(rule.inject.accessSecret);
  }
  return rules.filter((rule) => names.has(rule.secret));
}

/** The host's secrets plus a box's own, for that box (box values win). */
function layeredStore(host: SecretStore, own: Readonly<Record<string, string>>): SecretStore {
  const layered = new SecretStore();
  for (const name of host.names()) layered.set(name, host.reveal(name)!);
  for (const [name, value] of Object.entries(own)) layered.set(name, value);
  return layered;
}

/** Whether a variable name is a credential some injection rule knows where to send. */
export function isInjectableSecret(
  name: string,
  rules: readonly SecretInjectionRuleInput[] = DEFAULT_INJECTION_RULES,
): boolean {
  return rules.some((rule) => rule.secret === name);
}

export function createEgressGateway(options: EgressGatewayOptions = {}): EgressGateway {
  const secrets = options.secrets ?? new SecretStore();
  const rules = parseRules(options.rules ?? DEFAULT_INJECTION_RULES);
  const audit = options.audit ?? NULL_AUDIT_SINK;
  const now = options.now ?? (() => new Date());
  const hostAddresses =
    options.hostAddresses === undefined
      ? () => hostAddressKeys(os.networkInterfaces())
      : () => new Set(options.hostAddresses!());
  const upstreamCa =
    options.upstreamCaPem === undefined
      ? undefined
      : typeof options.upstreamCaPem === 'string'
        ? [options.upstreamCaPem]
        : [...options.upstreamCaPem];
  const boxes = new Map<string, { box: EgressBox; session: BoxSession }>();
  const ledgers = new Map<string, SpendLedger>();
  const prices = parsePrices(options.modelPrices);
  const accountOf = options.spendAccount;
  /** A box's ledger; made on demand while a budget is open, or for every box with accounts. */
  const ledgerFor = (boxId: string, make: boolean): SpendLedger | undefined => {
    const existing = ledgers.get(boxId);
    if (existing || !make) return existing;
    const created: SpendLedger = new SpendLedger({
      // With accounts a ledger lives as long as the box's session; without, while a budget is open.
      onIdle: () => {
        if (ledgers.get(boxId) === created && (accountOf === undefined || !boxes.has(boxId)))
          ledgers.delete(boxId);
      },
      ...(prices ? { prices } : {}),
      ...(accountOf
        ? {
            account: () => accountOf(boxId),
            // The key's other boxes stop too: their calls in flight, their tasks' budgets.
            onAccountPassed: () => {
              for (const ledger of ledgers.values()) if (ledger !== created) ledger.checkAccount();
            },
          }
        : {}),
    });
    ledgers.set(boxId, created);
    return created;
  };

  const record = (entry: EgressAuditRecord): void => {
    try {
      audit.record(entry);
    } catch (err) {
      options.onError?.(err, 'egress audit sink failed');
    }
  };

  const compileFor = (boxId: string, policy: EgressPolicyInput, boxRules: readonly SecretInjectionRule[]) => {
    const compiled = compilePolicy(policy, { rules: boxRules });
    if (compiled.upstreams.size > 0 && options.allowUpstreamMap !== true) {
      throw new AgentboxError(
        'invalid_request',
        `the egress policy of ${boxId} sets upstreams, which this gateway does not accept (tests only)`,
      );
    }
    return compiled;
  };

  return {
    secrets,
    box: (boxId) => boxes.get(boxId)?.box,
    async openBox(open: OpenBoxOptions): Promise<EgressBox> {
      if (boxes.has(open.boxId)) {
        throw new AgentboxError('invalid_state', `box ${open.boxId} already has an egress session`);
      }
      const store = open.secretValues ? layeredStore(secrets, open.secretValues) : secrets;
      const wanted =
        open.secrets ?? store.names().filter((name) => rules.some((rule) => rule.secret === name));
      const missing = wanted.filter((name) => !store.has(name));
      if (missing.length > 0) {
        throw new AgentboxError('invalid_request', `no such secret: ${missing.join(', ')}`, {
          details: { secrets: missing },
        });
      }
      const held = new Set(wanted);
      const boxRules = rulesForSecrets(rules, held);
      const compiled = compileFor(open.boxId, open.policy, boxRules);
      // A kept CA about to expire is replaced (what runs in the box then needs the new one).
      const keptCa =
        open.identity && caExpiresAt(open.identity.ca).getTime() - now().getTime() > DAY_MS
          ? open.identity.ca
          : undefined;
      const ca = keptCa
        ? await loadCertificateAuthority(keptCa, { now })
        : await createCertificateAuthority({
            commonName: `agentbox ${open.boxId} egress CA`,
            ...(options.caValidityDays === undefined ? {} : { validityDays: options.caValidityDays }),
            now,
            exportable: true,
          });
      const registry = new PlaceholderRegistry(store);
      const env: Record<string, string> = {};
      for (const name of [...held].sort())
        env[name] = registry.issue(name, open.identity?.placeholders[name]);
      const session = new BoxSession({
        boxId: open.boxId,
        policy: compiled,
        registry,
        store,
        ca,
        lookup: options.lookup ?? systemLookup,
        hostAddresses,
        record,
        now,
        upstreamCa,
        connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
        dnsTimeoutMs: options.dnsTimeoutMs ?? 5_000,
        spend: () => ledgerFor(open.boxId, accountOf !== undefined),
      });
      const box: EgressBox = {
        boxId: open.boxId,
        caCertPem: ca.certPem,
        env: Object.freeze(env),
        placeholders: new Map(Object.entries(env)),
        identity: { ca: ca.keyPair!, placeholders: { ...open.identity?.placeholders, ...env } },
        handleConnection: (stream) => session.handleConnection(stream),
        updatePolicy: (policy) => session.setPolicy(compileFor(open.boxId, policy, boxRules)),
        close: async () => {
          boxes.delete(open.boxId);
          await session.close();
          if (ledgers.get(open.boxId)?.idle) ledgers.delete(open.boxId);
        },
      };
      boxes.set(open.boxId, { box, session });
      return box;
    },
    openBudget: (boxId, budgetOptions) => ledgerFor(boxId, true)!.openBudget(budgetOptions),
    async close(): Promise<void> {
      await Promise.all([...boxes.values()].map(({ box }) => box.close()));
    },
  };
}
