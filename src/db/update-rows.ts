/**
 * Many rows of one table updated in one statement (`update … from (values …)`), each value cast to
 * its column type: one round trip for a whole batch instead of one per row.
 */
import type { Knex } from 'knex';
import type { WritePart } from './write-together.js';

export async function updateRows<R extends object>(
  trx: Knex.Transaction,
  table: string,
  key: keyof R & string,
  types: Readonly<Partial<Record<keyof R & string, string>>>,
  rows: readonly R[],
): Promise<void> {
  const part = updateRowsPart(table, key, types, rows);
  if (part !== undefined) await trx.raw(part.statement, part.bindings as Knex.RawBinding[]);
}

/** The same update as a {@link WritePart}, to send with other writes; undefined for no rows. */
export function updateRowsPart<R extends object>(
  table: string,
  key: keyof R & string,
  types: Readonly<Partial<Record<keyof R & string, string>>>,
  rows: readonly R[],
  /** Further condition on the row `t` (and its values `v`), e.g. gating the update on another part. */
  where?: { readonly sql: string; readonly bindings: readonly Knex.RawBinding[] },
): Extract<WritePart, { statement: string }> | undefined {
  if (rows.length === 0) return undefined;
  const columns = Object.keys(types) as (keyof R & string)[];
  const row = `(?, ${columns.map(() => '?').join(', ')})`;
  return {
    statement: `update ${table} t set ${columns.map((c) => `${c} = v.${c}::${types[c] as string}`).join(', ')}
     from (values ${rows.map(() => row).join(', ')}) as v (${key}, ${columns.join(', ')})
     where t.${key} = v.${key}${where === undefined ? '' : ` and (${where.sql})`}`,
    bindings: [
      ...(rows.flatMap((r) => [r[key], ...columns.map((c) => r[c] ?? null)]) as Knex.RawBinding[]),
      ...(where?.bindings ?? []),
    ],
  };
}
