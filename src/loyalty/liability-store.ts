/**
 * SQL of the points liability: sums of the ledger's entries as of a time (liability.ts says what
 * each figure means). Only `loyalty_entries` is summed; `loyalty_lots` gives each lot's expiry date
 * (set at its first credit, never changed) and nothing else, so a past `asOf` reads the ledger's
 * history, not today's balances. `asOf` null: every entry (what `loyalty check` compares).
 */
import type { Knex } from 'knex';
import { PENDING_DELTA, USED_KINDS, type LedgerSums, type LiabilityFigures } from './liability.js';

type Db = Knex | Knex.Transaction;

const num = (v: unknown): number => Number(v ?? 0);

function upTo(asOf: Date | null, column = 'created_at', before = false): { sql: string; bindings: Date[] } {
  return asOf === null
    ? { sql: 'true', bindings: [] }
    : { sql: `${column} ${before ? '<' : '<='} ?`, bindings: [asOf] };
}

/** Σ of the entries created at or before `asOf` (`before`: strictly before it). */
export async function ledgerSums(db: Db, asOf: Date | null, before = false): Promise<LedgerSums> {
  const when = upTo(asOf, 'created_at', before);
  const result = (await db.raw(
    `select coalesce(sum(available_delta), 0) as available, coalesce(sum(${PENDING_DELTA}), 0) as pending,
            coalesce(sum(debt_delta), 0) as debt
       from loyalty_entries where ${when.sql}`,
    when.bindings,
  )) as { rows: Record<string, unknown>[] };
  const row = result.rows[0] ?? {};
  return { available: num(row['available']), pending: num(row['pending']), debt: num(row['debt']) };
}

/** Σ lot_delta per expiry month (UTC) as of `asOf`, months with nothing left omitted. */
export async function lotsByExpiryMonth(db: Db, asOf: Date | null): Promise<{ month: string; points: number }[]> {
  const when = upTo(asOf, 'e.created_at');
  const result = (await db.raw(
    `select coalesce(to_char(l.expires_at at time zone 'UTC', 'YYYY-MM'), 'none') as month, sum(e.lot_delta) as points
       from loyalty_entries e join loyalty_lots l on l.id = e.lot_id
      where ${when.sql}
      group by 1 having sum(e.lot_delta) <> 0 order by 1`,
    when.bindings,
  )) as { rows: { month: string; points: unknown }[] };
  return result.rows.map((r) => ({ month: r.month, points: num(r.points) }));
}

/** Σ available_delta by kind for entries in [from, asOf]. */
export async function availableByKind(
  db: Db,
  from: Date | null,
  asOf: Date | null,
): Promise<{ kind: string; available: number }[]> {
  const when = upTo(asOf);
  const after = from === null ? { sql: 'true', bindings: [] as Date[] } : { sql: 'created_at >= ?', bindings: [from] };
  const result = (await db.raw(
    `select kind, sum(available_delta) as available from loyalty_entries
      where ${when.sql} and ${after.sql} group by kind order by kind`,
    [...when.bindings, ...after.bindings],
  )) as { rows: { kind: string; available: unknown }[] };
  return result.rows.map((r) => ({ kind: r.kind, available: num(r.available) }));
}

/** Per shopper with anything outstanding as of `asOf` (for a tier grouping). */
export async function shopperSums(
  db: Db,
  asOf: Date | null,
): Promise<{ shopperRef: string; available: number; pending: number }[]> {
  const when = upTo(asOf);
  const result = (await db.raw(
    `select shopper_ref, sum(available_delta) as available, sum(${PENDING_DELTA}) as pending
       from loyalty_entries where ${when.sql}
      group by shopper_ref having sum(available_delta) <> 0 or sum(${PENDING_DELTA}) <> 0`,
    when.bindings,
  )) as { rows: { shopper_ref: string; available: unknown; pending: unknown }[] };
  return result.rows.map((r) => ({ shopperRef: r.shopper_ref, available: num(r.available), pending: num(r.pending) }));
}

/** Lots whose expiry date is at or before `asOf`: expired, still in them, and used (redeemed). */
export async function lapsedLots(db: Db, asOf: Date | null): Promise<LiabilityFigures['breakage']> {
  // Without asOf (the check): every entry, and the lots lapsed by the database's now.
  const at = asOf === null ? { sql: 'now()', bindings: [] as Date[] } : { sql: '?', bindings: [asOf] };
  const when = upTo(asOf, 'e.created_at');
  const result = (await db.raw(
    `select coalesce(sum(case when e.kind = 'expiry' then -e.lot_delta else 0 end), 0) as expired,
            coalesce(sum(e.lot_delta), 0) as remaining,
            coalesce(sum(case when e.kind in (${USED_KINDS.map(() => '?').join(', ')}) then -e.lot_delta else 0 end), 0)
              as used
       from loyalty_entries e join loyalty_lots l on l.id = e.lot_id
      where l.expires_at <= ${at.sql} and ${when.sql}`,
    [...USED_KINDS, ...at.bindings, ...when.bindings],
  )) as { rows: Record<string, unknown>[] };
  const row = result.rows[0] ?? {};
  return { expired: num(row['expired']), remaining: num(row['remaining']), used: num(row['used']) };
}

/** What the projections say now: the accounts' and lots' sums, and the lots' remaining by month. */
export async function projectionSums(db: Db): Promise<{
  accounts: LedgerSums;
  lotsPending: number;
  lotsByMonth: { month: string; points: number }[];
}> {
  const accounts = (await db.raw(
    `select coalesce(sum(available), 0) as available, coalesce(sum(pending), 0) as pending,
            coalesce(sum(debt), 0) as debt from loyalty_accounts`,
  )) as { rows: Record<string, unknown>[] };
  const lots = (await db.raw(
    `select coalesce(to_char(expires_at at time zone 'UTC', 'YYYY-MM'), 'none') as month, sum(remaining) as points,
            sum(pending) as pending
       from loyalty_lots group by 1 order by 1`,
  )) as { rows: { month: string; points: unknown; pending: unknown }[] };
  const a = accounts.rows[0] ?? {};
  return {
    accounts: { available: num(a['available']), pending: num(a['pending']), debt: num(a['debt']) },
    lotsPending: lots.rows.reduce((sum, r) => sum + num(r.pending), 0),
    lotsByMonth: lots.rows.filter((r) => num(r.points) !== 0).map((r) => ({ month: r.month, points: num(r.points) })),
  };
}
