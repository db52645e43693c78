/**
 * Authorisation holds that expire, and abuse controls (issue 21).
 *
 * - `loyalty_entries.kind` admits the hold kinds that say what happened to pending points: `hold`
 *   (held at authorisation), `hold_captured` (turned into earned points by a capture),
 *   `hold_released` (the part a smaller capture did not take), `hold_expired` (the hold window lapsed
 *   without a capture) and `hold_cancelled` (the authorisation was cancelled or failed). Rows written
 *   before keep `earn_pending` and `pending_voided`: history is never rewritten (the ledger check
 *   and the `points.*` events read both), and new rows never use the old kinds.
 * - `loyalty_lots.hold_expires_at`: when the payment's hold lapses (its authorisation time plus the
 *   hold window of the programme version it earns under; null: never); `hold_expired_at`: when the
 *   release job released it (null: not released). Once released, pending stays 0 for that payment.
 * - `loyalty_lots.cap_period`/`cap_reserved`: the per-shopper earning cap's period the payment counts
 *   in (the start of its authorisation's period) and the points of the cap it reserved; the base
 *   points never exceed the reservation (`loyalty check` proves it).
 * - An index for the redemption velocity limit (a shopper's redemptions in a window).
 */
import type { Knex } from 'knex';

const OLD_KINDS = [
  'earn_pending',
  'pending_voided',
  'earn',
  'earn_voided',
  'reversal',
  'reversal_cancelled',
  'written_off',
  'write_off_cancelled',
  'debt_settled',
  'redemption',
  'redemption_reversed',
  'expiry',
  'merge_in',
  'merge_out',
];
const HOLD_KINDS = ['hold', 'hold_captured', 'hold_released', 'hold_expired', 'hold_cancelled'];

async function kindCheck(knex: Knex, kinds: readonly string[]): Promise<void> {
  await knex.raw(`alter table loyalty_entries drop constraint loyalty_entries_kind_check`);
  await knex.raw(
    `alter table loyalty_entries add constraint loyalty_entries_kind_check check (kind in (${kinds
      .map((k) => `'${k}'`)
      .join(', ')}))`,
  );
}

export async function up(knex: Knex): Promise<void> {
  await kindCheck(knex, [...OLD_KINDS, ...HOLD_KINDS]);
  await knex.schema.alterTable('loyalty_lots', (t) => {
    t.timestamp('hold_expires_at', { useTz: true });
    t.timestamp('hold_expired_at', { useTz: true });
    t.timestamp('cap_period', { useTz: true });
    t.bigInteger('cap_reserved');
  });
  await knex.raw(`
    alter table loyalty_lots
      add constraint loyalty_lots_cap_check check (cap_reserved is null or (cap_reserved >= 0
        and cap_period is not null))`);
  // The release job finds lots whose hold lapsed with points still pending.
  await knex.raw(
    `create index loyalty_lots_holds_due on loyalty_lots (hold_expires_at)
       where pending > 0 and hold_expired_at is null`,
  );
  // The earning cap sums a shopper's reservations in one period.
  await knex.raw(
    `create index loyalty_lots_cap_period on loyalty_lots (shopper_ref, cap_period) where cap_period is not null`,
  );
  await knex.raw(`create index loyalty_redemptions_recent on loyalty_redemptions (shopper_ref, created_at)`);
  // No new text column; the guard is re-attached so its per-table trigger covers the table as it is now.
  await knex.raw('select card_data_guard_attach(?)', ['loyalty_lots']);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`drop index if exists loyalty_redemptions_recent`);
  await knex.raw(`drop index if exists loyalty_lots_cap_period`);
  await knex.raw(`drop index if exists loyalty_lots_holds_due`);
  await knex.raw(`alter table loyalty_lots drop constraint if exists loyalty_lots_cap_check`);
  await knex.schema.alterTable('loyalty_lots', (t) => {
    t.dropColumn('hold_expires_at');
    t.dropColumn('hold_expired_at');
    t.dropColumn('cap_period');
    t.dropColumn('cap_reserved');
  });
  await kindCheck(knex, OLD_KINDS);
}
