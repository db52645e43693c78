/**
 * SQL of membership and merges: account contact details, and what a merge moves besides the ledger
 * (lots, redemptions, idempotency keys, the merge record). Functions take the member service's
 * transaction; the accounts are locked by then (LedgerBook), so these take no locks of their own.
 */
import type { Knex } from 'knex';
import type { AccountRow } from './ledger-store.js';

/** Whether another shopper holds this external member id. */
export async function externalIdTaken(
  trx: Knex.Transaction,
  externalMemberId: string,
  except: string,
): Promise<boolean> {
  const taken = (await trx('loyalty_accounts')
    .where({ external_member_id: externalMemberId })
    .whereNot({ shopper_ref: except })
    .first('shopper_ref')) as unknown;
  return taken !== undefined;
}

export async function updateAccount(
  trx: Knex.Transaction,
  shopperRef: string,
  update: Readonly<Record<string, unknown>>,
): Promise<AccountRow> {
  const [row] = (await trx('loyalty_accounts')
    .where({ shopper_ref: shopperRef })
    .update(update)
    .returning('*')) as AccountRow[];
  return row as AccountRow;
}

/** The merges recorded for any of these references (as the absorbed one). */
export async function mergesOf(
  trx: Knex.Transaction,
  refs: readonly string[],
): Promise<{ merged_ref: string; survivor_ref: string }[]> {
  return (await trx('shopper_merges').whereIn('merged_ref', refs).select()) as {
    merged_ref: string;
    survivor_ref: string;
  }[];
}

/** Moves the absorbed shopper's lots and redemptions; the number of lots moved. */
export async function moveLotsAndRedemptions(
  trx: Knex.Transaction,
  absorbed: string,
  survivor: string,
): Promise<number> {
  const lots = await trx('loyalty_lots').where({ shopper_ref: absorbed }).update({ shopper_ref: survivor });
  await trx('loyalty_redemptions').where({ shopper_ref: absorbed }).update({ shopper_ref: survivor });
  return lots;
}

/** Redemptions retried under the absorbed reference (after a 308) still find their key. */
export async function moveRedemptionKeys(trx: Knex.Transaction, absorbed: string, survivor: string): Promise<void> {
  await trx('idempotency_keys')
    .where({ scope: `redemption:${absorbed}` })
    .whereNotIn(
      'key',
      trx('idempotency_keys')
        .where({ scope: `redemption:${survivor}` })
        .select('key'),
    )
    .update({ scope: `redemption:${survivor}` });
}

/**
 * Records the merge: the absorbed account (and any merged into it) points at the survivor, as do
 * earlier merges into the absorbed one (merges stay one hop), and the merge itself is recorded.
 */
export async function recordMerge(
  trx: Knex.Transaction,
  absorbed: string,
  survivor: string,
  mergedBy: string,
  now: Date,
): Promise<void> {
  await trx('loyalty_accounts').where({ shopper_ref: absorbed }).update({ merged_into: survivor });
  await trx('loyalty_accounts').where({ merged_into: absorbed }).update({ merged_into: survivor });
  await trx('shopper_merges').where({ survivor_ref: absorbed }).update({ survivor_ref: survivor });
  await trx('shopper_merges').insert({
    merged_ref: absorbed,
    survivor_ref: survivor,
    merged_by: mergedBy,
    merged_at: now,
  });
}

/** Erases an account's contact details (an absorbed shopper keeps none). */
export async function clearContact(trx: Knex.Transaction, shopperRef: string): Promise<void> {
  await trx('loyalty_accounts')
    .where({ shopper_ref: shopperRef })
    .update({ email_ciphertext: null, email_key_version: null, external_member_id: null });
}
