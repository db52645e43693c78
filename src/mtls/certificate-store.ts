/**
 * SQL of the client CA and its certificates: the CA versions (rows of `data_keys` under
 * `mtls-client-ca`, which key custody writes and this feature reads and seals), the key ring's
 * generation (a CA rotation moves it), and the certificate records (`mtls_client_certificates`).
 * Functions take a knex handle or the caller's transaction; the revocation list's statements are in
 * revocation-store.ts.
 */
import type { Knex } from 'knex';
import type { KeyState } from '../keys/key-ring.js';

type Db = Knex | Knex.Transaction;

export const CA_PURPOSE = 'mtls-client-ca';

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

// ---- the key ring's generation -------------------------------------------------------------------

/** Takes the key ring's generation row lock (the caller's transaction): no key changes meanwhile. */
export async function lockKeyRingGeneration(trx: Knex.Transaction): Promise<void> {
  await trx('key_ring_generation').where({ id: 1 }).forUpdate();
}

export async function readKeyRingGeneration(db: Db): Promise<number> {
  const ring = (await db('key_ring_generation').where({ id: 1 }).first('generation')) as {
    generation: string | number;
  };
  return Number(ring.generation);
}

// ---- CA versions ---------------------------------------------------------------------------------

/** Some version of the client CA, if there is any. */
export async function anyCaVersion(trx: Knex.Transaction): Promise<{ version: number } | undefined> {
  return (await trx('data_keys').where({ purpose: CA_PURPOSE }).first('version')) as { version: number } | undefined;
}

export async function caCertificateOf(
  trx: Knex.Transaction,
  version: number,
): Promise<{ certificate_pem: string; certificate_seal: Buffer | null }> {
  return (await trx('data_keys').where({ purpose: CA_PURPOSE, version }).first()) as {
    certificate_pem: string;
    certificate_seal: Buffer | null;
  };
}

export async function activeCa(
  trx: Knex.Transaction,
): Promise<{ version: number; wrapped_key: Buffer; certificate_pem: string } | undefined> {
  return (await trx('data_keys').where({ purpose: CA_PURPOSE, state: 'active' }).first()) as
    { version: number; wrapped_key: Buffer; certificate_pem: string } | undefined;
}

/** The CA versions in these states, newest first. */
export async function caVersionsIn(
  db: Db,
  states: readonly KeyState[],
): Promise<{ version: number; state: KeyState; certificate_pem: string; certificate_seal: Buffer | null }[]> {
  return (await db('data_keys')
    .where({ purpose: CA_PURPOSE })
    .whereIn('state', states as KeyState[])
    .orderBy('version', 'desc')
    .select('version', 'state', 'certificate_pem', 'certificate_seal')) as {
    version: number;
    state: KeyState;
    certificate_pem: string;
    certificate_seal: Buffer | null;
  }[];
}

/** Every sealed CA certificate (of any purpose whose key is a CA). */
export async function sealedCaRows(
  trx: Knex.Transaction,
): Promise<{ purpose: string; version: number; certificate_seal: Buffer }[]> {
  return (await trx('data_keys').whereNotNull('certificate_seal').select('purpose', 'version', 'certificate_seal')) as {
    purpose: string;
    version: number;
    certificate_seal: Buffer;
  }[];
}

export async function updateCaSeal(trx: Knex.Transaction, purpose: string, version: number, seal: Buffer) {
  await trx('data_keys').where({ purpose, version }).update({ certificate_seal: seal });
}

// ---- certificate records -------------------------------------------------------------------------

/** The record of `serial`; `lock` takes its row lock (the caller's transaction). */
export async function findCertificate(db: Db, serial: string, lock = false): Promise<ClientCertificateRow | undefined> {
  const query = db('mtls_client_certificates').where({ serial });
  if (lock) void query.forUpdate();
  return (await query.first()) as ClientCertificateRow | undefined;
}

export async function findCertificates(db: Db, serials: readonly string[]): Promise<ClientCertificateRow[]> {
  return (await db('mtls_client_certificates').whereIn('serial', [...serials])) as ClientCertificateRow[];
}

export async function insertCertificate(trx: Knex.Transaction, row: ClientCertificateRow, seal: Buffer) {
  await trx('mtls_client_certificates').insert({ ...row, scopes: JSON.stringify(row.scopes), seal });
}

export async function markCertificateRevoked(
  trx: Knex.Transaction,
  serial: string,
  revocation: { revoked_at: Date; revoked_by: string; revocation_reason: string },
): Promise<void> {
  await trx('mtls_client_certificates').where({ serial }).update(revocation);
}

/** Every sealed record's serial and seal. */
export async function sealedGrantRows(trx: Knex.Transaction): Promise<{ serial: string; seal: Buffer }[]> {
  return (await trx('mtls_client_certificates').whereNotNull('seal').select('serial', 'seal')) as {
    serial: string;
    seal: Buffer;
  }[];
}

export async function updateGrantSeal(trx: Knex.Transaction, serial: string, seal: Buffer): Promise<void> {
  await trx('mtls_client_certificates').where({ serial }).update({ seal });
}

/**
 * The records by client and issue time, each with its revocation from the sealed list, else from the
 * record; without `includeRevoked`, only those revoked in neither.
 */
export async function listCertificates(knex: Knex, includeRevoked: boolean): Promise<ClientCertificateRow[]> {
  const query = knex('mtls_client_certificates as c')
    .leftJoin('mtls_revocations as r', 'r.serial', 'c.serial')
    .orderBy([{ column: 'c.client_name' }, { column: 'c.issued_at' }])
    .select(
      'c.*',
      knex.raw('coalesce(r.revoked_at, c.revoked_at) as revoked_at'),
      knex.raw('coalesce(r.revoked_by, c.revoked_by) as revoked_by'),
      knex.raw('coalesce(r.reason, c.revocation_reason) as revocation_reason'),
    );
  if (!includeRevoked) void query.whereNull('c.revoked_at').whereNull('r.serial');
  return (await query) as ClientCertificateRow[];
}

/** The serials of records marked revoked that are not in the sealed list. */
export async function revokedUnsealedSerials(db: Db): Promise<{ serial: string }[]> {
  return (await db('mtls_client_certificates as c')
    .leftJoin('mtls_revocations as r', 'r.serial', 'c.serial')
    .whereNotNull('c.revoked_at')
    .whereNull('r.serial')
    .select('c.serial')) as { serial: string }[];
}

/** The records marked revoked that are not in the sealed list, in revocation order. */
export async function revokedUnsealedRows(db: Db): Promise<ClientCertificateRow[]> {
  return (await db('mtls_client_certificates as c')
    .leftJoin('mtls_revocations as r', 'r.serial', 'c.serial')
    .whereNotNull('c.revoked_at')
    .whereNull('r.serial')
    .orderBy('c.revoked_at')
    .select('c.*')) as ClientCertificateRow[];
}

/** Records neither revoked (on the record or in the sealed list) nor expired at `now`, per CA version. */
export async function countLiveByCaVersion(db: Db, now: Date): Promise<Map<number, number>> {
  const rows = (await db('mtls_client_certificates as c')
    .whereNull('c.revoked_at')
    .whereNotExists((q) => q.select(db.raw('1')).from('mtls_revocations as r').whereRaw('r.serial = c.serial'))
    .where('c.not_after', '>', now)
    .groupBy('c.ca_version')
    .select('c.ca_version as version')
    .count({ n: '*' })) as { version: number; n: string | number }[];
  return new Map(rows.map((r) => [Number(r.version), Number(r.n)]));
}
