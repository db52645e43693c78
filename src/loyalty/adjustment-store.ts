/**
 * SQL of operator adjustments (goodwill, missing-points claims), their per-operator daily totals and
 * the earning keys that decide, exactly once, whether a gateway payment earns by itself or through a
 * granted claim. Every function runs on the caller's transaction.
 *
 * Lock order (after payments and accounts, as everywhere): an earning key is inserted under the
 * account lock of whoever books it (the webhook batch holds its accounts, a claim its shopper's), so
 * the key never waits while holding something an account holder waits for.
 */
import type { Knex } from 'knex';

export interface AdjustmentRow {
  readonly id: string;
  readonly shopper_ref: string;
  readonly kind: 'goodwill' | 'missing_points';
  readonly points: number;
  readonly reason: string;
  readonly operator: string;
  readonly provider: string | null;
  readonly payment_ref: string | null;
  readonly operator_day: string;
  readonly created_at: Date;
}

/**
 * A payment's first lot takes its key (provider + the gateway's payment id), one statement for the
 * batch; the payments whose key is theirs (just taken, or taken before). A key a claim holds stays
 * the claim's: that payment earns nothing.
 */
export async function claimEarningKeys(
  trx: Knex.Transaction,
  keys: readonly { readonly provider: string; readonly paymentRef: string; readonly paymentId: string }[],
  now: Date,
): Promise<Set<string>> {
  if (keys.length === 0) return new Set();
  const result = (await trx.raw(
    `with taken as (
       insert into loyalty_earning_keys (provider, payment_ref, won_by, payment_id, created_at)
       values ${keys.map(() => `(?, ?, 'payment', ?, ?)`).join(', ')}
       on conflict (provider, payment_ref) do nothing
       returning payment_id)
     select payment_id from taken
     union
     select payment_id from loyalty_earning_keys where payment_id in (${keys.map(() => '?').join(', ')})`,
    [...keys.flatMap((k) => [k.provider, k.paymentRef, k.paymentId, now]), ...keys.map((k) => k.paymentId)],
  )) as { rows: { payment_id: string }[] };
  return new Set(result.rows.map((r) => r.payment_id));
}

/**
 * A granted claim takes the payment's key; false when the payment (or an earlier claim) holds it.
 * A concurrent insert of the same key waits here for the other transaction: whichever commits
 * first wins, the other sees its row.
 */
export async function claimEarningKeyForClaim(
  trx: Knex.Transaction,
  key: { readonly provider: string; readonly paymentRef: string; readonly adjustmentId: string },
  now: Date,
): Promise<boolean> {
  const rows = (await trx('loyalty_earning_keys')
    .insert({
      provider: key.provider,
      payment_ref: key.paymentRef,
      won_by: 'claim',
      adjustment_id: key.adjustmentId,
      created_at: now,
    })
    .onConflict(['provider', 'payment_ref'])
    .ignore()
    .returning('adjustment_id')) as unknown[];
  return rows.length > 0;
}

/**
 * Adds `points` to the operator's grants of today (UTC, on the database clock) unless that passes
 * `cap`; the day, or undefined when refused. One conditional upsert: a concurrent grant by the same
 * operator waits for this row's lock and is judged on the committed total, so the cap holds exactly
 * across instances.
 */
export async function addDailyGrant(
  trx: Knex.Transaction,
  operator: string,
  points: number,
  cap: number,
): Promise<string | undefined> {
  if (points > cap) return undefined;
  const result = (await trx.raw(
    `insert into loyalty_operator_daily_grants as g (operator, day, points)
     values (?, (now() at time zone 'UTC')::date, ?)
     on conflict (operator, day) do update set points = g.points + excluded.points
       where g.points + excluded.points <= ?
     returning to_char(day, 'YYYY-MM-DD') as day`,
    [operator, points, cap],
  )) as { rows: { day: string }[] };
  return result.rows[0]?.day;
}

/** Today on the database clock (UTC): the day a debit is recorded under. */
export async function databaseDay(trx: Knex.Transaction): Promise<string> {
  const result = (await trx.raw(`select to_char((now() at time zone 'UTC')::date, 'YYYY-MM-DD') as day`)) as {
    rows: { day: string }[];
  };
  return (result.rows[0] as { day: string }).day;
}

export async function insertAdjustment(trx: Knex.Transaction, row: AdjustmentRow): Promise<void> {
  await trx('loyalty_adjustments').insert(row);
}
