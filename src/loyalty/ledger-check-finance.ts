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
import { runFinanceChecks } from './ledger-check-finance-store.js';
import { projectionSums } from './liability-store.js';

export interface FinanceViolation {
  readonly check: string;
  readonly subject: string;
  readonly detail: Readonly<Record<string, number | string | null>>;
}

const LIABILITY = 'the liability report (from the entries) equals the ledger projections';

export async function financeViolations(knex: Knex): Promise<FinanceViolation[]> {
  const violations: FinanceViolation[] = [];
  for (const check of await runFinanceChecks(knex)) {
    for (const row of check.rows) {
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
