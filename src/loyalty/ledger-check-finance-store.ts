/**
 * SQL of the finance checks (ledger-check-finance.ts says what each means): one aggregate query per
 * check, returning the rows that break it.
 */
import type { Knex } from 'knex';

type CheckRow = Record<string, number | string | null>;

const SQL_CHECKS: readonly { readonly name: string; readonly subject: string; readonly sql: string }[] = [
  {
    name: "each operator's daily grant total equals its adjustments' grants that day",
    subject: 'operator_day',
    sql: `select coalesce(g.operator, a.operator) || ' ' || to_char(coalesce(g.day, a.operator_day), 'YYYY-MM-DD')
                   as operator_day,
                 coalesce(g.points, 0) as total, coalesce(a.points, 0) as adjustments
          from loyalty_operator_daily_grants g
          full join (select operator, operator_day, sum(points) as points from loyalty_adjustments
                     where points > 0 group by operator, operator_day) a
            on a.operator = g.operator and a.operator_day = g.day
          where coalesce(g.points, 0) <> coalesce(a.points, 0)`,
  },
  {
    name: 'every adjustment moved exactly its points',
    subject: 'id',
    sql: `select a.id, a.points, coalesce(e.moved, 0) as entries_available
          from loyalty_adjustments a
          left join lateral (select sum(available_delta) as moved from loyalty_entries
                              where business_key = 'adjustment:' || a.id
                                 or business_key like 'adjustment:' || a.id || ':%') e on true
          where coalesce(e.moved, 0) <> a.points`,
  },
  {
    name: 'a payment whose earning key a claim holds earned nothing, and every key names its winner',
    subject: 'payment_ref',
    sql: `select k.provider || ' ' || k.payment_ref as payment_ref, k.won_by, 'claimed payment has a lot' as problem
          from loyalty_earning_keys k
          join payments p on p.provider = k.provider and p.external_id = k.payment_ref
          join loyalty_lots l on l.payment_id = p.id
          where k.won_by = 'claim'
          union all
          select k.provider || ' ' || k.payment_ref, k.won_by, 'the winner is missing' as problem
          from loyalty_earning_keys k
          where (k.won_by = 'claim' and not exists (select 1 from loyalty_lots l where l.adjustment_id = k.adjustment_id))
             or (k.won_by = 'payment' and not exists (select 1 from loyalty_lots l where l.payment_id = k.payment_id))`,
  },
];

/** Runs each check; its name, the column naming the subject, and its violating rows. */
export async function runFinanceChecks(
  knex: Knex,
): Promise<{ readonly name: string; readonly subject: string; readonly rows: CheckRow[] }[]> {
  const results: { name: string; subject: string; rows: CheckRow[] }[] = [];
  for (const check of SQL_CHECKS) {
    const result = (await knex.raw(check.sql)) as { rows: CheckRow[] };
    results.push({ name: check.name, subject: check.subject, rows: result.rows });
  }
  return results;
}
