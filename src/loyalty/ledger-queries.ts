/**
 * Read side of the ledger: a shopper's balance and their entries, newest first, with keyset cursors.
 * A survivor's history includes the entries of the shoppers merged into it (their `merge_out`
 * entries and its `merge_in` cancel out, so the listed points always add up to the balance).
 */
import type { Knex } from 'knex';
import { decodeCursor, encodeCursor } from '../db/keyset-cursor.js';
import type { EntryKind } from './ledger-book.js';
import { mergedInto } from './shoppers.js';

/** Lots expiring within this many days are listed in the balance. */
export const EXPIRING_SOON_DAYS = 30;

export interface Balance {
  readonly shopperReference: string;
  readonly available: number;
  readonly pending: number;
  readonly expiringSoon: readonly { readonly points: number; readonly expiresAt: string }[];
  readonly lifetimeEarned: number;
  readonly asOf: string;
}

export async function balanceOf(db: Knex | Knex.Transaction, shopperRef: string, now: Date): Promise<Balance> {
  const [account, expiring] = await Promise.all([
    db('loyalty_accounts')
      .where({ shopper_ref: shopperRef })
      .first('available', 'pending', 'lifetime_earned') as Promise<
      { available: number; pending: number; lifetime_earned: number } | undefined
    >,
    db('loyalty_lots')
      .where({ shopper_ref: shopperRef })
      .where('remaining', '>', 0)
      .where('expires_at', '<=', new Date(now.getTime() + EXPIRING_SOON_DAYS * 86_400_000))
      .groupBy('expires_at')
      .orderBy('expires_at')
      .select('expires_at')
      .sum({ points: 'remaining' }) as Promise<{ expires_at: Date; points: number | string }[]>,
  ]);
  return {
    shopperReference: shopperRef,
    available: account?.available ?? 0,
    pending: account?.pending ?? 0,
    expiringSoon: expiring.map((e) => ({ points: Number(e.points), expiresAt: e.expires_at.toISOString() })),
    lifetimeEarned: account?.lifetime_earned ?? 0,
    asOf: now.toISOString(),
  };
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

export interface LedgerPage {
  readonly items: readonly LedgerEntry[];
  readonly nextCursor: string | undefined;
}

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
  if (page.cursor !== undefined) {
    const [at, id] = decodeCursor(page.cursor);
    query.where((q) =>
      q.where('created_at', '<', at).orWhere((q2) => q2.where('created_at', '=', at).where('id', '<', id)),
    );
  }
  const rows = (await query) as LedgerEntry[];
  const items = rows.slice(0, page.limit);
  const last = items[items.length - 1];
  return {
    items,
    nextCursor: rows.length > page.limit && last !== undefined ? encodeCursor(last.created_at, last.id) : undefined,
  };
}
