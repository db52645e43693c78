/**
 * SQL of holds that lapse and of the earning cap (programme-controls.ts says what they mean). Lots
 * are written only under their shopper's account lock, so the reads that decide (a shopper's due
 * holds, the cap used in a period) run under that lock.
 */
import type { Knex } from 'knex';
import { lotsFromStore, type LotRow } from './ledger-store.js';

type Db = Knex | Knex.Transaction;

/** Up to `limit` shoppers with a hold lapsed by `now` and still pending, except those given. */
export async function shoppersWithDueHolds(
  db: Db,
  now: Date,
  except: readonly string[],
  limit: number,
): Promise<string[]> {
  const rows = (await db('loyalty_lots')
    .distinct('shopper_ref')
    .where('pending', '>', 0)
    .whereNull('hold_expired_at')
    .where('hold_expires_at', '<=', now)
    .whereNotIn('shopper_ref', [...except])
    .limit(limit)) as { shopper_ref: string }[];
  return rows.map((r) => r.shopper_ref);
}

/** The shopper's lots whose hold lapsed by `now` with points still pending (under its account lock). */
export async function dueHoldLots(trx: Knex.Transaction, shopperRef: string, now: Date): Promise<LotRow[]> {
  return lotsFromStore(
    (await trx('loyalty_lots')
      .where({ shopper_ref: shopperRef })
      .where('pending', '>', 0)
      .whereNull('hold_expired_at')
      .where('hold_expires_at', '<=', now)
      .orderBy('id')) as LotRow[],
  );
}

/** What the shopper's payments reserved of the earning cap in the period starting at `period`. */
export async function capReserved(trx: Knex.Transaction, shopperRef: string, period: Date): Promise<number> {
  const row = (await trx('loyalty_lots')
    .where({ shopper_ref: shopperRef, cap_period: period })
    .first(trx.raw('coalesce(sum(cap_reserved), 0) as reserved'))) as { reserved: number | string } | undefined;
  return Number(row?.reserved ?? 0);
}
