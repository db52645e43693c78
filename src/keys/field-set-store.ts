/**
 * SQL of the encrypted field sets (field-sets.ts): rows per key version of a column, and one batch of
 * an AES column read in row-key order and written back set-based with compare-and-set. Table and
 * column names come from the field sets' definitions in code, never from input; they are bound as
 * identifiers (`??`) or passed to the query builder, which quotes them.
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

/** Rows per key version of one column (the inventory a field set reports). */
export async function countByVersion(
  db: Db,
  table: string,
  versionColumn: string,
  rowsWhere: Readonly<Record<string, string>> = {},
): Promise<Map<number, number>> {
  const rows = (await db(table)
    .where(rowsWhere)
    .whereNotNull(versionColumn)
    .groupBy(versionColumn)
    .select(`${versionColumn} as version`)
    .count<{ version: number; count: number | string }[]>('* as count')) as { version: number; count: number }[];
  return new Map(rows.map((r) => [r.version, Number(r.count)]));
}

/** Where an AES column lives: its table, row key, ciphertext and key-version columns. */
export interface AesColumn {
  readonly table: string;
  readonly idColumn: string;
  readonly ciphertextColumn: string;
  readonly versionColumn: string;
  readonly rowsWhere: Readonly<Record<string, string>>;
}

export interface AesRow {
  id: string;
  ct: Buffer;
  ver: number;
}

/** The next `limit` rows after `after` (row-key order) under a version below `belowVersion`. No locks. */
export async function readAesBatch(
  db: Db,
  column: AesColumn,
  batch: { belowVersion: number; after: string; limit: number },
): Promise<AesRow[]> {
  const { table, idColumn: id, ciphertextColumn: ct, versionColumn: ver } = column;
  return (await db(table)
    .where(column.rowsWhere)
    .andWhere(ver, '<', batch.belowVersion)
    .andWhere(id, '>', batch.after)
    .orderBy(id)
    .limit(batch.limit)
    .select(`${id} as id`, `${ct} as ct`, `${ver} as ver`)) as AesRow[];
}

/**
 * Writes re-sealed values under `targetVersion`, each only where the row still holds the very value
 * it was read with (same version AND same ciphertext): a value written meanwhile is never overwritten
 * with the old one. Returns how many rows moved.
 */
export async function writeAesBatch(
  trx: Knex.Transaction,
  column: AesColumn,
  targetVersion: number,
  rows: { ids: string[]; sealed: Buffer[]; olds: number[]; oldCts: Buffer[] },
): Promise<number> {
  const { table, idColumn: id, ciphertextColumn: ct, versionColumn: ver } = column;
  const result = (await trx.raw(
    `update ?? as t set ?? = v.ct, ?? = ?
     from unnest(?::text[], ?::bytea[], ?::integer[], ?::bytea[]) as v (id, ct, old, old_ct)
     where t.?? = v.id and t.?? = v.old and t.?? = v.old_ct`,
    [table, ct, ver, targetVersion, rows.ids, rows.sealed, rows.olds, rows.oldCts, id, ver, ct],
  )) as { rowCount?: number; affectedRows?: number };
  return result.rowCount ?? result.affectedRows ?? 0;
}
