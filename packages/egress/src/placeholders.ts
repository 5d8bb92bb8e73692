import { randomBytes } from 'node:crypto';
import type { SecretInjectionRule } from '@agentbox/protocol';
import type { SecretStore } from './secrets.js';

/**
 * Per-box placeholders: one random stand-in per secret name, the only form of a credential a box
 * ever sees. The registry maps placeholders back to secret names; the swap happens only in
 * injectHeaders(), for the header a rule names on a host the rule names. A placeholder anywhere
 * else is left as it is and reported as a leak.
 */

export const PLACEHOLDER_PREFIX = 'agentbox-ph-';
const PLACEHOLDER_PATTERN = `${PLACEHOLDER_PREFIX}[0-9a-f]{32}`;
/** Any box's placeholder, known to this registry or not. */
const PLACEHOLDER_RE = new RegExp(PLACEHOLDER_PATTERN, 'g');
const WHOLE_PLACEHOLDER_RE = new RegExp(`^${PLACEHOLDER_PATTERN}$`);

interface Entry {
  readonly secret: string;
  /** Per-box value that replaces the store's (an access token minted by an OAuth refresh). */
  value?: string;
}

export class PlaceholderRegistry {
  readonly #store: SecretStore;
  readonly #byPlaceholder = new Map<string, Entry>();
  readonly #primary = new Map<string, string>();

  constructor(store: SecretStore) {
    this.#store = store;
  }

  /**
   * The box's placeholder for a secret name (the same one every time): `kept`, the one an earlier
   * daemon gave the box, when it is a placeholder no other secret has here; else a new one.
   */
  issue(secret: string, kept?: string): string {
    let placeholder = this.#primary.get(secret);
    if (placeholder === undefined) {
      placeholder =
        kept !== undefined && isPlaceholder(kept) && !this.#byPlaceholder.has(kept) ? kept : this.#fresh();
      this.#byPlaceholder.set(placeholder, { secret });
      this.#primary.set(secret, placeholder);
    }
    return placeholder;
  }

  /** A new placeholder for `secret` that stands for `value` in this box only (OAuth refresh). */
  mint(secret: string, value: string): string {
    const placeholder = this.#fresh();
    this.#byPlaceholder.set(placeholder, { secret, value });
    return placeholder;
  }

  /** Secret name behind a placeholder of this box. */
  secretOf(placeholder: string): string | undefined {
    return this.#byPlaceholder.get(placeholder)?.secret;
  }

  /** Real value behind a placeholder, at the moment of injection. */
  realValue(placeholder: string): string | undefined {
    const entry = this.#byPlaceholder.get(placeholder);
    if (entry === undefined) return undefined;
    return entry.value ?? this.#store.reveal(entry.secret);
  }

  /** Secret name → its primary placeholder. */
  primaries(): ReadonlyMap<string, string> {
    return new Map(this.#primary);
  }

  clear(): void {
    this.#byPlaceholder.clear();
    this.#primary.clear();
  }

  #fresh(): string {
    return PLACEHOLDER_PREFIX + randomBytes(16).toString('hex');
  }
}

/** Whether `value` is a placeholder, whole. */
export function isPlaceholder(value: string): boolean {
  return WHOLE_PLACEHOLDER_RE.test(value);
}

/** Placeholders (of any box) in a string. */
export function findPlaceholders(text: string): string[] {
  return text.match(PLACEHOLDER_RE) ?? [];
}

function decodeBasic(value: string): { user: string; pass: string } | undefined {
  const m = /^basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(value);
  if (m === null) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : { user: decoded.slice(0, colon), pass: decoded.slice(colon + 1) };
}

/** Placeholders in a header value, looking inside Basic credentials too. */
function placeholdersInHeader(value: string): string[] {
  const basic = decodeBasic(value);
  return basic === undefined ? findPlaceholders(value) : findPlaceholders(`${basic.user}:${basic.pass}`);
}

/** True when any header value holds a placeholder (Basic credentials decoded). */
export function headersHavePlaceholder(headers: HeaderMap): boolean {
  return Object.values(headers).some((raw) =>
    (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]).some(
      (v) => placeholdersInHeader(v).length > 0,
    ),
  );
}

export type HeaderMap = Record<string, string | string[] | undefined>;

