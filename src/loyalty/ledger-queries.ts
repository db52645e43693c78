/**
 * Read side of the ledger: a shopper's balance and their entries, newest first, with keyset cursors
 * (the statements are in ledger-store.ts). A survivor's history includes the entries of the shoppers
 * merged into it (their `merge_out` entries and its `merge_in` cancel out, so the listed points always
 * add up to the balance).
 */
import type { Knex } from 'knex';
import type { Page } from '../db/keyset-cursor.js';
import { balanceFrom, EXPIRING_SOON_DAYS, type Balance } from './balance.js';
import { mergedInto } from '../shoppers/shopper-access.js';
import { balanceRow, entriesOf, lotsOfPayments, type LedgerEntry, type LotRow } from './ledger-store.js';

export type { LedgerEntry } from './ledger-store.js';
export type PaymentLot = LotRow;

/** The lots of these payments (what each earned, and why), by payment id; unlocked, a read. */
export function paymentLots(db: Knex, paymentIds: readonly string[]): Promise<Map<string, PaymentLot>> {
  return lotsOfPayments(db, paymentIds);
}

/** The account (zeros when it has none yet) and its lots expiring within 30 days, in one statement. */
export async function balanceOf(db: Knex | Knex.Transaction, shopperRef: string, now: Date): Promise<Balance> {
  const horizon = new Date(now.getTime() + EXPIRING_SOON_DAYS * 86_400_000);
  const row = await balanceRow(db, shopperRef, horizon);
  return balanceFrom(
    { shopper_ref: shopperRef, available: row.available, pending: row.pending, lifetime_earned: row.lifetime_earned },
    row.lots,
    now,
  );
}

export type LedgerPage = Page<LedgerEntry>;

export async function listLedger(
  db: Knex,
  shopperRef: string,
  page: { readonly limit: number; readonly cursor?: string },
): Promise<LedgerPage> {
  const refs = [shopperRef, ...(await mergedInto(db, shopperRef))];
  return entriesOf(db, refs, page);
}
