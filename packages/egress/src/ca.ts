// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import { KeyObject, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/**
 * Certificate authorities made on the host: one per box, for the hosts whose TLS the gateway
 * terminates. ECDSA P-256 keys from node's webcrypto. A box CA's key is exported once, to the
 * host's store (never to the guest), so the next daemon serves the box with the same CA: what
 * runs in the box trusts only the CA it loaded when it started. Tests use the same code for the
 * fake upstreams' CA.
 */

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
/**
 * Node's webcrypto, passed to every call instead of set as the library's global provider. The
 * library is typed against the DOM's Crypto, which node's implements; `never` bridges the types.
 */
const PROVIDER = webcrypto as never;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

export interface IssuedCertificate {
  readonly certPem: string;
  readonly keyPem: string;
}

/** A CA's certificate and private key (PKCS#8), as a later process makes the same CA from them. */
export interface CaKeyPair {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface CertificateAuthority {
  readonly certPem: string;
  /** A server certificate for `host` (DNS name or IP), signed by this CA; cached per host. */
  issue(host: string): Promise<IssuedCertificate>;
  /** Its certificate and key: made `exportable`, or loaded from them. */
  readonly keyPair?: CaKeyPair;
}

export interface CreateCaOptions {
  /** Subject common name of the CA, e.g. `agentbox box-0123456789 egress CA`. */
  readonly commonName: string;
  /** CA lifetime (default 365 days); leaves live 30 days at most and never past the CA. */
  readonly validityDays?: number;
  readonly now?: () => Date;
  /** Its private key may be exported (`keyPair`), to be kept for a later process. */
  readonly exportable?: boolean;
}

function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f; // positive INTEGER
  return bytes.toString('hex');
}

function keyPem(key: webcrypto.CryptoKey): string {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }).toString();
}

function escapeDn(value: string): string {
  return value.replace(/([,+"\\<>;=])/g, '\\$1');
}

export async function createCertificateAuthority(options: CreateCaOptions): Promise<CertificateAuthority> {
  const now = options.now?.() ?? new Date();
  const notBefore = new Date(now.getTime() - HOUR_MS); // tolerate a guest clock slightly behind
  const notAfter = new Date(now.getTime() + (options.validityDays ?? 365) * DAY_MS);
  const caKeys = await webcrypto.subtle.generateKey(ALGORITHM, options.exportable ?? false, [
    'sign',
    'verify',
  ]);
  const caCert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serialNumber(),
      name: `CN=${escapeDn(options.commonName)}`,
      notBefore,
      notAfter,
      signingAlgorithm: ALGORITHM,
      keys: caKeys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey, false, PROVIDER),
      ],
    },
    PROVIDER,
  );
  return authority(
    caCert,
    caKeys.privateKey,
    notAfter,
    options.now,
    options.exportable ? { certPem: caCert.toString('pem'), keyPem: keyPem(caKeys.privateKey) } : undefined,
  );
}

/** The CA a `keyPair` (from `keyPair` of an exportable CA) is: the same certificate, the same key. */
export async function loadCertificateAuthority(
  pair: CaKeyPair,
  options: Pick<CreateCaOptions, 'now'> = {},
): Promise<CertificateAuthority> {
  const caCert = new x509.X509Certificate(pair.certPem);
  const der = createPrivateKey(pair.keyPem).export({ type: 'pkcs8', format: 'der' });
  const privateKey = await webcrypto.subtle.importKey('pkcs8', der, ALGORITHM, false, ['sign']);
  return authority(caCert, privateKey, caCert.notAfter, options.now, pair);
}

/** When a kept CA's certificate expires. */
export function caExpiresAt(pair: CaKeyPair): Date {
  return new x509.X509Certificate(pair.certPem).notAfter;
}

/** Issues leaf certificates from a CA's certificate and key. */
async function authority(
  caCert: x509.X509Certificate,
  caKey: webcrypto.CryptoKey,
  notAfter: Date,
  now: (() => Date) | undefined,
  keyPair: CaKeyPair | undefined,
): Promise<CertificateAuthority> {
  // One leaf key per CA: every host's certificate shares it, so issuing costs one signature.
  const leafKeys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const leafKeyPem = keyPem(leafKeys.privateKey);
  const cache = new Map<string, Promise<IssuedCertificate>>();

  const issueUncached = async (host: string): Promise<IssuedCertificate> => {
    const issuedAt = now?.() ?? new Date();
    const leafNotAfter = new Date(Math.min(issuedAt.getTime() + 30 * DAY_MS, notAfter.getTime()));
    const isIp = /^[0-9.]+$/.test(host) || host.includes(':');
    const cert = await x509.X509CertificateGenerator.create(
      {
        serialNumber: serialNumber(),
        subject: `CN=${escapeDn(host)}`,
        issuer: caCert.subject,
        notBefore: new Date(issuedAt.getTime() - HOUR_MS),
        notAfter: leafNotAfter,
        signingAlgorithm: ALGORITHM,
        publicKey: leafKeys.publicKey,
        signingKey: caKey,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
          new x509.SubjectAlternativeNameExtension([{ type: isIp ? 'ip' : 'dns', value: host }], false),
          await x509.AuthorityKeyIdentifierExtension.create(caCert, false, PROVIDER),
        ],
      },
      PROVIDER,
    );
    return { certPem: cert.toString('pem'), keyPem: leafKeyPem };
  };

  return {
    // A loaded CA keeps its PEM as given: the guest tells a CA it has installed by its PEM's hash.
    certPem: keyPair?.certPem ?? caCert.toString('pem'),
    ...(keyPair ? { keyPair } : {}),
    issue(host: string): Promise<IssuedCertificate> {
      let pending = cache.get(host);
      if (pending === undefined) {
        pending = issueUncached(host);
        cache.set(host, pending);
        pending.catch(() => cache.delete(host));
      }
      return pending;
    },
  };
}
