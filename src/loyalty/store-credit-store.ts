/**
 * SQL of store credit (issue 22): a currency-denominated balance per shopper and its append-only
 * entries. Every writer holds the shopper's `loyalty_accounts` lock (LedgerBook.open) first, the lock
 * every ledger writer takes, so a balance row needs no lock order of its own; it is still read
 * `for update`, and the table's check keeps it from going below zero whatever a writer does.
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

export type StoreCreditKind = 'issued' | 'spent' | 'merge_in' | 'merge_out';

export interface StoreCreditEntryRow {
  readonly id: string;
  readonly shopper_ref: string;
  readonly currency: string;
  readonly kind: StoreCreditKind;
  /** Signed minor units. */
  readonly amount: number;
  readonly return_id: string | null;
  readonly reference: string | null;
  readonly description: string | null;
  readonly created_by: string;
  readonly business_key: string;
  readonly created_at: Date;
}

export interface StoreCreditBalanceRow {
  readonly shopper_ref: string;
  readonly currency: string;
  readonly balance: number;
  readonly issued: number;
  readonly spent: number;
}

/** The shopper's balance in `currency`, locked (under the account lock the caller holds). */
export async function lockedBalance(
  trx: Knex.Transaction,
  shopperRef: string,
  currency: string,
): Promise<StoreCreditBalanceRow | undefined> {
  return (await trx('store_credit_balances').where({ shopper_ref: shopperRef, currency }).forUpdate().first()) as
    StoreCreditBalanceRow | undefined;
}

/** Whether an entry with this business key exists (an operation already booked). */
export async function entryByKey(trx: Knex.Transaction, key: string): Promise<StoreCreditEntryRow | undefined> {
  return (await trx('store_credit_entries').where({ business_key: key }).first()) as StoreCreditEntryRow | undefined;
}

/**
 * Appends an entry and moves the balance with it: one projection change per entry, in the same
 * transaction. `issued`/`spent` count what was issued and spent (merges move only the balance).
 */
export async function bookEntry(trx: Knex.Transaction, entry: StoreCreditEntryRow): Promise<StoreCreditBalanceRow> {
  await trx('store_credit_entries').insert(entry);
  const issued = entry.kind === 'issued' ? entry.amount : 0;
  const spent = entry.kind === 'spent' ? -entry.amount : 0;
  // Created at zero first: an upsert checks its insert row's constraints too, and a spend's is negative.
  await trx.raw(
    `insert into store_credit_balances (shopper_ref, currency, created_at, updated_at)
     values (?, ?, ?, ?) on conflict (shopper_ref, currency) do nothing`,
    [entry.shopper_ref, entry.currency, entry.created_at, entry.created_at],
  );
  const result = (await trx.raw(
    `update store_credit_balances
        set balance = balance + ?, issued = issued + ?, spent = spent + ?, updated_at = ?
      where shopper_ref = ? and currency = ?
      returning shopper_ref, currency, balance, issued, spent`,
    [entry.amount, issued, spent, entry.created_at, entry.shopper_ref, entry.currency],
  )) as { rows: StoreCreditBalanceRow[] };
  return result.rows[0] as StoreCreditBalanceRow;
}

/** The shopper's store-credit balances, by currency (those with none are absent). */
export async function balancesOf(db: Db, shopperRefs: readonly string[]): Promise<StoreCreditBalanceRow[]> {
  if (shopperRefs.length === 0) return [];
  return (await db('store_credit_balances')
    .whereIn('shopper_ref', shopperRefs)
    .where('balance', '>', 0)
    .orderBy('currency')
    .select('shopper_ref', 'currency', 'balance', 'issued', 'spent')) as StoreCreditBalanceRow[];
}

/** Every balance of the shopper, locked (a merge moves them all). */
export async function allBalancesLocked(trx: Knex.Transaction, shopperRef: string): Promise<StoreCreditBalanceRow[]> {
  return (await trx('store_credit_balances')
    .where({ shopper_ref: shopperRef })
    .where('balance', '>', 0)
    .orderBy('currency')
    .forUpdate()) as StoreCreditBalanceRow[];
}
