/**
 * The X.509 and PKCS#12 work of the client CA: node-forge does what node:crypto cannot (build and
 * sign certificates, read CSRs, write PKCS#12 bundles); key generation, fingerprints and every check
 * the service makes on a presented certificate stay with node:crypto (OpenSSL).
 *
 * Security decisions:
 * - The CA key is RSA-3072 (128-bit security strength, NIST SP 800-57), signatures
 *   sha256WithRSAEncryption. Not EC P-256: node-forge can neither sign with nor encode EC keys.
 * - Client keys generated here are RSA-2048 (112-bit, acceptable through 2030) for the same reason:
 *   forge writes PKCS#12 bundles for RSA keys only. A CSR must likewise carry an RSA key of at least
 *   2048 bits; its signature is checked (proof of possession) and only its public key is used: the
 *   subject and the scopes come from the operator, never from the device.
 * - Serials: 127 bits from the CSPRNG (CA/Browser Forum asks for at least 64), first byte 0x01–0x7f so
 *   the DER INTEGER is positive and minimal and always 16 bytes long.
 * - PKCS#12: the key bag is encrypted with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC), not forge's
 *   default 3DES; OpenSSL 3 (curl, Node's `pfx`) reads it. The integrity MAC is HMAC-SHA1 with the
 *   PKCS#12 KDF: the only MAC forge writes, and still the default of many tools.
 */
import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { containsCardData } from '../card-data/card-data-guard.js';
import { KEY_SPECS } from '../crypto/key-specs.js';

export const CA_KEY_ALGORITHM = KEY_SPECS['mtls-client-ca'].algorithm;
export const CA_KEY_BITS = 3072;
export const CLIENT_KEY_BITS = 2048;
/** The extended key usage that makes a certificate a TLS client certificate. */
export const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
const ORGANISATION = 'loyalty-vault';

export interface CaMaterial {
  /** PKCS#8 DER of the private key: the caller wraps it with the master key and wipes it. */
  readonly privateKeyDer: Buffer;
  readonly publicKeyPem: string;
  readonly certificatePem: string;
}

/** A new RSA-3072 CA key and its self-signed certificate, valid `validityDays` from `now`. */
export function generateCa(version: number, validityDays: number, now: Date = new Date()): CaMaterial {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: CA_KEY_BITS });
  const privateKeyDer = privateKey.export({ format: 'der', type: 'pkcs8' });
  const publicKeyPem = publicKey.export({ format: 'pem', type: 'spki' }).toString();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKeyPem);
  cert.serialNumber = randomSerialHex();
  cert.validity.notBefore = now;
  cert.validity.notAfter = new Date(now.getTime() + validityDays * 86_400_000);
  const subject = [
    { name: 'organizationName', value: ORGANISATION },
    { name: 'commonName', value: `loyalty-vault client CA v${version}` },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(forgePrivateKey(privateKey), forge.md.sha256.create());
  return { privateKeyDer, publicKeyPem, certificatePem: forge.pki.certificateToPem(cert) };
}

