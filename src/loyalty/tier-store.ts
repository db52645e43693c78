/**
 * SQL of tiers: `loyalty_tier_changes` (append-only: each row is a change of a shopper's tier, the
 * newest is the shopper's state; numbered per shopper, so two writers of the same change collide on
 * the key) and `loyalty_tier_qualifying` (each earning payment's qualifying spend and authorisation
 * time, kept by the earning transaction). Qualifying figures join the shopper's lots, so they follow
 * a merge with the lots.
 */
import type { Knex } from 'knex';
import type { OutboundEvent } from '../events/event-types.js';
import { writeEvents } from '../events/outbox-store.js';
import type { TierChange, TierPolicy, TierState, Window } from './tiers.js';

type Db = Knex | Knex.Transaction;

interface ChangeRow {
  shopper_ref: string;
  seq: number;
  tier: string;
  floor_tier: string;
  period_start: Date;
  review_at: Date | null;
  changed_at: Date;
}

function stateOf(row: ChangeRow): TierState {
  return {
    seq: Number(row.seq),
    tier: row.tier,
    floorTier: row.floor_tier,
    periodStart: new Date(row.period_start),
    reviewAt: row.review_at === null ? null : new Date(row.review_at),
    changedAt: new Date(row.changed_at),
  };
}

/** The newest change of each of these shoppers (shoppers without any are absent). */
export async function latestTierStates(db: Db, shopperRefs: readonly string[]): Promise<Map<string, TierState>> {
  if (shopperRefs.length === 0) return new Map();
  const rows = (await db('loyalty_tier_changes')
    .distinctOn('shopper_ref')
    .whereIn('shopper_ref', [...new Set(shopperRefs)])
    .orderBy([{ column: 'shopper_ref' }, { column: 'seq', order: 'desc' }])) as ChangeRow[];
  return new Map(rows.map((r) => [r.shopper_ref, stateOf(r)]));
}

/** Every change of these shoppers (a handful each), for the tier at a payment's authorisation. */
export async function tierHistories(
  db: Db,
  shopperRefs: readonly string[],
): Promise<Map<string, { tier: string; changedAt: Date; seq: number }[]>> {
  const histories = new Map<string, { tier: string; changedAt: Date; seq: number }[]>();
  if (shopperRefs.length === 0) return histories;
  const rows = (await db('loyalty_tier_changes')
    .whereIn('shopper_ref', [...new Set(shopperRefs)])
    .select('shopper_ref', 'tier', 'changed_at', 'seq')) as ChangeRow[];
  for (const r of rows) {
    const list = histories.get(r.shopper_ref) ?? [];
    list.push({ tier: r.tier, changedAt: new Date(r.changed_at), seq: Number(r.seq) });
    histories.set(r.shopper_ref, list);
  }
  return histories;
}

export interface QualifyingRow {
  readonly payment_id: string;
  readonly authorised_at: Date;
  readonly currency: string;
  readonly spend: number;
  readonly updated_at: Date;
}

/** Records (or updates) payments' qualifying spend, in one statement. */
export async function upsertQualifying(trx: Knex.Transaction, rows: readonly QualifyingRow[]): Promise<void> {
  if (rows.length === 0) return;
  await trx('loyalty_tier_qualifying')
    .insert([...rows])
    .onConflict('payment_id')
    .merge(['spend', 'updated_at']);
}

/**
 * The shoppers' qualifying figures over each of their windows, in one statement: `figures[i]` sums
 * the payments authorised in `windows[i]` (spend in the policy's currency, or net points earned).
 */
export async function qualifyingFigures(
  db: Db,
  policy: TierPolicy,
  asks: readonly { readonly shopperRef: string; readonly windows: readonly Window[] }[],
): Promise<Map<string, number[]>> {
  const width = Math.max(0, ...asks.map((a) => a.windows.length));
  if (asks.length === 0 || width === 0) return new Map();
  const measure = policy.measure === 'spend' ? 'q.spend' : '(l.earn_target - l.reversal_target)';
  const currency = policy.measure === 'spend' ? 'and q.currency = ?' : '';
  const columns = Array.from({ length: width }, (_, i) => `f${i}, t${i}`).join(', ');
  const sums = Array.from(
    { length: width },
    (_, i) =>
      `coalesce(sum(${measure}) filter (where q.authorised_at >= v.f${i} and q.authorised_at < v.t${i}), 0) as w${i}`,
  ).join(', ');
  const values = asks.map(
    () => `(?::text, ${Array.from({ length: width }, () => '?::timestamptz, ?::timestamptz').join(', ')})`,
  );
  const bindings: Knex.RawBinding[] = asks.flatMap((a) => [
    a.shopperRef,
    ...Array.from({ length: width }, (_, i) => {
      const w = a.windows[i] ?? { from: new Date(0), to: new Date(0) };
      return [w.from, w.to];
    }).flat(),
  ]);
  if (policy.measure === 'spend') bindings.push(policy.currency ?? '');
  const result = (await db.raw(
    `select v.shopper_ref, ${sums}
       from (values ${values.join(', ')}) as v (shopper_ref, ${columns})
       left join loyalty_lots l on l.shopper_ref = v.shopper_ref
       left join loyalty_tier_qualifying q on q.payment_id = l.payment_id ${currency}
      group by v.shopper_ref`,
    bindings,
  )) as { rows: Record<string, string | number>[] };
  return new Map(
    result.rows.map((r) => [String(r['shopper_ref']), Array.from({ length: width }, (_, i) => Number(r[`w${i}`]))]),
  );
}

/**
 * Appends tier changes and their events, in one transaction the caller holds. A change whose number
 * is taken (another writer recorded it first) is not written twice: the insert refuses it, and the
 * caller's transaction is rolled back (the change was made once, by the other).
 */
export async function appendTierChanges(
  trx: Knex.Transaction,
  changes: readonly { readonly shopperRef: string; readonly change: TierChange; readonly programmeVersion: number }[],
  events: readonly OutboundEvent[],
): Promise<void> {
  if (changes.length === 0) return;
  await trx('loyalty_tier_changes').insert(
    changes.map(({ shopperRef, change, programmeVersion }) => ({
      shopper_ref: shopperRef,
      seq: change.state.seq,
      tier: change.state.tier,
      floor_tier: change.state.floorTier,
      previous_tier: change.previousTier,
      reason: change.reason,
      figure: change.figure,
      period_start: change.state.periodStart,
      review_at: change.state.reviewAt,
      programme_version: programmeVersion,
      changed_at: change.state.changedAt,
    })),
  );
  await writeEvents(trx, events);
}

/** Up to `limit` shoppers whose newest tier change is due for review by `now`, except those given. */
export async function shoppersDueForReview(
  db: Db,
  now: Date,
  except: readonly string[],
  limit: number,
): Promise<string[]> {
  const query = db('loyalty_tier_changes as c')
    .where('c.review_at', '<=', now)
    .whereNotExists((q) =>
      q
        .select(db.raw('1'))
        .from('loyalty_tier_changes as n')
        .whereRaw('n.shopper_ref = c.shopper_ref and n.seq > c.seq'),
    )
    .limit(limit)
    .select('c.shopper_ref');
  if (except.length > 0) void query.whereNotIn('c.shopper_ref', [...except]);
  return ((await query) as { shopper_ref: string }[]).map((r) => r.shopper_ref);
}
