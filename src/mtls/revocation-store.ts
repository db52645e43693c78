/**
 * SQL of the sealed revocation list (revocation-list.ts says what is sealed and why): the head row
 * (`mtls_revocation_list`, one row), the append-only entries (`mtls_revocations`), the generation
 * every instance watches (`mtls_revocation_generation`), and the audit entries the list is compared
 * with. Functions take a knex handle or the caller's transaction; the head's row lock (`forUpdate`)
 * is what serialises appends.
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

export interface RevocationEntry {
  readonly position: number;
  readonly serial: string;
  readonly fingerprint: string;
  readonly revokedAt: Date;
  readonly revokedBy: string;
  readonly reason: string;
}

export interface RevocationHead {
  readonly length: number;
  readonly chain: Buffer;
  readonly seal: Buffer | null;
}

interface EntryRow {
  position: string | number;
  serial: string;
  fingerprint_sha256: string;
  revoked_at: Date;
  revoked_by: string;
  reason: string;
}

export async function readRevocationHead(db: Db, forUpdate = false): Promise<RevocationHead> {
  const query = db('mtls_revocation_list').where({ id: 1 }).first('length', 'chain', 'seal');
  if (forUpdate) void query.forUpdate();
  const row = (await query) as { length: string | number; chain: Buffer; seal: Buffer | null };
  return {
    length: Number(row.length),
    chain: Buffer.from(row.chain),
    seal: row.seal === null ? null : Buffer.from(row.seal),
  };
}

/** Locks the head row (the caller's transaction) without reading it: appends queue behind this. */
export async function lockRevocationHead(trx: Knex.Transaction): Promise<void> {
  await trx('mtls_revocation_list').where({ id: 1 }).forUpdate().first('id');
}

/** Writes the head: its length, chain value and seal. */
export async function writeRevocationHead(trx: Knex.Transaction, head: RevocationHead): Promise<void> {
  await trx('mtls_revocation_list')
    .where({ id: 1 })
    .update({ length: head.length, chain: head.chain, seal: head.seal });
}

/** Replaces only the head's seal. */
export async function writeRevocationHeadSeal(trx: Knex.Transaction, seal: Buffer): Promise<void> {
  await trx('mtls_revocation_list').where({ id: 1 }).update({ seal });
}

export async function revocationEntriesAfter(db: Db, position: number): Promise<RevocationEntry[]> {
  const rows = (await db('mtls_revocations').where('position', '>', position).orderBy('position')) as EntryRow[];
  return rows.map((r) => ({
    position: Number(r.position),
    serial: r.serial,
    fingerprint: r.fingerprint_sha256,
    revokedAt: r.revoked_at,
    revokedBy: r.revoked_by,
    reason: r.reason,
  }));
}

export async function insertRevocationEntry(trx: Knex.Transaction, entry: RevocationEntry): Promise<void> {
  await trx('mtls_revocations').insert({
    position: entry.position,
    serial: entry.serial,
    fingerprint_sha256: entry.fingerprint,
    revoked_at: entry.revokedAt,
    revoked_by: entry.revokedBy,
    reason: entry.reason,
  });
}

/** When `serial` is in the list, when it was revoked. */
export async function findRevocation(db: Db, serial: string): Promise<{ revoked_at: Date } | undefined> {
  return (await db('mtls_revocations').where({ serial }).first('revoked_at')) as { revoked_at: Date } | undefined;
}

/** Tells every instance that the revocations changed. */
export async function bumpRevocationGeneration(trx: Knex.Transaction): Promise<void> {
  await trx('mtls_revocation_generation').where({ id: 1 }).increment('generation', 1);
}

/** The successful audit entries with these actions, in order (their MACs are checked by the caller). */
export async function auditEntriesOf(
  db: Db,
  actions: readonly string[],
): Promise<{ seq: number; action: string; details: unknown }[]> {
  return (await db('audit_events')
    .whereIn('action', [...actions])
    .where({ outcome: 'success' })
    .orderBy('seq')
    .select('seq', 'action', 'details')) as { seq: number; action: string; details: unknown }[];
}