export interface ClientCertificateRequest {
  readonly caPrivateKeyDer: Buffer;
  readonly caCertificatePem: string;
  /** SPKI PEM of the client's RSA public key. */
  readonly subjectPublicKeyPem: string;
  readonly client: string;
  readonly serialHex: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** Issues an X.509 v3 TLS client certificate (clientAuth only, not a CA) naming the client. */
export function issueClientCertificate(request: ClientCertificateRequest): string {
  const ca = forge.pki.certificateFromPem(request.caCertificatePem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(request.subjectPublicKeyPem);
  cert.serialNumber = request.serialHex;
  cert.validity.notBefore = request.notBefore;
  cert.validity.notAfter = request.notAfter;
  cert.setSubject([
    { name: 'organizationName', value: ORGANISATION },
    { name: 'organizationalUnitName', value: 'card-data clients' },
    { name: 'commonName', value: request.client },
  ]);
  cert.setIssuer(ca.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', clientAuth: true },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes() },
  ]);
  const caKey = createPrivateKey({ key: request.caPrivateKeyDer, format: 'der', type: 'pkcs8' });
  cert.sign(forgePrivateKey(caKey), forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

export class CsrError extends Error {}

/**
 * The public key of a PEM CSR whose signature verifies (the device holds the private key). Refuses
 * anything but RSA of at least 2048 bits.
 */
export function publicKeyFromCsr(pem: string): string {
  let csr: ReturnType<typeof forge.pki.certificationRequestFromPem>;
  try {
    csr = forge.pki.certificationRequestFromPem(pem);
  } catch {
    throw new CsrError('not a PEM certificate signing request with an RSA key (EC keys are not supported)');
  }
  if (!csr.verify()) throw new CsrError('the request is not signed by its own key');
  const key = csr.publicKey as forge.pki.rsa.PublicKey | null;
  if (key === null || key.n.bitLength() < CLIENT_KEY_BITS) {
    throw new CsrError(`the key must be RSA of at least ${CLIENT_KEY_BITS} bits`);
  }
  return forge.pki.publicKeyToPem(key);
}

/** A fresh RSA-2048 key pair for a bundle (the key exists only in memory and in the bundle). */
export function generateClientKey(): { privateKey: KeyObject; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: CLIENT_KEY_BITS });
  return { privateKey, publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString() };
}

/** A password-protected PKCS#12 bundle: the client's key and certificate, and the CA certificate. */
export function buildPkcs12(options: {
  readonly privateKey: KeyObject;
  readonly certificatePem: string;
  readonly caCertificatePem: string;
  readonly password: string;
  readonly friendlyName: string;
}): Buffer {
  const p12 = forge.pkcs12.toPkcs12Asn1(
    forgePrivateKey(options.privateKey),
    [forge.pki.certificateFromPem(options.certificatePem), forge.pki.certificateFromPem(options.caCertificatePem)],
    options.password,
    {
      algorithm: 'aes256',
      prfAlgorithm: 'sha256',
      count: 10_000,
      saltSize: 16,
      friendlyName: options.friendlyName,
      generateLocalKeyId: true,
    } as Parameters<typeof forge.pkcs12.toPkcs12Asn1>[3],
  );
  return Buffer.from(forge.asn1.toDer(p12).getBytes(), 'binary');
}

/**
 * 16 random bytes as hex, the first in 0x01–0x7f (positive, minimal DER, always 16 bytes), drawn
 * again while the serial reads as card data, plainly or as printed ({@link serialReadsAsCardData}):
 * about one random serial in 250 does, and the audit trail refuses to record it.
 */
export function randomSerialHex(): string {
  for (;;) {
    const bytes = randomBytes(16);
    bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x01;
    const hex = bytes.toString('hex');
    if (!serialReadsAsCardData(hex)) return hex;
  }
}

/**
 * True when a serial, as hex or in its printed form, holds what the card-data guard reads as a card
 * number: the colons of the printed form are separators, so `41:11:11:11:11:11:11:11` is a PAN to it,
 * as six or more all-decimal bytes in a row with a Luhn-valid run are. Such a serial cannot be written
 * to the audit trail; it is never minted, and a certificate carrying one is refused at registration.
 */
export function serialReadsAsCardData(hex: string): boolean {
  return containsCardData(hex) || containsCardData(formatSerial(hex));
}

/** The stored and printed form of a serial: upper-case hex bytes joined by colons (as OpenSSL prints them). */
export function formatSerial(hex: string): string {
  const clean = hex.replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  const even = clean.length % 2 === 0 ? clean : `0${clean}`;
  return even.match(/../g)?.join(':') ?? '';
}

/** SHA-256 of the certificate's DER, base64url (no long digit runs, unlike hex). */
export function certificateFingerprint(der: Buffer): string {
  return createHash('sha256').update(der).digest('base64url');
}

/** The certificates of a PEM bundle, each as its own PEM. */
export function splitPemBundle(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

export function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----(BEGIN|END) [A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

function forgePrivateKey(key: KeyObject): forge.pki.rsa.PrivateKey {
  return forge.pki.privateKeyFromPem(key.export({ format: 'pem', type: 'pkcs1' }).toString());
}

const KEY_USAGE_OID = '2.5.29.15';
/** `[3] EXPLICIT Extensions` in TBSCertificate (RFC 5280 §4.1). */
const EXTENSIONS_TAG = 3 as forge.asn1.Type;
/** forge's options form (its typings know only `strict`): BIT STRINGs are kept as raw bytes. */
const fromDer = forge.asn1.fromDer as unknown as (
  bytes: string,
  options: { decodeBitStrings: boolean },
) => forge.asn1.Asn1;

/**
 * Whether the certificate's keyUsage extension (RFC 5280 §4.2.1.3), if it has one, allows
 * digitalSignature: what a TLS client key does in CertificateVerify. node:crypto exposes only the
 * extended key usage, so the extension is read from the DER. A certificate without the extension is
 * not restricted by it (RFC 5280); one whose extensions cannot be read is refused.
 */
export function keyUsageAllowsDigitalSignature(der: Buffer): boolean {
  try {
    const cert = fromDer(der.toString('binary'), { decodeBitStrings: false });
    const tbs = (cert.value as forge.asn1.Asn1[])[0];
    const tagged = (tbs?.value as forge.asn1.Asn1[]).find(
      (part) => part.tagClass === forge.asn1.Class.CONTEXT_SPECIFIC && part.type === EXTENSIONS_TAG,
    );
    if (tagged === undefined) return true;
    const extensions = ((tagged.value as forge.asn1.Asn1[])[0]?.value ?? []) as forge.asn1.Asn1[];
    for (const extension of extensions) {
      const parts = extension.value as forge.asn1.Asn1[];
      if (forge.asn1.derToOid(parts[0]?.value as string) !== KEY_USAGE_OID) continue;
      const octets = parts[parts.length - 1];
      const bits =
        typeof octets?.value === 'string'
          ? fromDer(octets.value, { decodeBitStrings: false })
          : (octets?.value as forge.asn1.Asn1[] | undefined)?.[0];
      if (bits?.type !== forge.asn1.Type.BITSTRING || typeof bits.value !== 'string') return false;
      // First content byte: unused bits; digitalSignature is bit 0, the high bit of the next byte.
      return bits.value.length >= 2 && (bits.value.charCodeAt(1) & 0x80) !== 0;
    }
    return true;
  } catch {
    return false;
  }
}
