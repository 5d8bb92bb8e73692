import { createHash } from 'node:crypto';
import type { EgressBox } from '@agentbox/egress';
import { AgentboxError } from '@agentbox/protocol';
import { GUEST_CALL_TIMEOUT_MS, type GuestConnection } from '@agentbox/vm';

/** Where the box CA lives in the guest, and the system bundle it is appended to. */
export const GUEST_CA_PATH = '/etc/agentbox/ca.pem';
export const GUEST_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
/** The fingerprint of the box CA last appended to the bundle, so a re-attach does not add it twice. */
export const GUEST_CA_MARK = '/etc/agentbox/ca-in-bundle';

/**
 * The command that appends the CA at `paths.ca` to the bundle, unless the mark says this CA
 * (`fingerprint`) was appended and the bundle has not changed since (a regenerated bundle gets it
 * again). Shell built-ins only: under emulation every program a fresh clone runs for the first
 * time costs its own translation, and the grep, sed and cat this used to take cost ~160 ms of
 * each box's creation (docs/performance.md).
 */
export function caInstallArgv(
  fingerprint: string,
  paths: { ca: string; bundle: string; mark: string } = {
    ca: GUEST_CA_PATH,
    bundle: GUEST_CA_BUNDLE,
    mark: GUEST_CA_MARK,
  },
): string[] {
  const script = [
    'm=',
    '[ -f "$3" ] && read -r m < "$3"',
    'if [ "$m" = "$4" ] && ! [ "$2" -nt "$3" ]; then exit 0; fi',
    // After a newline, so a bundle without a final one stays parseable.
    '{ echo; while IFS= read -r l || [ -n "$l" ]; do printf \'%s\\n\' "$l"; done < "$1"; } >> "$2" &&',
    '  echo "$4" > "$3"',
  ].join('\n');
  return ['sh', '-c', script, 'sh', paths.ca, paths.bundle, paths.mark, fingerprint];
}

/** The part of an egress gateway box session a VM needs. */
export type EgressBoxSession = Pick<EgressBox, 'caCertPem' | 'env' | 'handleConnection'>;

/**
 * Environment of every process in a box with egress: credential placeholders (never real values)
 * and the trust settings each client family reads, all pointing at the bundle that holds the box CA.
 */
export function egressEnv(session: Pick<EgressBoxSession, 'env'>): Record<string, string> {
  return {
    ...session.env,
    NODE_EXTRA_CA_CERTS: GUEST_CA_PATH,
    SSL_CERT_FILE: GUEST_CA_BUNDLE,
    CURL_CA_BUNDLE: GUEST_CA_BUNDLE,
    REQUESTS_CA_BUNDLE: GUEST_CA_BUNDLE,
    GIT_SSL_CAINFO: GUEST_CA_BUNDLE,
  };
}

export function caFingerprint(pem: string): string {
  return createHash('sha256').update(pem).digest('hex');
}

/**
 * Connects a running box to its egress session: installs the box CA (its own file and the system
 * bundle, once), sets the env defaults, and routes every guest proxy connection to the gateway.
 */
export async function attachEgress(guest: GuestConnection, session: EgressBoxSession): Promise<void> {
  const pem = session.caCertPem.endsWith('\n') ? session.caCertPem : `${session.caCertPem}\n`;
  await guest.writeFile(GUEST_CA_PATH, Buffer.from(pem), { makeParents: true, mode: 0o644 });
  // Runs at every attach, the daemon's start included: a guest that never answers must not hold it.
  const install = await guest.exec(
    { argv: caInstallArgv(caFingerprint(pem)) },
    { signal: AbortSignal.timeout(GUEST_CALL_TIMEOUT_MS) },
  );
  if (install.exitCode !== 0) {
    throw new AgentboxError('guest_error', 'could not add the box CA to the guest trust store');
  }
  await guest.configure(egressEnv(session));
  guest.setEgressHandler((stream) => session.handleConnection(stream));
}
