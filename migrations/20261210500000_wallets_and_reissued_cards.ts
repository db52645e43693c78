/**
 * Issue 22, wallets and reissued cards.
 *
 * - `payments.wallet_type` and `payments.token_last4`: a payment made with a device/network token
 *   (Apple Pay, Google Pay…) is recorded on the plastic card it resolved to (by PAR); the wallet and
 *   the last four digits of the device token are kept on the payment, never as a card. Both are
 *   constrained: a known wallet name, exactly four digits.
 * - `cards.replaced_by` / `cards.replaced_at`: a card-updater event (reissue, new number) links the
 *   new card to the old card's shopper and marks the old one replaced (audited: `card.replaced`).
 *
 * Both tables' card-data guard triggers are re-attached so they read the new text columns.
 */
import type { Knex } from 'knex';

/** A frozen copy of src/payments/payment-event.ts WALLET_TYPES (a migration never changes). */
const WALLET_TYPES = [
  'apple_pay',
  'google_pay',
  'samsung_pay',
  'click_to_pay',
  'masterpass',
  'visa_checkout',
  'amex_express_checkout',
  'link',
  'other',
] as const;

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('payments', (t) => {
    t.text('wallet_type');
    t.text('token_last4');
  });
  await knex.raw(
    `alter table payments add constraint payments_wallet_type_check
       check (wallet_type is null or wallet_type in (${WALLET_TYPES.map((w) => `'${w}'`).join(', ')}))`,
  );
  await knex.raw(
    `alter table payments add constraint payments_token_last4_check
       check (token_last4 is null or token_last4 ~ '^[0-9]{4}$')`,
  );
  await knex.schema.alterTable('cards', (t) => {
    t.text('replaced_by').references('cards.token');
    t.timestamp('replaced_at', { useTz: true });
  });
  await knex.raw(
    `alter table cards add constraint cards_replaced_check
       check ((replaced_by is null) = (replaced_at is null) and replaced_by is distinct from token)`,
  );
  await knex.raw('select card_data_guard_attach(?)', ['payments']);
  await knex.raw('select card_data_guard_attach(?)', ['cards']);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('alter table cards drop constraint cards_replaced_check');
  await knex.schema.alterTable('cards', (t) => {
    t.dropColumn('replaced_by');
    t.dropColumn('replaced_at');
  });
  await knex.raw('alter table payments drop constraint payments_token_last4_check');
  await knex.raw('alter table payments drop constraint payments_wallet_type_check');
  await knex.schema.alterTable('payments', (t) => {
    t.dropColumn('wallet_type');
    t.dropColumn('token_last4');
  });
  await knex.raw('select card_data_guard_attach(?)', ['payments']);
  await knex.raw('select card_data_guard_attach(?)', ['cards']);
}
