import { formatIp, ipInCidr, parseCidr, parseIp, type IpAddress, type IpCidr } from '@agentbox/protocol';

/**
 * Classification of the addresses a destination resolves to. Pure: the host's own addresses are
 * passed in. Every resolved address of a name is checked, and IPv4 carried inside IPv6
 * (`::ffff:127.0.0.1`, NAT64) is unwrapped first, so no notation reaches loopback or metadata.
 */

export type AddressClass =
  | 'public'
  | 'loopback'
  | 'link_local'
  | 'metadata'
  | 'unspecified'
  | 'multicast'
  | 'broadcast'
  | 'reserved'
  | 'private'
  | 'cgnat'
  | 'ula'
  | 'host';

/** Classes no policy can open: reaching them from a box is never legitimate. */
export const ALWAYS_DENIED_CLASSES: ReadonlySet<AddressClass> = new Set([
  'loopback',
  'link_local',
  'metadata',
  'unspecified',
  'multicast',
  'broadcast',
  'reserved',
]);

/** Classes `allowLan` opens. */
export const LAN_CLASSES: ReadonlySet<AddressClass> = new Set(['private', 'cgnat', 'ula']);

function cidr(text: string): IpCidr {
  const parsed = parseCidr(text);
  if (parsed === undefined) throw new Error(`bad built-in CIDR ${text}`);
  return parsed;
}

/** First match wins, so the narrow metadata entries come before the ranges that contain them. */
const RANGES: ReadonlyArray<readonly [IpCidr, AddressClass]> = [
  // cloud metadata: AWS/GCP/Azure/OpenStack, AWS ECS task metadata, Alibaba, Azure wireserver, AWS IPv6
  [cidr('169.254.169.254/32'), 'metadata'],
  [cidr('169.254.170.2/32'), 'metadata'],
  [cidr('100.100.100.200/32'), 'metadata'],
  [cidr('168.63.129.16/32'), 'metadata'],
  [cidr('fd00:ec2::254/128'), 'metadata'],
  [cidr('0.0.0.0/8'), 'unspecified'], // Linux routes 0.0.0.0 to the local host
  [cidr('127.0.0.0/8'), 'loopback'],
  [cidr('169.254.0.0/16'), 'link_local'],
  [cidr('10.0.0.0/8'), 'private'],
  [cidr('172.16.0.0/12'), 'private'],
  [cidr('192.168.0.0/16'), 'private'],
  [cidr('100.64.0.0/10'), 'cgnat'],
  [cidr('192.0.0.0/24'), 'reserved'],
  [cidr('192.0.2.0/24'), 'reserved'],
  [cidr('192.88.99.0/24'), 'reserved'],
  [cidr('198.18.0.0/15'), 'reserved'],
  [cidr('198.51.100.0/24'), 'reserved'],
  [cidr('203.0.113.0/24'), 'reserved'],
  [cidr('224.0.0.0/4'), 'multicast'],
  [cidr('255.255.255.255/32'), 'broadcast'],
  [cidr('240.0.0.0/4'), 'reserved'],
  [cidr('::/128'), 'unspecified'],
  [cidr('::1/128'), 'loopback'],
  [cidr('::/96'), 'reserved'], // deprecated IPv4-compatible addresses
  [cidr('fe80::/10'), 'link_local'],
  [cidr('fec0::/10'), 'reserved'], // deprecated site-local
  [cidr('fc00::/7'), 'ula'],
  [cidr('ff00::/8'), 'multicast'],
  [cidr('100::/64'), 'reserved'],
  [cidr('64:ff9b:1::/48'), 'reserved'],
  [cidr('2001::/32'), 'reserved'], // Teredo: the embedded endpoint is not checkable
  [cidr('2001:db8::/32'), 'reserved'],
  [cidr('2002::/16'), 'reserved'], // 6to4: same
  [cidr('3fff::/20'), 'reserved'],
];

const V4_MAPPED = cidr('::ffff:0:0/96');
const NAT64 = cidr('64:ff9b::/96');

/**
 * Unwraps IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::/96`) IPv6 addresses to the IPv4
 * address they carry. Deprecated IPv4-compatible `::a.b.c.d` stays IPv6 and falls in `reserved`.
 */
