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
 *    `CLIENT_CERTIFICATE_UNTRUSTED`;
 * 4. not revoked: its serial is not in the sealed revocation list (src/mtls/revocation-list.ts), and
 *    its record has no `revoked_at` → else `CLIENT_CERTIFICATE_REVOKED`. The list is what is trusted:
 *    clearing `revoked_at` in the database changes nothing. While the list fails its integrity check
 *    (a revocation row deleted or altered, the head edited or rolled back below what this instance
 *    has seen), every certificate is refused with `CLIENT_CERTIFICATE_REVOCATIONS_INVALID` (fail
 *    closed) and the detection is audited once (`mtls.revocations.invalid`) and reported to `onTamper`.
 *    A revoked certificate presented again is audited (`mtls.certificate.refused`), at most once per
 *    certificate and minute across the instances.
 *
 * Caching, and why any change reaches every instance within `revocationCheckMs` (default 1 s): at
 * most that often, each instance
 * - reads the revocation list's head (one row) and, when it moved, the revocations appended since,
 *   verified against the sealed head; the revoked serials are kept in memory, never cached per record;
 * - re-reads every cached certificate record in batches by primary key and drops each one that is
 *   gone, revoked, or differs in any sealed field or in its seal: a deleted or edited record stops
 *   working without any revocation (a trigger could do this too, but whoever can edit the table can
 *   drop a trigger; this check needs nothing of the database but the rows).
 * A record read while a refresh runs is not cached (it may predate what that refresh saw): the number
 * of refreshes is noted before the read and the record kept only if none completed since.
 * The CA list is reloaded when `key_ring_generation` moves (a rotation).
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { Knex } from 'knex';
import { CERTIFICATE_SUBJECT_PREFIX } from '../auth/authenticator.js';
import type { ClientCertificateVerifier } from '../auth/certificate-principal.js';
import { AppError } from '../errors/app-error.js';
import type { MasterKeySource } from '../keys/master-key-types.js';
import {
  CLIENT_AUTH_OID,
  certificateFingerprint,
  formatSerial,
  keyUsageAllowsDigitalSignature,
  splitPemBundle,
} from './certificate-authority.js';
import { caSealValid, grantDigest, grantSealValid } from './seals.js';
import {
  auditedRevocationsProblem,
  GENESIS_CHAIN,
  headFingerprint,
  readRevocationHead,
  verifyRevocationList,
  type VerifiedList,
} from './revocation-list.js';
import { appendAuditEvent } from '../audit/audit-log.js';
import { countInFixedWindow } from '../ratelimit/rate-limiter.js';
import {
  CA_PURPOSE,
  grantFieldsOf,
  toRecord,
  trustedCaCertificates,
  type ClientCertificateRecord,
  type ClientCertificateRow,
} from './client-certificate-records.js';
import { findCertificate, findCertificates, readKeyRingGeneration } from './certificate-store.js';

// The principal and the verifier's interface belong to authentication (the HTTP layer uses them).
export type { ClientCertificatePrincipal, ClientCertificateVerifier } from '../auth/certificate-principal.js';

const RECORD_CACHE_MAX = 10_000;
/** The audit action of a revoked certificate presented again (at most one per certificate and minute). */
export const REVOKED_USE_ACTION = 'mtls.certificate.refused';
/** Cached records re-read per query at each refresh. */
const REVALIDATE_BATCH = 1_000;