export interface InjectionResult {
  readonly headers: HeaderMap;
  /** Secret names swapped in. */
  readonly injected: string[];
  /** A placeholder was present where no rule swaps it. */
  readonly leak: boolean;
  /** [sent, shown] pairs to scrub from the response, so an echo never hands the real value back. */
  readonly scrub: Array<[string, string]>;
}

function swapOne(
  name: string,
  value: string,
  rule: SecretInjectionRule,
  registry: PlaceholderRegistry,
): { value: string; real: string; placeholder: string; sent: string; shown: string } | undefined {
  const owned = (candidate: string): string | undefined =>
    registry.secretOf(candidate) === rule.secret ? registry.realValue(candidate) : undefined;
  switch (rule.inject.type) {
    case 'header': {
      if (name !== rule.inject.header) return undefined;
      const real = owned(value.trim());
      return real === undefined
        ? undefined
        : { value: real, real, placeholder: value.trim(), sent: real, shown: value };
    }
    case 'bearer': {
      const m = /^(bearer|token)\s+(\S+)\s*$/i.exec(value);
      const real = name === 'authorization' && m !== null ? owned(m[2]!) : undefined;
      if (real === undefined) return undefined;
      return { value: `${m![1]} ${real}`, real, placeholder: m![2]!, sent: real, shown: m![2]! };
    }
    case 'basic': {
      const basic = name === 'authorization' ? decodeBasic(value) : undefined;
      if (basic === undefined) return undefined;
      const passReal = owned(basic.pass);
      const userReal = passReal === undefined ? owned(basic.user) : undefined;
      const real = passReal ?? userReal;
      if (real === undefined) return undefined;
      const user = userReal ?? basic.user;
      const pass = passReal ?? basic.pass;
      const encoded = Buffer.from(`${user}:${pass}`).toString('base64');
      const shownEncoded = value.replace(/^basic\s+/i, '').trim();
      return {
        value: `Basic ${encoded}`,
        real,
        placeholder: passReal === undefined ? basic.user : basic.pass,
        sent: encoded,
        shown: shownEncoded,
      };
    }
    case 'oauth_refresh':
      return undefined;
  }
}

/**
 * Swaps placeholders for real values in the headers `rules` name, and only there. Any other
 * placeholder (another header, another secret's placeholder, another box's) stays and is a leak.
 */
export function injectHeaders(
  headers: HeaderMap,
  rules: readonly SecretInjectionRule[],
  registry: PlaceholderRegistry,
): InjectionResult {
  const out: HeaderMap = {};
  const injected = new Set<string>();
  const scrub: Array<[string, string]> = [];
  let leak = false;
  for (const [name, raw] of Object.entries(headers)) {
    if (raw === undefined) continue;
    const values = Array.isArray(raw) ? raw : [raw];
    const next = values.map((value) => {
      for (const rule of rules) {
        const swapped = swapOne(name, value, rule, registry);
        if (swapped === undefined) continue;
        injected.add(rule.secret);
        scrub.push([swapped.real, swapped.placeholder], [swapped.sent, swapped.shown]);
        // What is left after the swap must not hold another placeholder.
        const rest = placeholdersInHeader(value).filter((p) => p !== swapped.placeholder);
        if (rest.length > 0) leak = true;
        return swapped.value;
      }
      if (placeholdersInHeader(value).length > 0) leak = true;
      return value;
    });
    out[name] = Array.isArray(raw) ? next : next[0];
  }
  return { headers: out, injected: [...injected], leak, scrub };
}

/** Pairs of [real value, what the box is shown instead]: what a scrub replaces. */
export type Scrub = ReadonlyArray<readonly [real: string, shown: string]>;

/** `text` with every real value replaced by what the box is shown. */
export function scrubText(text: string, scrub: Scrub): string {
  return scrub.reduce((acc, [real, shown]) => (real.length > 0 ? acc.split(real).join(shown) : acc), text);
}

/** Headers with every real value replaced in each string value; numbers pass as they are. */
export function scrubHeaders(
  headers: Readonly<Record<string, string | string[] | number | undefined>>,
  scrub: Scrub,
): Record<string, string | string[] | number> {
  const out: Record<string, string | string[] | number> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    out[name] = Array.isArray(value)
      ? value.map((v) => scrubText(v, scrub))
      : typeof value === 'string'
        ? scrubText(value, scrub)
        : value;
  }
  return out;
}
