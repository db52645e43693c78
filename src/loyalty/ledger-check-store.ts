/**
 * SQL of the ledger's invariant check (ledger-check.ts says what each check means and reports it):
 * one aggregate query per invariant, returning the rows that break it, and the tables' sizes.
 */
import type { Knex } from 'knex';
import { STORE_CREDIT_CHECKS } from './store-credit-check-store.js';

export type CheckRow = Record<string, number | string | null>;

const CHECKS: readonly { readonly name: string; readonly subject: string; readonly sql: string }[] = [
  {
    name: 'account balances equal the sums of their entries',
    subject: 'shopper_ref',
    sql: `select a.shopper_ref, a.available, a.pending, a.debt,
                 coalesce(e.available, 0) as entries_available, coalesce(e.pending, 0) as entries_pending,
                 coalesce(e.debt, 0) as entries_debt
          from loyalty_accounts a
          left join (select shopper_ref, sum(available_delta) as available, sum(pending_delta) as pending,
                            sum(debt_delta) as debt
                     from loyalty_entries group by shopper_ref) e on e.shopper_ref = a.shopper_ref
          where a.available <> coalesce(e.available, 0) or a.pending <> coalesce(e.pending, 0)
             or a.debt <> coalesce(e.debt, 0)`,
  },
  {
    name: 'account balances equal their lots less their debt',
    subject: 'shopper_ref',
    sql: `select a.shopper_ref, a.available, a.pending, a.debt, coalesce(l.remaining, 0) as lots_remaining,
                 coalesce(l.pending, 0) as lots_pending
          from loyalty_accounts a
          left join (select shopper_ref, sum(remaining) as remaining, sum(pending) as pending
                     from loyalty_lots group by shopper_ref) l on l.shopper_ref = a.shopper_ref
          where a.available <> coalesce(l.remaining, 0) - a.debt or a.pending <> coalesce(l.pending, 0)`,
  },
  {
    name: 'lots equal the sums of the entries that moved them, and none is over-spent',
    subject: 'id',
    sql: `select l.id, l.remaining, l.pending, coalesce(e.moved, 0) as entries_remaining,
                 coalesce(e.pending, 0) as entries_pending, coalesce(e.received, 0) as received,
                 coalesce(e.given, 0) as given
          from loyalty_lots l
          left join (select lot_id, sum(lot_delta) as moved, sum(pending_delta) as pending,
                            sum(greatest(lot_delta, 0)) as received, sum(least(lot_delta, 0)) as given
                     from loyalty_entries where lot_id is not null group by lot_id) e on e.lot_id = l.id
          where l.remaining <> coalesce(e.moved, 0) or l.pending <> coalesce(e.pending, 0)
             or -coalesce(e.given, 0) > coalesce(e.received, 0) or l.remaining < 0`,
  },
  {
    name: 'no payment had more reversed than it earned, and each lot booked exactly its targets',
    subject: 'payment_id',
    sql: `select payment_id, earn_target, reversal_target, credited, recovered, written_off
          from loyalty_lots
          where reversal_target > earn_target
             or credited - recovered - written_off <> earn_target - reversal_target`,
  },
  {
    name: 'every lot wrote off exactly what its write-off entries say',
    subject: 'id',
    sql: `select l.id, l.written_off, coalesce(-e.points, 0) as entries_written_off
          from loyalty_lots l
          left join (select payment_id, sum(points) as points from loyalty_entries
                     where kind in ('written_off', 'write_off_cancelled') group by payment_id) e
            on e.payment_id = l.payment_id
          where l.written_off <> coalesce(-e.points, 0)`,
  },
  {
    name: 'every entry belongs to an account, and a merged-away account holds nothing',
    subject: 'shopper_ref',
    sql: `select e.shopper_ref, 'no account' as problem from loyalty_entries e
          left join loyalty_accounts a on a.shopper_ref = e.shopper_ref
          where a.shopper_ref is null
          group by e.shopper_ref
          union all
          select a.shopper_ref, 'merged but holds points or lots' as problem
          from loyalty_accounts a join shopper_merges m on m.merged_ref = a.shopper_ref
          where a.available <> 0 or a.pending <> 0 or a.debt <> 0
             or exists (select 1 from loyalty_lots l where l.shopper_ref = a.shopper_ref)`,
  },
  {
    name: 'no payment earned more base points than it reserved of the earning cap',
    subject: 'payment_id',
    sql: `select payment_id, earn_target, cap_reserved, coalesce(b.bonus, 0) as campaign_earn
          from loyalty_lots l
          left join lateral (select sum((c->>'earn')::bigint) as bonus
                             from jsonb_array_elements(coalesce(l.campaigns, '[]'::jsonb)) c) b on true
          where l.cap_reserved is not null and l.earn_target - coalesce(b.bonus, 0) > l.cap_reserved`,
  },
  {
    name: 'every redemption drew exactly its points',
    subject: 'id',
    sql: `select r.id, r.points, r.state, coalesce(e.drawn, 0) as drawn, coalesce(e.returned, 0) as returned
          from loyalty_redemptions r
          left join (select redemption_id,
                            -sum(case when kind = 'redemption' then points else 0 end) as drawn,
                            sum(case when kind = 'redemption_reversed' then points else 0 end) as returned
                     from loyalty_entries where redemption_id is not null group by redemption_id) e
            on e.redemption_id = r.id
          where coalesce(e.drawn, 0) <> r.points
             or coalesce(e.returned, 0) <> case when r.state = 'reversed' then r.points else 0 end`,
  },
];

/** Runs every check in turn; for each, its name, the column naming the subject, and its violating rows. */
export async function runLedgerChecks(
  knex: Knex,
): Promise<{ readonly name: string; readonly subject: string; readonly rows: CheckRow[] }[]> {
  const results: { name: string; subject: string; rows: CheckRow[] }[] = [];
  for (const check of [...CHECKS, ...STORE_CREDIT_CHECKS]) {
    const result = (await knex.raw(check.sql)) as { rows: CheckRow[] };
    results.push({ name: check.name, subject: check.subject, rows: result.rows });
  }
  return results;
}

export async function countRows(
  knex: Knex,
  table: 'loyalty_accounts' | 'loyalty_lots' | 'loyalty_entries',
): Promise<number> {
  return Number(((await knex(table).count({ n: '*' }).first()) as { n: number | string }).n);
}
