/**
 * The points liability report (liability.ts defines every figure): read from the ledger's entries in
 * one repeatable-read transaction, so its figures are of one moment and add up. Used by
 * `GET /v1/admin/loyalty/liability`, `npm run loyalty -- liability` and `loyalty check`.
 */
import type { Knex } from 'knex';
import { AppError } from '../errors/app-error.js';
import { liabilityReport, type Liability, type LiabilityFigures } from './liability.js';
import { availableByKind, lapsedLots, ledgerSums, lotsByExpiryMonth, shopperSums } from './liability-store.js';
import { liabilityTiersAsOf, NO_TIER } from './liability-tiers.js';

export interface LiabilityOptions {
  readonly now: () => Date;
  /** The value of one point per currency, as decimal strings (`{ EUR: '0.01' }`). */
  readonly pointValues: Readonly<Record<string, string>>;
}

export class LiabilityService {
  constructor(
    private readonly knex: Knex,
    private readonly options: LiabilityOptions,
  ) {}

  /** The liability as of `asOf` (default now), with the flows of [from, asOf] (default: all history). */
  async report(query: { readonly asOf?: Date; readonly from?: Date } = {}): Promise<Liability> {
    const asOf = query.asOf ?? this.options.now();
    const from = query.from ?? null;
    if (from !== null && from > asOf) {
      throw new AppError('VALIDATION_FAILED', { detail: 'The period must start before asOf.' });
    }
    const figures = await this.knex.transaction(async (trx) => figuresOf(trx, asOf, from), {
      isolationLevel: 'repeatable read',
      readOnly: true,
    });
    return liabilityReport(figures, asOf, from, this.options.pointValues);
  }
}

/** Every figure of the report from the entries as of `asOf` (null: all of them, for the check). */
export async function figuresOf(
  db: Knex | Knex.Transaction,
  asOf: Date | null,
  from: Date | null,
): Promise<LiabilityFigures> {
  const closing = await ledgerSums(db, asOf);
  const opening = from === null ? { available: 0, pending: 0, debt: 0 } : await ledgerSums(db, from, true);
  const tiers = await liabilityTiersAsOf(db, asOf ?? new Date());
  let byTier: LiabilityFigures['byTier'];
  if (tiers === NO_TIER) {
    byTier = [{ tier: NO_TIER, available: closing.available, pending: closing.pending }];
  } else {
    const sums = new Map<string, { tier: string; available: number; pending: number }>();
    for (const s of await shopperSums(db, asOf)) {
      const tier = tiers.get(s.shopperRef) ?? NO_TIER;
      const sum = sums.get(tier) ?? { tier, available: 0, pending: 0 };
      sum.available += s.available;
      sum.pending += s.pending;
      sums.set(tier, sum);
    }
    byTier = [...sums.values()].sort((a, b) => (a.tier < b.tier ? -1 : 1));
  }
  return {
    closing,
    opening,
    lotsByExpiryMonth: await lotsByExpiryMonth(db, asOf),
    periodByKind: await availableByKind(db, from, asOf),
    byTier,
    breakage: await lapsedLots(db, asOf),
  };
}
