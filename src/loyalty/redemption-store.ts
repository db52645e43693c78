/**
 * SQL of redemptions beyond the ledger's writes (ledger-store.ts): what a redemption drew (to give it
 * back), who paid a debt, and a shopper's recent redemptions (the velocity limit). Functions take the
 * caller's transaction, which holds the shopper's account lock.
 */
import type { Knex } from 'knex';
import type { RecentRedemption } from './programme-controls.js';

/** The entries a redemption drew: one per lot, and one for the part that went into debt (no lot). */
export async function redemptionDraws(
  trx: Knex.Transaction,
  redemptionId: string,
): Promise<{ lot_id: string | null; points: number }[]> {
  return (await trx('loyalty_entries')
    .where({ redemption_id: redemptionId, kind: 'redemption' })
    .select('lot_id', 'points')) as { lot_id: string | null; points: number }[];
}

/** The lot that last settled a debt of these shoppers (a shopper and those merged into it). */
export async function lastDebtSettler(
  trx: Knex.Transaction,
  shopperRefs: readonly string[],
): Promise<string | undefined> {
  const row = (await trx('loyalty_entries')
    .whereIn('shopper_ref', shopperRefs)
    .where({ kind: 'debt_settled' })
    .orderBy([
      { column: 'created_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])
    .first('lot_id')) as { lot_id: string } | undefined;
  return row?.lot_id;
}

/** The shopper's redemptions made after `since` (reversed ones too), oldest first. */
export async function recentRedemptions(
  trx: Knex.Transaction,
  shopperRef: string,
  since: Date,
): Promise<RecentRedemption[]> {
  const rows = (await trx('loyalty_redemptions')
    .where({ shopper_ref: shopperRef })
    .where('created_at', '>', since)
    .orderBy('created_at')
    .select('points', 'created_at')) as { points: number | string; created_at: Date }[];
  return rows.map((r) => ({ points: Number(r.points), createdAt: r.created_at }));
}
