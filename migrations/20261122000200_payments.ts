/**
 * Payment events: the webhook inbox (one row per verified provider event, PAN removed), payments
 * (derived state, linked to a card and shopper) and payment facts (the business events a payment's
 * state is derived from, one per business key).
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('webhook_inbox', (t) => {
    t.text('id').primary();
    t.text('provider').notNullable();
    // The provider's idempotency key: webhook-id, Stripe event id, Adyen psp:eventCode:success.
    t.text('event_key').notNullable();
    t.text('event_type').notNullable();
    t.text('state').notNullable();
    t.text('payment_id');
    t.text('error_code');
    // Which configured secret verified it (0 = first in the list): evidence for secret rotation.
    t.smallint('secret_index').notNullable();
    // The delivery with every PAN replaced by its token. Never the raw bytes.
    t.jsonb('payload').notNullable();
    t.timestamp('received_at', { useTz: true }).notNullable();
    t.timestamp('applied_at', { useTz: true });
    t.integer('replays').notNullable().defaultTo(0);
    t.unique(['provider', 'event_key']);
  });
  await knex.raw(`
    alter table webhook_inbox
      add constraint webhook_inbox_provider_check check (provider in ('platform', 'adyen', 'stripe')),
      add constraint webhook_inbox_state_check check (state in ('applied', 'parked', 'failed', 'ignored'))`);
  // Operators list what needs attention; the common states stay out of this index.
  await knex.raw(
    `create index webhook_inbox_attention on webhook_inbox (state, received_at) where state in ('parked', 'failed')`,
  );
  await knex.raw(`create index webhook_inbox_payment on webhook_inbox (payment_id) where payment_id is not null`);

  await knex.schema.createTable('payments', (t) => {
    t.text('id').primary();
    t.text('provider').notNullable();
    t.text('external_id').notNullable();
    t.text('state').notNullable();
    t.text('card_token').references('cards.token');
    t.text('shopper_ref').references('shoppers.shopper_ref');
    t.text('card_last4');
    t.text('channel');
    t.text('store_id');
    t.text('terminal_id');
    t.text('merchant_reference');
    t.text('currency');
    t.bigInteger('authorised_amount').notNullable().defaultTo(0);
    t.bigInteger('captured_amount').notNullable().defaultTo(0);
    t.bigInteger('refunded_amount').notNullable().defaultTo(0);
    t.bigInteger('charged_back_amount').notNullable().defaultTo(0);
    t.timestamp('authorised_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.unique(['provider', 'external_id']);
  });
  await knex.raw(`
    alter table payments
      add constraint payments_state_check check (state in ('awaiting_authorisation', 'authorisation_failed',
        'authorised', 'cancelled', 'captured', 'partially_refunded', 'refunded', 'charged_back')),
      add constraint payments_channel_check check (channel in ('online', 'in_store', 'mobile', 'call_centre')),
      add constraint payments_amounts_check check (refunded_amount + charged_back_amount <= captured_amount
        and captured_amount <= authorised_amount and refunded_amount >= 0 and charged_back_amount >= 0)`);
  // Purchase history: a shopper's payments, newest first, paged by (authorised_at, id).
  await knex.raw(
    `create index payments_shopper_history on payments (shopper_ref, authorised_at desc, id desc) where shopper_ref is not null`,
  );

  await knex.schema.createTable('payment_facts', (t) => {
    t.text('payment_id').notNullable().references('payments.id');
    t.text('kind').notNullable();
    t.text('fact_key').notNullable();
    t.bigInteger('amount');
    t.text('currency');
    t.timestamp('occurred_at', { useTz: true }).notNullable();
    t.text('inbox_id').notNullable().references('webhook_inbox.id');
    t.primary(['payment_id', 'kind', 'fact_key']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('payment_facts');
  await knex.schema.dropTable('payments');
  await knex.schema.dropTable('webhook_inbox');
}
