/**
 * The checks `loyalty check` adds for finance (ledger-check.ts runs them with the others):
 * - the liability report, computed from the entries as the report computes it (liability-service.ts
 *   `figuresOf`), equals the projections: Σ account available, pending and debt; the lots' remaining
 *   per expiry month and their pending; its tiers add up to its total; and its flows over all history
 *   (issued + adjusted + other − redeemed − expired − reversed) add up to the available total;
 * - each operator's daily grant total equals the grants of its adjustments that day (a total lowered
 *   by hand to get past the cap is found);
 * - every adjustment moved exactly its points, in entries keyed by it;
 * - a payment whose earning key a claim holds has no lot, and every earning key's winner exists.
 */
import type { Knex } from 'knex';
import { liabilityReport } from './liability.js';
import { figuresOf } from './liability-service.js';
import { projectionSums } from './liability-store.js';

export interface FinanceViolation {
  readonly check: string;
  readonly subject: string;
  readonly detail: Readonly<Record<string, number | string | null>>;
}

const LIABILITY = 'the liability report (from the entries) equals the ledger projections';

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

export async function financeViolations(knex: Knex): Promise<FinanceViolation[]> {
  const violations: FinanceViolation[] = [];
  for (const check of SQL_CHECKS) {
    const result = (await knex.raw(check.sql)) as { rows: Record<string, number | string | null>[] };
    for (const row of result.rows) {
      const { [check.subject]: subject, ...detail } = row;
      violations.push({ check: check.name, subject: String(subject), detail });
    }
  }
  violations.push(...(await liabilityViolations(knex)));
  return violations;
}

/** The report's figures over all entries against the projections, one violation per figure that differs. */
async function liabilityViolations(knex: Knex): Promise<FinanceViolation[]> {
  const { figures, projections } = await knex.transaction(
    async (trx) => ({ figures: await figuresOf(trx, null, null), projections: await projectionSums(trx) }),
    { isolationLevel: 'repeatable read', readOnly: true },
  );
  const report = liabilityReport(figures, new Date(), null, {});
  const found: FinanceViolation[] = [];
  const expect = (subject: string, report: number, ledger: number): void => {
    if (report !== ledger) found.push({ check: LIABILITY, subject, detail: { report, ledger } });
  };
  const o = report.outstanding;
  expect('available', o.available, projections.accounts.available);
  expect('pending', o.pending, projections.accounts.pending);
  expect('pending (lots)', o.pending, projections.lotsPending);
  expect('debt', o.debt, projections.accounts.debt);
  expect('lots less debt', o.lots - o.debt, projections.accounts.available);
  const months = new Set([...o.byExpiryMonth.map((m) => m.month), ...projections.lotsByMonth.map((m) => m.month)]);
  for (const month of [...months].sort()) {
    expect(
      `lots expiring ${month}`,
      o.byExpiryMonth.find((m) => m.month === month)?.points ?? 0,
      projections.lotsByMonth.find((m) => m.month === month)?.points ?? 0,
    );
  }
  expect(
    'available by tier',
    o.byTier.reduce((sum, t) => sum + t.available, 0),
    projections.accounts.available,
  );
  expect(
    'pending by tier',
    o.byTier.reduce((sum, t) => sum + t.pending, 0),
    projections.accounts.pending,
  );
  const p = report.period;
  expect(
    'flows since the first entry',
    p.issued + p.adjusted + p.other - p.redeemed - p.expired - p.reversed,
    projections.accounts.available,
  );
  return found;
}
