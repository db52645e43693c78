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

export const CA_PURPOSE = 'mtls-client-ca';

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

export interface ClientCertificateRow {
  serial: string;
  client_name: string;
  scopes: string[] | string;
  not_before: Date;
  not_after: Date;
  fingerprint_sha256: string;
  ca_version: number | null;
  key_source: 'generated' | 'csr' | 'external';
  issued_by: string;
  issued_at: Date;
  revoked_at: Date | null;
  revoked_by: string | null;
  revocation_reason: string | null;
  /** masterKey.wrap of the grant's digest (src/mtls/seals.ts); null for rows made before seals. */
  seal?: Buffer | null;
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
  const rows = (await db('data_keys')
    .where({ purpose: CA_PURPOSE })
    .whereIn('state', READABLE_STATES as KeyState[])
    .orderBy('version', 'desc')
    .select('version', 'state', 'certificate_pem', 'certificate_seal')) as {
    version: number;
    state: KeyState;
    certificate_pem: string;
    certificate_seal: Buffer | null;
  }[];
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
  async countByVersion(db) {
    const rows = (await db('mtls_client_certificates as c')
      .whereNull('c.revoked_at')
      .whereNotExists((q) => q.select(db.raw('1')).from('mtls_revocations as r').whereRaw('r.serial = c.serial'))
      .where('c.not_after', '>', new Date())
      .groupBy('c.ca_version')
      .select('c.ca_version as version')
      .count({ n: '*' })) as { version: number; n: string | number }[];
    return new Map(rows.map((r) => [Number(r.version), Number(r.n)]));
  },
  prepareBatch() {
    return Promise.reject(
      new AppError('KEY_OPERATION_INVALID', {
        detail: 'Client certificates are not re-encrypted: reissue them under the new CA and revoke the old ones.',
      }),
    );
  },
};
