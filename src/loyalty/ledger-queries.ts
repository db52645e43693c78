/**
 * Read side of the ledger: a shopper's balance and their entries, newest first, with keyset cursors.
 * A survivor's history includes the entries of the shoppers merged into it (their `merge_out`
 * entries and its `merge_in` cancel out, so the listed points always add up to the balance).
 */
import type { Knex } from 'knex';
import { afterCursor, pageOf, type Page } from '../db/keyset-cursor.js';
import type { EntryKind } from './ledger-book.js';
import { balanceFrom, EXPIRING_SOON_DAYS, type Balance } from './balance.js';
import { mergedInto } from '../shoppers/shopper-access.js';

/**
 * One round trip: the account (zeros when it has none yet) and its lots expiring within 30 days.
 * The lots ride along as JSON so the read needs one statement and one pool checkout.
 */
export async function balanceOf(db: Knex | Knex.Transaction, shopperRef: string, now: Date): Promise<Balance> {
  const horizon = new Date(now.getTime() + EXPIRING_SOON_DAYS * 86_400_000);
  const result = (await db.raw(
    `select coalesce(a.available, 0) as available, coalesce(a.pending, 0) as pending,
            coalesce(a.lifetime_earned, 0) as lifetime_earned,
            (select coalesce(json_agg(json_build_object('remaining', l.remaining, 'expires_at', l.expires_at)), '[]')
               from loyalty_lots l
              where l.shopper_ref = ? and l.remaining > 0 and l.expires_at <= ?) as lots
       from (select 1) as one left join loyalty_accounts a on a.shopper_ref = ?`,
    [shopperRef, horizon, shopperRef],
  )) as { rows: { available: number; pending: number; lifetime_earned: number; lots: unknown }[] };
  const row = result.rows[0] as { available: number; pending: number; lifetime_earned: number; lots: unknown };
  const lots = (typeof row.lots === 'string' ? JSON.parse(row.lots) : row.lots) as {
    remaining: number;
    expires_at: string;
  }[];
  return balanceFrom(
    { shopper_ref: shopperRef, available: row.available, pending: row.pending, lifetime_earned: row.lifetime_earned },
    lots.map((l) => ({ remaining: Number(l.remaining), expires_at: new Date(l.expires_at) })),
    now,
  );
}

export interface LedgerEntry {
  readonly id: string;
  readonly shopper_ref: string;
  readonly kind: EntryKind;
  readonly points: number;
  readonly available_delta: number;
  readonly pending_delta: number;
  readonly lot_id: string | null;
  readonly payment_id: string | null;
  readonly redemption_id: string | null;
  readonly rule_version: number | null;
  readonly created_at: Date;
}

export type LedgerPage = Page<LedgerEntry>;

export async function listLedger(
  db: Knex,
  shopperRef: string,
  page: { readonly limit: number; readonly cursor?: string },
): Promise<LedgerPage> {
  const refs = [shopperRef, ...(await mergedInto(db, shopperRef))];
  const query = db('loyalty_entries')
    .whereIn('shopper_ref', refs)
    .orderBy([
      { column: 'created_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])
    .limit(page.limit + 1)
    .select(
      'id',
      'shopper_ref',
      'kind',
      'points',
      'available_delta',
      'pending_delta',
      'lot_id',
      'payment_id',
      'redemption_id',
      'rule_version',
      'created_at',
    );
  afterCursor(query, page.cursor, 'created_at', 'id');
  return pageOf((await query) as LedgerEntry[], page.limit, (last) => [last.created_at, last.id]);
}
