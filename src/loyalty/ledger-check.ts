/**
 * The ledger's invariants, checked from the database alone (`npm run loyalty -- check`):
 * - every account's available, pending and debt equal the sums of its entries;
 * - every account's available equals what its lots hold less its debt, and its pending the lots' pending;
 * - every lot's remaining and pending equal the sums of the entries that moved that lot, and no lot
 *   gave out more than it received (over-spent);
 * - no payment had more reversed than it earned, and what each lot took back plus wrote off equals
 *   exactly what its targets say;
 * - every lot's write-offs equal its write-off entries;
 * - every entry belongs to an account, and an account merged away holds no points and no lots;
 * - no payment earned more base points than it reserved of its period's earning cap;
 * - no redemption drew more or less than its points;
 * - finance (ledger-check-finance.ts): the liability report equals the projections, operators' daily
 *   grant totals equal their adjustments, every adjustment moved exactly its points, and a payment
 *   and a missing-points claim never both earned.
 * - store credit (store-credit-check-store.ts): balances equal their entries, each store-credit return
 *   issued its amount once, each till return is a refund fact of its payment, merged shoppers hold none.
 * Each is one aggregate query (ledger-check-store.ts), so the check scales with the tables, not with
 * round trips.
 */
import type { Knex } from 'knex';
import { financeViolations } from './ledger-check-finance.js';
import { countRows, runLedgerChecks, type CheckRow } from './ledger-check-store.js';

export interface Violation {
  readonly check: string;
  readonly subject: string;
  readonly detail: Readonly<Record<string, number | string | null>>;
}

export interface CheckReport {
  readonly ok: boolean;
  readonly accounts: number;
  readonly lots: number;
  readonly entries: number;
  readonly violations: readonly Violation[];
}

export async function checkLedger(knex: Knex): Promise<CheckReport> {
  const violations: Violation[] = [];
  for (const check of await runLedgerChecks(knex)) {
    for (const row of check.rows) {
      const { [check.subject]: subject, ...detail } = row;
      violations.push({ check: check.name, subject: String(subject), detail: numeric(detail) });
    }
  }
  for (const v of await financeViolations(knex)) violations.push({ ...v, detail: numeric(v.detail) });
  return {
    ok: violations.length === 0,
    accounts: await countRows(knex, 'loyalty_accounts'),
    lots: await countRows(knex, 'loyalty_lots'),
    entries: await countRows(knex, 'loyalty_entries'),
    violations,
  };
}

/** `sum()` of bigints is numeric, which both drivers return as a string. */
function numeric(row: CheckRow): CheckRow {
  return Object.fromEntries(
    Object.entries(row).map(([k, v]) => [k, typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : v]),
  );
}
