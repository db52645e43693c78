/**
 * SQL of `master_keys`: which master keys (KEKs) wrapped data keys, and which one is current.
 * Functions take a knex handle or the caller's transaction.
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

export interface MasterKeyRow {
  kek_id: string;
  description: string;
  state: string;
  created_at: Date;
}

/** Records a master key as active on first sight (concurrent starts record it once). */
export async function registerMasterKey(
  db: Db,
  key: { kekId: string; description: string; createdAt: Date },
): Promise<void> {
  await db('master_keys')
    .insert({ kek_id: key.kekId, description: key.description, state: 'active', created_at: key.createdAt })
    .onConflict('kek_id')
    .ignore();
}

/** Every recorded master key, oldest first. */
export async function listMasterKeys(db: Db): Promise<MasterKeyRow[]> {
  return (await db('master_keys').orderBy('created_at')) as MasterKeyRow[];
}

/** When this master key was recorded, if it was. */
export async function masterKeyCreatedAt(db: Db, kekId: string): Promise<Date | undefined> {
  const row = (await db('master_keys').where({ kek_id: kekId }).first('created_at')) as
    { created_at: Date | string } | undefined;
  return row === undefined ? undefined : new Date(row.created_at);
}

/** Whether any of these KEK identifiers is still named in `master_keys` or `data_keys`. */
export async function kekIdsInUse(db: Db, kekIds: readonly string[]): Promise<boolean> {
  const found = await db('master_keys')
    .whereIn('kek_id', kekIds as string[])
    .pluck('kek_id');
  const inData: unknown = await db('data_keys')
    .whereIn('kek_id', kekIds as string[])
    .first('kek_id');
  return found.length > 0 || inData !== undefined;
}

/**
 * Renames a KEK identifier in the caller's transaction: the data keys it wrapped, and its
 * `master_keys` row, unless the new name is there already (then the old row goes).
 */
export async function renameKekId(trx: Knex.Transaction, from: string, to: string): Promise<void> {
  await trx('data_keys').where({ kek_id: from }).update({ kek_id: to });
  const renamed: unknown = await trx('master_keys').where({ kek_id: to }).first('kek_id');
  if (renamed === undefined) await trx('master_keys').where({ kek_id: from }).update({ kek_id: to });
  else await trx('master_keys').where({ kek_id: from }).delete();
}

/** Makes `kekId` the one active master key (recorded if new), retiring every other active one. */
export async function makeMasterKeyCurrent(
  trx: Knex.Transaction,
  key: { kekId: string; description: string; at: Date },
): Promise<void> {
  await trx('master_keys')
    .insert({ kek_id: key.kekId, description: key.description, state: 'active', created_at: key.at })
    .onConflict('kek_id')
    .merge({ state: 'active', retired_at: null });
  await trx('master_keys')
    .whereNot('kek_id', key.kekId)
    .where({ state: 'active' })
    .update({ state: 'retired', retired_at: key.at });
}
