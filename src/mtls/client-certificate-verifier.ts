/**
 * Turns the certificate a client presented in the TLS handshake into a principal, or a clear refusal.
 *
 * The HTTPS listener asks for a certificate but does not reject the handshake over it
 * (`requestCert: true, rejectUnauthorized: false`): a till with a revoked or expired certificate gets
 * a problem+json answer with a stable code instead of an opaque TLS alert, and routes that do not need
 * a certificate stay reachable. The handshake has still proved that the client holds the
 * certificate's private key (TLS CertificateVerify); everything else is checked here with
 * node:crypto (OpenSSL), in this order:
 *
 * 1. issued by a trusted CA: the certificate of every readable version of the `mtls-client-ca` key
 *    (published, active, decrypt-only: both CAs during a rotation) whose seal verifies under the
 *    master key (src/mtls/seals.ts: a CA row written without the master key is ignored), and of
 *    `TLS_CLIENT_CA`, signature verified, the CA certificate itself within its validity; a
 *    client-auth certificate, not a CA, whose keyUsage (if present) allows digitalSignature → else
 *    `CLIENT_CERTIFICATE_UNTRUSTED`;
 * 2. within its validity period → else `CLIENT_CERTIFICATE_EXPIRED`;
 * 3. recorded in `mtls_client_certificates` with this serial and exactly this fingerprint, the
 *    record's seal verifying under the master key (scopes and client come from the record, so they
 *    must be the ones the key CLI wrote), and issued by the CA version the record names → else
 *    `CLIENT_CERTIFICATE_UNTRUSTED`; not revoked → else `CLIENT_CERTIFICATE_REVOKED`.
 *
 * Caching, and why revocation still takes effect at once everywhere: records are cached per
 * instance, but each revocation bumps `mtls_revocation_generation` in its own transaction, and every
 * instance reads that one row at most every `revocationCheckMs` (default 1 s) and drops its cache when
 * it moved. A record read while that happens is not cached: the generation is noted before the read
 * and the record kept only if no refresh has seen it move since (otherwise a read that began before a
 * revocation committed could be cached after the cache was dropped, and keep the certificate alive).
 * The CA list is reloaded the same way when `key_ring_generation` moves (a rotation).
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { Knex } from 'knex';
import { CERTIFICATE_SUBJECT_PREFIX, type Principal } from '../auth/authenticator.js';
import { AppError } from '../errors/app-error.js';
import type { MasterKeySource } from '../keys/master-key-source.js';
import {
  CLIENT_AUTH_OID,
  certificateFingerprint,
  formatSerial,
  keyUsageAllowsDigitalSignature,
  splitPemBundle,
} from './certificate-authority.js';
import { caSealValid, grantSealValid } from './seals.js';
import {
  CA_PURPOSE,
  grantFieldsOf,
  toRecord,
  trustedCaCertificates,
  type ClientCertificateRecord,
  type ClientCertificateRow,
} from './client-certificate-records.js';

export interface ClientCertificatePrincipal extends Principal {
  /** The certificate's serial (colon-separated hex) and its client name. */
  readonly certificateSerial: string;
  readonly clientName: string;
}

export interface ClientCertificateVerifier {
  /** Undefined when the connection carries no client certificate (plain HTTP, or none sent). */
  presented(socket: unknown): X509Certificate | undefined;
  verify(certificate: X509Certificate): Promise<ClientCertificatePrincipal>;
}

const RECORD_CACHE_MAX = 10_000;

/** A trusted CA certificate and the mtls-client-ca version it is (null: one of TLS_CLIENT_CA). */
interface Anchor {
  readonly certificate: X509Certificate;
  readonly version: number | null;
}

export interface ClientCertificateVerifierOptions {
  /** Verifies the seals of CA certificates and certificate records (src/mtls/seals.ts). */
  readonly masterKey: MasterKeySource;
  readonly revocationCheckMs: number;
  /** Extra trust anchors (PEM bundle) from TLS_CLIENT_CA. */
  readonly extraCaPem?: string | undefined;
  readonly now?: () => number;
  /** Tests only: runs between reading a record and caching it, to interleave a revocation there. */
  readonly afterRecordRead?: (serial: string) => Promise<void>;
}