export function normalizeIp(ip: IpAddress): IpAddress {
  if (ip.version === 6 && (ipInCidr(ip, V4_MAPPED) || ipInCidr(ip, NAT64))) {
    return { version: 4, bytes: ip.bytes.slice(12) };
  }
  return ip;
}

/** Parses an address as DNS or a CONNECT line gives it (zone id dropped) and normalizes it. */
export function parseAddress(text: string): IpAddress | undefined {
  const percent = text.indexOf('%');
  const ip = parseIp(percent < 0 ? text : text.slice(0, percent));
  return ip === undefined ? undefined : normalizeIp(ip);
}

/** Canonical key for an address (normalized, formatted), as used for host-address sets. */
export function addressKey(ip: IpAddress): string {
  return formatIp(normalizeIp(ip));
}

/**
 * Class of an address. `hostAddresses` holds canonical keys of the host's own addresses; they make
 * the `host` class unless the address is in an always-denied range (loopback stays loopback).
 */
export function classifyAddress(ip: IpAddress, hostAddresses: ReadonlySet<string>): AddressClass {
  const normalized = normalizeIp(ip);
  let found: AddressClass = 'public';
  for (const [range, cls] of RANGES) {
    if (ipInCidr(normalized, range)) {
      found = cls;
      break;
    }
  }
  if (ALWAYS_DENIED_CLASSES.has(found)) return found;
  return hostAddresses.has(formatIp(normalized)) ? 'host' : found;
}

/** Whether two prefixes share any address (one holds the other's network address). */
function overlaps(a: IpCidr, b: IpCidr): boolean {
  if (a.version !== b.version) return false;
  return a.prefix <= b.prefix ? ipInCidr(b, a) : ipInCidr(a, b);
}

/**
 * Classes other than `public` of the addresses in a prefix: every built-in range it shares an
 * address with, IPv4 carried in IPv6 (mapped, NAT64) included. Empty when the whole prefix is
 * public. The host's own addresses are not known here (`host` never appears).
 */
export function nonPublicClassesIn(prefix: IpCidr): Set<AddressClass> {
  const found = new Set<AddressClass>();
  for (const [range, cls] of RANGES) if (overlaps(prefix, range)) found.add(cls);
  if (prefix.version === 6) {
    for (const carrier of [V4_MAPPED, NAT64]) {
      if (!overlaps(prefix, carrier)) continue;
      const inner: IpCidr =
        prefix.prefix >= 96
          ? { version: 4, bytes: prefix.bytes.slice(12), prefix: prefix.prefix - 96 }
          : { version: 4, bytes: new Uint8Array(4), prefix: 0 };
      for (const cls of nonPublicClassesIn(inner)) found.add(cls);
    }
  }
  return found;
}

export interface AddressRules {
  readonly allowLan: boolean;
  readonly allowHost: boolean;
  readonly hostAddresses: ReadonlySet<string>;
}

export interface AddressVerdict {
  readonly allowed: boolean;
  readonly class: AddressClass;
  /** Canonical normalized address. */
  readonly address: string;
}

/** Whether a box may connect to this address; unparseable text is refused (fails closed). */
export function checkAddress(text: string, rules: AddressRules): AddressVerdict {
  const ip = parseAddress(text);
  if (ip === undefined) return { allowed: false, class: 'reserved', address: text };
  const cls = classifyAddress(ip, rules.hostAddresses);
  const allowed =
    cls === 'public' || (cls === 'host' && rules.allowHost) || (LAN_CLASSES.has(cls) && rules.allowLan);
  return { allowed, class: cls, address: formatIp(ip) };
}

/** Canonical keys of the addresses in an `os.networkInterfaces()` result. */
export function hostAddressKeys(
  interfaces: Record<string, ReadonlyArray<{ address: string }> | undefined>,
): Set<string> {
  const keys = new Set<string>();
  for (const list of Object.values(interfaces)) {
    for (const entry of list ?? []) {
      const ip = parseAddress(entry.address);
      if (ip !== undefined) keys.add(formatIp(ip));
    }
  }
  return keys;
}
