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
 *   beside it (a ledger entry to its new lot);
 * - CTE names must not repeat: at most one outbox part (its CTEs are named `outbox_…`).
 */
import type { Knex } from 'knex';

/** One piece of the statement; its SQL uses `?` placeholders, in the order of its bindings. */
export type WritePart =
  /**
   * A single insert, update or delete, wrapped as a CTE of its own; with a name, the final select and
   * the parts after it can read what it returns (its `returning` rows, never the table's new state).
   */
  | { readonly statement: string; readonly bindings: readonly Knex.RawBinding[]; readonly name?: string }
  /** Named CTEs written for a `with` list (e.g. the outbox's), used as they are. */
  | { readonly ctes: string; readonly bindings: readonly Knex.RawBinding[] };

/** A query built with knex (an insert, say) as a part. */
export function partOf(query: Knex.QueryBuilder, name?: string): WritePart {
  const { sql, bindings } = query.toSQL();
  return { statement: sql, bindings, ...(name === undefined ? {} : { name }) };
}

/** PostgreSQL counts a statement's parameters in 16 bits. */
export const MAX_BINDINGS = 65_535;

/**
 * Runs the parts (absent ones skipped) on `db` in one statement, and returns the rows of `select`
 * (which may read named parts); nothing is sent when there are no parts. One statement is atomic by
 * itself, transaction or not; its parameters must stay under {@link MAX_BINDINGS}.
 */
export async function writeTogether<Row = unknown>(
  db: Knex | Knex.Transaction,
  parts: readonly (WritePart | undefined)[],
  select = 'select 1',
): Promise<Row[]> {
  const present = parts.filter((p): p is WritePart => p !== undefined);
  const bindings = present.reduce((n, p) => n + p.bindings.length, 0);
  if (bindings > MAX_BINDINGS) {
    throw new Error(`${bindings} parameters in one statement; PostgreSQL takes at most ${MAX_BINDINGS}`);
  }
  return present.length === 0 ? [] : run<Row>(db, present, select);
}

/**
 * Like {@link writeTogether} for parts that do not refer to each other, in as few statements as
 * PostgreSQL's {@link MAX_BINDINGS} allows (one, unless the writes are large), in order. Only inside
 * a transaction, which keeps them atomic when they take more than one statement.
 */
export async function writeInFewStatements(
  trx: Knex.Transaction,
  parts: readonly (WritePart | undefined)[],
): Promise<void> {
  let group: WritePart[] = [];
  let bindings = 0;
  for (const part of parts) {
    if (part === undefined) continue;
    if ('name' in part && part.name !== undefined) throw new Error('writeInFewStatements takes no named parts');
    if (group.length > 0 && bindings + part.bindings.length > MAX_BINDINGS) {
      await run(trx, group, 'select 1');
      group = [];
      bindings = 0;
    }
    group.push(part);
    bindings += part.bindings.length;
  }
  if (group.length > 0) await run(trx, group, 'select 1');
}

async function run<Row>(db: Knex | Knex.Transaction, parts: readonly WritePart[], select: string): Promise<Row[]> {
  const ctes = parts.map((part, i) =>
    'statement' in part ? `${part.name ?? `w${i}`} as (${part.statement})` : part.ctes,
  );
  const result = (await db.raw(
    `with ${ctes.join(',\n')} ${select}`,
    parts.flatMap((p) => p.bindings),
  )) as { rows: Row[] };
  return result.rows;
}