export function createClientCertificateVerifier(
  knex: Knex,
  options: ClientCertificateVerifierOptions,
): ClientCertificateVerifier {
  const now = options.now ?? Date.now;
  const { masterKey } = options;
  const extraAnchors: Anchor[] = splitPemBundle(options.extraCaPem ?? '').map((pem) => ({
    certificate: new X509Certificate(pem),
    version: null,
  }));
  let anchors: Anchor[] = [];
  let ringGeneration = -1;
  let revocationGeneration = -1;
  let checkedAt = -Infinity;
  let refreshing: Promise<void> | undefined;
  /** Only records whose seal verified. */
  const records = new Map<string, ClientCertificateRecord>();

  async function refresh(): Promise<void> {
    const [ring, revocation] = await Promise.all([
      knex('key_ring_generation').where({ id: 1 }).first('generation') as Promise<{ generation: string | number }>,
      knex('mtls_revocation_generation').where({ id: 1 }).first('generation') as Promise<{
        generation: string | number;
      }>,
    ]);
    if (Number(revocation.generation) !== revocationGeneration) {
      records.clear();
      revocationGeneration = Number(revocation.generation);
    }
    if (Number(ring.generation) !== ringGeneration) {
      const sealed: Anchor[] = [];
      for (const ca of await trustedCaCertificates(knex)) {
        const fields = { purpose: CA_PURPOSE, version: ca.version, certificatePem: ca.certificatePem };
        if (await caSealValid(masterKey, fields, ca.seal)) {
          sealed.push({ certificate: new X509Certificate(ca.certificatePem), version: ca.version });
        }
      }
      anchors = [...sealed, ...extraAnchors];
      ringGeneration = Number(ring.generation);
    }
    checkedAt = now();
  }

  async function refreshIfDue(): Promise<void> {
    if (now() - checkedAt < options.revocationCheckMs) return;
    refreshing ??= refresh().finally(() => {
      refreshing = undefined;
    });
    await refreshing;
  }

  /**
   * Only found records are cached: a miss is asked again next time, so a certificate recorded a moment
   * later (issued, or registered for TLS_CLIENT_CA) works at once. Only certificates that passed the
   * CA signature check get this far, so misses cannot be used to flood the database.
   */
  async function recordOf(serial: string): Promise<ClientCertificateRecord | undefined> {
    const cached = records.get(serial);
    if (cached !== undefined) return cached;
    const generationBefore = revocationGeneration;
    const row = (await knex('mtls_client_certificates').where({ serial }).first()) as ClientCertificateRow | undefined;
    if (row === undefined) return undefined;
    const record = toRecord(row);
    if (!(await grantSealValid(masterKey, grantFieldsOf(record), row.seal ?? null))) return undefined;
    await options.afterRecordRead?.(serial);
    // Cached only if no refresh saw a revocation since the read began: the row may predate it.
    if (revocationGeneration === generationBefore) {
      if (records.size >= RECORD_CACHE_MAX) records.delete(records.keys().next().value as string);
      records.set(serial, record);
    }
    return record;
  }

  return {
    presented(socket) {
      const tls = socket as Partial<TLSSocket> | undefined;
      if (tls?.encrypted !== true || typeof tls.getPeerCertificate !== 'function') return undefined;
      const peer = tls.getPeerCertificate(false);
      if (peer === null || !Buffer.isBuffer(peer.raw) || peer.raw.length === 0) return undefined;
      try {
        return new X509Certificate(peer.raw);
      } catch {
        return undefined;
      }
    },

    async verify(certificate) {
      await refreshIfDue();
      const at = now();
      const issuer = anchors.find(
        ({ certificate: ca }) =>
          certificate.checkIssued(ca) &&
          certificate.verify(ca.publicKey) &&
          at >= Date.parse(ca.validFrom) &&
          at <= Date.parse(ca.validTo),
      );
      if (issuer === undefined) {
        throw untrusted('The client certificate was not issued by a CA this service trusts.');
      }
      // X509Certificate.keyUsage is the extended key usage; the keyUsage bits are read from the DER.
      if (
        certificate.ca ||
        !(certificate.keyUsage ?? []).includes(CLIENT_AUTH_OID) ||
        !keyUsageAllowsDigitalSignature(certificate.raw)
      ) {
        throw untrusted('The certificate is not a TLS client certificate.');
      }
      if (at < Date.parse(certificate.validFrom) || at > Date.parse(certificate.validTo)) {
        throw new AppError('CLIENT_CERTIFICATE_EXPIRED', {
          detail: `The client certificate is valid from ${new Date(certificate.validFrom).toISOString()} to ${new Date(certificate.validTo).toISOString()}.`,
          headers: { 'WWW-Authenticate': 'mutual-tls' },
        });
      }
      const serial = formatSerial(certificate.serialNumber);
      const record = await recordOf(serial);
      if (
        record === undefined ||
        record.fingerprint !== certificateFingerprint(certificate.raw) ||
        record.caVersion !== issuer.version
      ) {
        throw untrusted('The client certificate is not one this service issued.');
      }
      if (record.revokedAt !== null) {
        throw new AppError('CLIENT_CERTIFICATE_REVOKED', {
          detail: `The client certificate ${serial} was revoked.`,
          headers: { 'WWW-Authenticate': 'mutual-tls' },
        });
      }
      return {
        subject: `${CERTIFICATE_SUBJECT_PREFIX}${record.clientName}`,
        scopes: new Set(record.scopes),
        shopperRef: undefined,
        tokenId: undefined,
        expiresAt: record.notAfter,
        certificateSerial: serial,
        clientName: record.clientName,
      };
    },
  };
}

function untrusted(detail: string): AppError {
  return new AppError('CLIENT_CERTIFICATE_UNTRUSTED', { detail, headers: { 'WWW-Authenticate': 'mutual-tls' } });
}
