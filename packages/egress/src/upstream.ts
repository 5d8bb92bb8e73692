import { promises as dns, type LookupAddress } from 'node:dns';
import net from 'node:net';
import type { CanonicalHost } from '@agentbox/protocol';
import type { CompiledPolicy } from './policy.js';

/**
 * Finding and dialling the real destination. The gateway resolves names itself, decide() checks
 * every address, and the connection then goes to one of exactly those addresses (never a second
 * resolution, so a name cannot rebind to a forbidden address between check and connect).
 */

/** Resolves a host name to all its addresses (injectable so tests can simulate rebinding). */
export type LookupFn = (hostname: string) => Promise<ReadonlyArray<{ address: string; family: number }>>;

export const systemLookup: LookupFn = (hostname) => dns.lookup(hostname, { all: true, verbatim: true });

export interface ConnectTarget {
  /** Canonical destination host (name or IP) as the policy saw it. */
  readonly host: string;
  /** Port the guest asked for. */
  readonly port: number;
  /** Port actually dialled (differs only for a mapped upstream). */
  readonly connectPort: number;
  /** Checked addresses to dial, in order. */
  readonly addresses: readonly string[];
  /** Reached through the test-only upstream map: DNS and address checks were skipped. */
  readonly mapped: boolean;
}

export type ResolveResult =
  { readonly ok: true; readonly target: ConnectTarget } | { readonly ok: false; readonly reason: string };

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Where a destination lives: the upstream map, the IP literal itself, or DNS. */
export async function resolveTarget(
  host: CanonicalHost,
  port: number,
  policy: CompiledPolicy,
  lookup: LookupFn,
  timeoutMs: number,
): Promise<ResolveResult> {
  const mapped = host.kind === 'name' ? policy.upstreams.get(host.host) : undefined;
  if (mapped !== undefined) {
    const target = {
      host: host.host,
      port,
      connectPort: mapped.port,
      addresses: [mapped.address],
      mapped: true,
    };
    return { ok: true, target };
  }
  if (host.kind === 'ip') {
    return {
      ok: true,
      target: { host: host.host, port, connectPort: port, addresses: [host.host], mapped: false },
    };
  }
  try {
    const found = await withTimeout(lookup(host.host), timeoutMs, 'DNS lookup');
    const addresses = [...new Set(found.map((entry) => entry.address))];
    if (addresses.length === 0) return { ok: false, reason: `${host.host} has no address` };
    return { ok: true, target: { host: host.host, port, connectPort: port, addresses, mapped: false } };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    return { ok: false, reason: `cannot resolve ${host.host}: ${code}` };
  }
}

/** Opens a TCP connection to the first reachable checked address. */
export async function dialTarget(target: ConnectTarget, timeoutMs: number): Promise<net.Socket> {
  let lastError: unknown;
  for (const address of target.addresses) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const socket = net.connect({ host: address, port: target.connectPort, noDelay: true });
        const timer = setTimeout(() => {
          socket.destroy();
          reject(new Error(`connect to ${address}:${target.connectPort} timed out`));
        }, timeoutMs);
        socket.once('connect', () => {
          clearTimeout(timer);
          socket.removeListener('error', reject);
          resolve(socket);
        });
        socket.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError ?? new Error('no address to dial');
}

/**
 * A `lookup` for http(s).request that answers with the already-checked address, so the request
 * keeps the host name (SNI, certificate check, Host) but cannot be steered elsewhere by DNS.
 */
export function pinnedLookup(address: string): net.LookupFunction {
  const family = net.isIPv6(address) ? 6 : 4;
  return (_hostname, options, callback) => {
    if (options.all === true) {
      (callback as (err: null, addresses: LookupAddress[]) => void)(null, [{ address, family }]);
    } else {
      callback(null, address, family);
    }
  };
}

/** Short, value-free description of a network error for 502 bodies and the audit. */
export function describeNetError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string') return code;
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/[\r\n]+/g, ' ').slice(0, 200);
}