interface CachedRecord {
  readonly record: ClientCertificateRecord;
  /** SHA-256 of the sealed fields and the seal as read: any change to the row changes one of them. */
  readonly digest: Buffer;
  readonly seal: Buffer;
}

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
  /** Told once each time the revocation list is found tampered with (the service logs it as an error). */
  readonly onTamper?: (problem: string) => void;
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
  let checkedAt = -Infinity;
  let refreshing: Promise<void> | undefined;
  let refreshes = 0;
  /** Only records whose seal verified. */
  const records = new Map<string, CachedRecord>();
  /** The longest revocation list verified so far; a shorter or diverging one is a rollback. */
  let revocations: VerifiedList = { length: 0, chain: GENESIS_CHAIN, serials: [] };
  let revokedSerials = new Set<string>();
  let verifiedHead: string | undefined;
  /** Set while the list fails its check: every certificate is refused. */
  let tampered: string | undefined;

  async function refreshRevocations(): Promise<void> {
    const head = await readRevocationHead(knex);
    const seen = headFingerprint(head);
    if (seen === verifiedHead && tampered === undefined) return;
    let result = await verifyRevocationList(knex, masterKey, revocations, head);
    if (result.ok && verifiedHead === undefined) {
      // At start (nothing verified yet): a reset to the empty unsealed list, or any list missing a
      // revocation, is told apart from a genuine one only by the keyed audit trail.
      const problem = await auditedRevocationsProblem(knex, head, result.serials);
      if (problem !== undefined) result = { ok: false, problem };
    }
    if (result.ok) {
      revocations = result;
      revokedSerials = new Set(result.serials);
      verifiedHead = seen;
      tampered = undefined;
      return;
    }
    if (tampered === undefined) {
      tampered = result.problem;
      options.onTamper?.(result.problem);
      await knex
        .transaction((trx) =>
          appendAuditEvent(trx, {
            actor: 'system',
            actorType: 'system',
            action: 'mtls.revocations.invalid',
            outcome: 'denied',
            origin: 'service',
            resource: 'mtls-revocation-list',
            details: { problem: result.problem, verifiedLength: revocations.length, headLength: head.length },
          }),
        )
        .catch(() => undefined); // the refusal stands even if the audit write fails
    }
  }

  /**
   * A revoked certificate presented again (its private key proven in the handshake: a stolen till, or
   * one not yet replaced) is evidence: `mtls.certificate.refused`, outcome denied, at most once per
   * certificate and minute across every instance (the shared window of the detokenise denial), with
   * how many were refused in the minute before. Whoever holds it cannot flood the trail, whose every
   * entry locks its head. The refusal stands if the count or the entry cannot be written.
   */
  async function auditRevokedUse(
    certificate: X509Certificate,
    serial: string,
    record: ClientCertificateRecord,
  ): Promise<void> {
    try {
      const seen = await countInFixedWindow(knex, `mtls-revoked:${certificateFingerprint(certificate.raw)}`, 60);
      if (seen.count !== 1) return;
      await knex.transaction((trx) =>
        appendAuditEvent(trx, {
          actor: `${CERTIFICATE_SUBJECT_PREFIX}${record.clientName}`,
          actorType: 'client',
          action: REVOKED_USE_ACTION,
          outcome: 'denied',
          origin: 'mtls',
          resource: `mtls-client:${record.clientName}`,
          details: { code: 'CLIENT_CERTIFICATE_REVOKED', serial, refusedInPreviousMinute: seen.previous },
        }),
      );
    } catch {
      // the certificate is refused all the same
    }
  }

  /** Drops every cached record whose row is gone, revoked or changed in any way. */
  async function revalidateCachedRecords(): Promise<void> {
    const serials = [...records.keys()];
    for (let i = 0; i < serials.length; i += REVALIDATE_BATCH) {
      const batch = serials.slice(i, i + REVALIDATE_BATCH);
      const rows = await findCertificates(knex, batch);
      const bySerial = new Map(rows.map((r) => [r.serial, r]));
      for (const serial of batch) {
        const cached = records.get(serial);
        const row = bySerial.get(serial);
        if (cached === undefined) continue;
        if (row === undefined || !unchanged(cached, row)) records.delete(serial);
      }
    }
  }

  async function refresh(): Promise<void> {
    const ring = await readKeyRingGeneration(knex);
    await refreshRevocations();
    await revalidateCachedRecords();
    refreshes += 1;
    if (ring !== ringGeneration) {
      const sealed: Anchor[] = [];
      for (const ca of await trustedCaCertificates(knex)) {
        const fields = { purpose: CA_PURPOSE, version: ca.version, certificatePem: ca.certificatePem };
        if (await caSealValid(masterKey, fields, ca.seal)) {
          sealed.push({ certificate: new X509Certificate(ca.certificatePem), version: ca.version });
        }
      }
      anchors = [...sealed, ...extraAnchors];
      ringGeneration = ring;
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
    if (cached !== undefined) return cached.record;
    const refreshesBefore = refreshes;
    const row = await findCertificate(knex, serial);
    if (row === undefined) return undefined;
    const record = toRecord(row);
    if (!(await grantSealValid(masterKey, grantFieldsOf(record), row.seal ?? null))) return undefined;
    await options.afterRecordRead?.(serial);
    // Cached only if no refresh completed since the read began: the row may predate what it saw. With a
    // check on every request (revocationCheckMs 0) nothing is cached: each request reads its record.
    const seal = row.seal ?? null;
    if (options.revocationCheckMs > 0 && seal !== null && refreshes === refreshesBefore) {
      if (records.size >= RECORD_CACHE_MAX) records.delete(records.keys().next().value as string);
      records.set(serial, { record, digest: recordDigest(row), seal: Buffer.from(seal) });
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
      if (tampered !== undefined) {
        throw new AppError('CLIENT_CERTIFICATE_REVOCATIONS_INVALID', {
          detail:
            'The sealed revocation list failed its integrity check; no client certificate is accepted until it is restored.',
          headers: { 'WWW-Authenticate': 'mutual-tls' },
        });
      }
      if (revokedSerials.has(serial) || record.revokedAt !== null) {
        await auditRevokedUse(certificate, serial, record);
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

/** The sealed fields and the revocation columns of a row, as one digest. */
function recordDigest(row: ClientCertificateRow): Buffer {
  const record = toRecord(row);
  return Buffer.concat([
    grantDigest(grantFieldsOf(record)),
    Buffer.from(JSON.stringify([record.revokedAt?.toISOString() ?? null, record.issuedBy])),
  ]);
}

function unchanged(cached: CachedRecord, row: ClientCertificateRow): boolean {
  const seal = row.seal === null || row.seal === undefined ? Buffer.alloc(0) : Buffer.from(row.seal);
  return row.revoked_at === null && cached.seal.equals(seal) && cached.digest.equals(recordDigest(row));
}

function untrusted(detail: string): AppError {
  return new AppError('CLIENT_CERTIFICATE_UNTRUSTED', { detail, headers: { 'WWW-Authenticate': 'mutual-tls' } });
}
