import type { EgressBox } from '@agentbox/egress';
import { AgentboxError } from '@agentbox/protocol';
import type { GuestConnection } from '@agentbox/vm';

/** Where the box CA lives in the guest, and the system bundle it is appended to. */
export const GUEST_CA_PATH = '/etc/agentbox/ca.pem';
export const GUEST_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

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

/**
 * Connects a running box to its egress session: installs the box CA (its own file and the system
 * bundle, once), sets the env defaults, and routes every guest proxy connection to the gateway.
 */
export async function attachEgress(guest: GuestConnection, session: EgressBoxSession): Promise<void> {
  const pem = session.caCertPem.endsWith('\n') ? session.caCertPem : `${session.caCertPem}\n`;
  await guest.writeFile(GUEST_CA_PATH, Buffer.from(pem), { makeParents: true, mode: 0o644 });
  const install = await guest.exec({
    argv: [
      'sh',
      '-c',
      // Appended after a newline so a bundle without a final one stays parseable.
      `grep -qxF "$(sed -n 2p ${GUEST_CA_PATH})" ${GUEST_CA_BUNDLE} || { echo; cat ${GUEST_CA_PATH}; } >> ${GUEST_CA_BUNDLE}`,
    ],
  });
  if (install.exitCode !== 0) {
    throw new AgentboxError('guest_error', 'could not add the box CA to the guest trust store');
  }
  await guest.configure(egressEnv(session));
  guest.setEgressHandler((stream) => session.handleConnection(stream));
}
