/**
 * Outbound events (issue 8): subscriptions of CRM / app back ends, their signing secrets (encrypted
 * under `pan-encryption`, like member e-mails, so `keys reencrypt` rotates them), the transactional
 * outbox, one delivery row per (subscription, event) and the record of every delivery attempt.
 *
 * Events carry the shopper reference in their key columns (design: distributable by shopper). An
 * event's `seq` is taken while the transaction that writes it holds the shopper's account lock, so
 * per shopper it follows commit order: the dispatcher delivers a shopper's events by `seq`.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('event_subscriptions', (t) => {
    t.text('id').primary();
    t.text('url').notNullable();
    // The event types wanted, a JSON array of strings (matched with jsonb_exists on the write path).
    t.jsonb('event_types').notNullable();
    t.text('description');
    t.text('state').notNullable();
    t.text('disabled_reason');
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
  });
  await knex.raw(`
    alter table event_subscriptions
      add constraint event_subscriptions_state_check check (state in ('active', 'disabled', 'deleted')),
      add constraint event_subscriptions_disabled_reason_check check (disabled_reason in ('gone'))`);
  // One live subscription per target URL: a retried create finds the first one (409), never a twin.
  await knex.raw(`create unique index event_subscriptions_url on event_subscriptions (url) where state <> 'deleted'`);

  await knex.schema.createTable('event_subscription_secrets', (t) => {
    t.text('id').primary();
    t.text('subscription_id').notNullable().references('event_subscriptions.id');
    // iv ‖ tag ‖ ciphertext of the raw 32-byte secret (base64), AAD bound to this row and key version.
    t.binary('secret_ciphertext').notNullable();
    t.integer('secret_key_version').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    // Null while current; set by a rotation to the end of the overlap during which both secrets sign.
    t.timestamp('expires_at', { useTz: true });
    t.index(['subscription_id']);
    t.index(['secret_key_version']);
  });

  await knex.schema.createTable('outbound_events', (t) => {
    // Derived from the business key of the change (a ledger entry's key): a rerun transaction or a
    // redelivered webhook can never make a second event for one change.
    t.text('id').primary();
    t.text('type').notNullable();
    t.text('shopper_ref').notNullable();
    // The exact JSON that is signed and sent (no PAN, no e-mail: see src/events/event-types.ts).
    t.text('body').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
  });
  await knex.raw(`alter table outbound_events add column seq bigint generated always as identity`);
  await knex.raw(`create unique index outbound_events_shopper_seq on outbound_events (shopper_ref, seq)`);

  await knex.schema.createTable('outbound_deliveries', (t) => {
    t.text('subscription_id').notNullable().references('event_subscriptions.id');
    t.text('event_id').notNullable().references('outbound_events.id');
    t.text('shopper_ref').notNullable();
    t.bigInteger('event_seq').notNullable();
    t.text('state').notNullable();
    t.integer('attempts').notNullable();
    t.timestamp('next_attempt_at', { useTz: true }).notNullable();
    // A claimed delivery is leased: another dispatcher takes it only once the lease has run out.
    t.timestamp('leased_until', { useTz: true });
    t.text('lease_token');
    t.integer('last_status');
    t.text('last_error');
    t.timestamp('delivered_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.primary(['subscription_id', 'event_id']);
  });
  await knex.raw(`
    alter table outbound_deliveries
      add constraint outbound_deliveries_state_check check (state in ('pending', 'delivered', 'dead'))`);
  // The dispatcher's two questions: what is due, and is there an earlier pending event of this shopper.
  await knex.raw(
    `create index outbound_deliveries_due on outbound_deliveries (next_attempt_at) where state = 'pending'`,
  );
  await knex.raw(
    `create index outbound_deliveries_order on outbound_deliveries (subscription_id, shopper_ref, event_seq) where state = 'pending'`,
  );
  await knex.raw(
    `create index outbound_deliveries_listing on outbound_deliveries (subscription_id, created_at desc, event_id desc)`,
  );

  await knex.schema.createTable('outbound_delivery_attempts', (t) => {
    t.text('id').primary();
    t.text('subscription_id').notNullable();
    t.text('event_id').notNullable();
    t.integer('attempt').notNullable();
    t.text('outcome').notNullable();
    t.integer('status_code');
    t.integer('latency_ms').notNullable();
    // A code and a sentence written by this service: never the receiver's body, never a secret.
    t.text('error');
    t.timestamp('attempted_at', { useTz: true }).notNullable();
    t.foreign(['subscription_id', 'event_id'])
      .references(['subscription_id', 'event_id'])
      .inTable('outbound_deliveries');
  });
  await knex.raw(`
    alter table outbound_delivery_attempts
      add constraint outbound_delivery_attempts_outcome_check
        check (outcome in ('delivered', 'failed', 'gone', 'refused', 'timeout'))`);
  await knex.raw(
    `create index outbound_delivery_attempts_listing on outbound_delivery_attempts (subscription_id, attempted_at desc, id desc)`,
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('outbound_delivery_attempts');
  await knex.schema.dropTable('outbound_deliveries');
  await knex.schema.dropTable('outbound_events');
  await knex.schema.dropTable('event_subscription_secrets');
  await knex.schema.dropTable('event_subscriptions');
}
