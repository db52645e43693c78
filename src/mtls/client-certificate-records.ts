/**
 * What is stored about the client CA and its certificates, and the two reads other parts need: the
 * CA certificates every instance trusts, and the certificates in force per CA version (for the key
 * tooling's inventory and retirement proof).
 */
import type { Knex } from 'knex';
import { AppError } from '../errors/app-error.js';
import type { EncryptedFieldSet } from '../keys/field-sets.js';
import { READABLE_STATES, type KeyState } from '../keys/key-ring.js';
import type { GrantFields } from './seals.js';
import { CA_PURPOSE, caVersionsIn, countLiveByCaVersion, type ClientCertificateRow } from './certificate-store.js';

// The row type and the CA's purpose are the store's; they are part of this public file's surface.
export { CA_PURPOSE, type ClientCertificateRow } from './certificate-store.js';

export interface ClientCertificateRecord {
  readonly serial: string;
  readonly clientName: string;
  readonly scopes: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly fingerprint: string;
  readonly caVersion: number | null;
  readonly keySource: 'generated' | 'csr' | 'external';
  readonly issuedBy: string;
  readonly issuedAt: Date;
  readonly revokedAt: Date | null;
  readonly revokedBy: string | null;
  readonly revocationReason: string | null;
}

/** The sealed fields of a grant, as stored. */
export function grantFieldsOf(record: ClientCertificateRecord): GrantFields {
  return {
    serial: record.serial,
    fingerprint: record.fingerprint,
    clientName: record.clientName,
    scopes: record.scopes,
    caVersion: record.caVersion,
    notBefore: record.notBefore,
    notAfter: record.notAfter,
    keySource: record.keySource,
  };
}

export function toRecord(row: ClientCertificateRow): ClientCertificateRecord {
  return {
    serial: row.serial,
    clientName: row.client_name,
    scopes: typeof row.scopes === 'string' ? (JSON.parse(row.scopes) as string[]) : row.scopes,
    notBefore: row.not_before,
    notAfter: row.not_after,
    fingerprint: row.fingerprint_sha256,
    caVersion: row.ca_version,
    keySource: row.key_source,
    issuedBy: row.issued_by,
    issuedAt: row.issued_at,
    revokedAt: row.revoked_at,
    revokedBy: row.revoked_by,
    revocationReason: row.revocation_reason,
  };
}

export interface CaVersion {
  readonly version: number;
  readonly state: KeyState;
  readonly certificatePem: string;
  /** masterKey.wrap of the CA digest (src/mtls/seals.ts); null for a CA made before seals. */
  readonly seal: Buffer | null;
}

export async function trustedCaCertificates(db: Knex | Knex.Transaction): Promise<CaVersion[]> {
  const rows = await caVersionsIn(db, READABLE_STATES as KeyState[]);
  return rows.map((r) => ({
    version: r.version,
    state: r.state,
    certificatePem: r.certificate_pem,
    seal: r.certificate_seal,
  }));
}

/**
 * The client certificates still in force (neither revoked nor expired) per CA version, registered
 * with the key tooling like an encrypted field set: `keys list` counts them, and `keys retire
 * --purpose mtls-client-ca` refuses while a version still has any (its certificate must stay trusted
 * until then). There is nothing to re-encrypt: a certificate cannot move to another CA, it is
 * reissued (`keys mtls issue`) and the old one revoked.
 */
export const liveClientCertificates: EncryptedFieldSet = {
  name: 'mtls_client_certificates.live',
  purpose: CA_PURPOSE,
  description: 'client certificates in force (not revoked, not expired), by the CA version that signed them',
  countByVersion(db) {
    return countLiveByCaVersion(db, new Date());
  },
  prepareBatch() {
    return Promise.reject(
      new AppError('KEY_OPERATION_INVALID', {
        detail: 'Client certificates are not re-encrypted: reissue them under the new CA and revoke the old ones.',
      }),
    );
  },
};
