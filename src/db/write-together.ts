/**
 * Several writes sent as one statement (`with w0 as (…), w1 as (…) select 1`): one round trip where
 * each write alone would cost one. Under load a transaction's time is mostly round trips, each
 * waiting its turn on a busy event loop and a busy database, so fewer is faster for everyone.
 *
 * The writes of one statement share one snapshot, which is what limits this to writes that are
 * independent of each other:
 * - none sees the rows another adds or changes (a write that must read another's result does not
 *   belong here);
 * - no row may be changed by two of them (PostgreSQL leaves the outcome unspecified);
 * - foreign keys are checked at the end of the whole statement, so a row may refer to one inserted
 *   beside it (a ledger entry to its new lot).
 */
import type { Knex } from 'knex';

/** One piece of the statement; its SQL uses `?` placeholders, in the order of its bindings. */
export type WritePart =
  /** A single insert, update or delete, wrapped as a CTE of its own. */
  | { readonly statement: string; readonly bindings: readonly Knex.RawBinding[] }
  /** Named CTEs written for a `with` list (e.g. the outbox's), used as they are. */
  | { readonly ctes: string; readonly bindings: readonly Knex.RawBinding[] };

/** A query built with knex (an insert, say) as a part. */
export function partOf(query: Knex.QueryBuilder): WritePart {
  const { sql, bindings } = query.toSQL();
  return { statement: sql, bindings };
}

/** Runs the parts (absent ones skipped) on `db` in one statement; nothing when there are none. */
export async function writeTogether(
  db: Knex | Knex.Transaction,
  parts: readonly (WritePart | undefined)[],
): Promise<void> {
  const present = parts.filter((p): p is WritePart => p !== undefined);
  if (present.length === 0) return;
  const [only] = present;
  if (present.length === 1 && only !== undefined && 'statement' in only) {
    await db.raw(only.statement, only.bindings as Knex.RawBinding[]);
    return;
  }
  const ctes = present.map((part, i) => ('statement' in part ? `w${i} as (${part.statement})` : part.ctes));
  await db.raw(
    `with ${ctes.join(',\n')} select 1`,
    present.flatMap((p) => p.bindings),
  );
}
