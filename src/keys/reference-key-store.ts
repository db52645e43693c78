/**
 * SQL of the reference-digest key (`reference_digest_keys`, one row: version 1). The caller
 * (reference-digests.ts) decides when the row is created, unwrapped and rewrapped.
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

export interface ReferenceKeyRow {
  version: number;
  wrapped_key: Buffer;
  kek_id: string;
}

export const REFERENCE_KEY_RESOURCE = 'reference-key:v1';

export async function findReferenceKey(db: Db): Promise<ReferenceKeyRow | undefined> {
  return (await db('reference_digest_keys').where({ version: 1 }).first('version', 'wrapped_key', 'kek_id')) as
    ReferenceKeyRow | undefined;
}

/**
 * Inserts version 1 unless another transaction did (a concurrent creator waits on the key); true when
 * this call inserted it.
 */
export async function insertReferenceKeyIfAbsent(
  db: Db,
  key: { wrappedKey: Buffer; kekId: string; createdAt: Date },
): Promise<boolean> {
  const inserted = (await db('reference_digest_keys')
    .insert({ version: 1, wrapped_key: key.wrappedKey, kek_id: key.kekId, created_at: key.createdAt })
    .onConflict('version')
    .ignore()
    .returning('version')) as unknown[];
  return inserted.length > 0;
}

/** The audit entries that created or first recorded the reference key, in chain order. */
export interface ReferenceKeyEntryRow {
  seq: number;
  action: string;
  outcome: string;
  details: unknown;
}

export async function referenceKeyEntries(db: Db, actions: readonly string[]): Promise<ReferenceKeyEntryRow[]> {
  return (await db('audit_events')
    .whereIn('action', actions as string[])
    .orderBy('seq')
    .select('seq', 'action', 'outcome', 'details')) as ReferenceKeyEntryRow[];
}

export async function lockReferenceKeys(trx: Knex.Transaction): Promise<ReferenceKeyRow[]> {
  return (await trx('reference_digest_keys').forUpdate()) as ReferenceKeyRow[];
}

export async function rewrapReferenceKey(
  trx: Knex.Transaction,
  version: number,
  wrapped: { wrappedKey: Buffer; kekId: string },
): Promise<void> {
  await trx('reference_digest_keys')
    .where({ version })
    .update({ wrapped_key: wrapped.wrappedKey, kek_id: wrapped.kekId });
}
