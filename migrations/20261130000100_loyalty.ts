/**
 * Loyalty: programme rule versions, member accounts (maintained balances), point lots (one per earning
 * payment), the append-only ledger, redemptions, shopper merges and client idempotency keys.
 *
 * The ledger (`loyalty_entries`) is the truth and is never updated or deleted. `loyalty_accounts` and
 * `loyalty_lots` are projections of it, written in the same transaction as the entries that move
 * them; `npm run loyalty -- check` proves they agree. Every entry carries a unique business key, so
 * an effect applied twice fails on the index instead of counting twice.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('loyalty_programme_versions', (t) => {
    t.integer('version').primary();
    t.jsonb('rules').notNullable();
    // A payment earns under the version in force when it was authorised.
    t.timestamp('effective_from', { useTz: true }).notNullable();
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
  });
  await knex.raw(
    `alter table loyalty_programme_versions add constraint loyalty_programme_version_check check (version >= 1)`,
  );
  await knex('loyalty_programme_versions').insert({
    version: 1,
    rules: JSON.stringify({
      pointsPerUnit: 1,
      currencyPointsPerUnit: {},
      channelMultipliers: {},
      minimumAmount: {},
      autoCaptureChannels: ['in_store'],
      pointsLifetimeMonths: 12,
      negativeBalanceAllowance: 0,
    }),
    effective_from: new Date(0),
    created_by: 'migration',
    created_at: new Date(),
  });

  await knex.schema.createTable('loyalty_accounts', (t) => {
    t.text('shopper_ref').primary().references('shoppers.shopper_ref');
    // available = Σ remaining of the shopper's lots − debt; debt is what a negative balance owes.
    t.bigInteger('available').notNullable().defaultTo(0);
    t.bigInteger('pending').notNullable().defaultTo(0);
    t.bigInteger('debt').notNullable().defaultTo(0);
    t.bigInteger('lifetime_earned').notNullable().defaultTo(0);
    t.timestamp('enrolled_at', { useTz: true });
    // AES-256-GCM under the pan-encryption data key (AAD: shopper ref, purpose, key version).
    t.binary('email_ciphertext');
    t.integer('email_key_version');
    t.text('external_member_id');
    // Set by a merge, on the row every writer locks: a writer that waited for a merge sees it here.
    t.text('merged_into').references('shoppers.shopper_ref');
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
  });
  await knex.raw(`
    alter table loyalty_accounts
      add constraint loyalty_accounts_amounts_check check (pending >= 0 and debt >= 0 and lifetime_earned >= 0),
      add constraint loyalty_accounts_email_pair_check check ((email_ciphertext is null) = (email_key_version is null))`);
  await knex.raw(
    `create unique index loyalty_accounts_external_member on loyalty_accounts (external_member_id) where external_member_id is not null`,
  );
  await knex.raw(
    `create index loyalty_accounts_email_key_version on loyalty_accounts (email_key_version) where email_key_version is not null`,
  );

  // A merged shopper points at the one it became; its reference keeps resolving to the survivor.
  await knex.schema.createTable('shopper_merges', (t) => {
    t.text('merged_ref').primary().references('shoppers.shopper_ref');
    t.text('survivor_ref').notNullable().references('shoppers.shopper_ref');
    t.text('merged_by').notNullable();
    t.timestamp('merged_at', { useTz: true }).notNullable();
    t.index(['survivor_ref']);
  });

  await knex.schema.createTable('loyalty_lots', (t) => {
    t.text('id').primary();
    t.text('shopper_ref').notNullable().references('shoppers.shopper_ref');
    t.text('payment_id').notNullable().unique().references('payments.id');
    t.integer('rule_version').notNullable().references('loyalty_programme_versions.version');
    t.bigInteger('pending').notNullable().defaultTo(0);
    // What the payment's facts say it should earn and should have reversed (round(earn × share)).
    t.bigInteger('earn_target').notNullable().defaultTo(0);
    t.bigInteger('reversal_target').notNullable().defaultTo(0);
    // Points credited to the balance, taken back from the balance, and written off when they could
    // not be taken back (already spent, beyond the negative allowance).
    t.bigInteger('credited').notNullable().defaultTo(0);
    t.bigInteger('recovered').notNullable().defaultTo(0);
    t.bigInteger('written_off').notNullable().defaultTo(0);
    // Available points still in this lot (what redemptions and expiry draw from).
    t.bigInteger('remaining').notNullable().defaultTo(0);
    t.bigInteger('expired').notNullable().defaultTo(0);
    // Effects booked for the payment so far: numbers each one's business key (`payment:<id>:<n>`).
    t.integer('effects').notNullable().defaultTo(0);
    t.timestamp('available_at', { useTz: true });
    t.timestamp('expires_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
  });
  await knex.raw(`
    alter table loyalty_lots
      add constraint loyalty_lots_amounts_check check (pending >= 0 and remaining >= 0 and credited >= 0
        and recovered >= 0 and written_off >= 0 and expired >= 0 and reversal_target <= earn_target)`);
  // Redemptions draw the soonest-expiring lots first; expiry finds lots past their date.
  await knex.raw(
    `create index loyalty_lots_spendable on loyalty_lots (shopper_ref, expires_at, id) where remaining > 0`,
  );
  await knex.raw(`create index loyalty_lots_expiring on loyalty_lots (expires_at) where remaining > 0`);

  await knex.schema.createTable('loyalty_redemptions', (t) => {
    t.text('id').primary();
    t.text('shopper_ref').notNullable().references('shoppers.shopper_ref');
    t.bigInteger('points').notNullable();
    t.text('reference').notNullable();
    t.text('description');
    t.text('state').notNullable();
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('reversed_at', { useTz: true });
    t.text('reversed_by');
  });
  await knex.raw(`
    alter table loyalty_redemptions
      add constraint loyalty_redemptions_points_check check (points > 0),
      add constraint loyalty_redemptions_state_check check (state in ('completed', 'reversed'))`);

  await knex.schema.createTable('loyalty_entries', (t) => {
    t.text('id').primary();
    t.text('shopper_ref').notNullable().references('shoppers.shopper_ref');
    t.text('kind').notNullable();
    // The figure shown to the shopper, and the entry's exact effect on each projection.
    t.bigInteger('points').notNullable();
    t.bigInteger('available_delta').notNullable();
    t.bigInteger('pending_delta').notNullable();
    t.bigInteger('lot_delta').notNullable();
    t.bigInteger('debt_delta').notNullable();
    t.text('lot_id').references('loyalty_lots.id');
    t.text('payment_id').references('payments.id');
    t.text('redemption_id').references('loyalty_redemptions.id');
    t.integer('rule_version');
    // Exactly once: e.g. `payment:<id>:7` (the 7th effect of that payment), `redemption:<id>:lot:<lot>`.
    t.text('business_key').notNullable().unique();
    t.timestamp('created_at', { useTz: true }).notNullable();
  });
  await knex.raw(`
    alter table loyalty_entries
      add constraint loyalty_entries_kind_check check (kind in ('earn_pending', 'pending_voided', 'earn',
        'earn_voided', 'reversal', 'reversal_cancelled', 'written_off', 'write_off_cancelled', 'debt_settled',
        'redemption', 'redemption_reversed', 'expiry', 'merge_in', 'merge_out'))`);
  await knex.raw(`create index loyalty_entries_history on loyalty_entries (shopper_ref, created_at desc, id desc)`);
  await knex.raw(`create index loyalty_entries_lot on loyalty_entries (lot_id) where lot_id is not null`);
  await knex.raw(`create index loyalty_entries_payment on loyalty_entries (payment_id) where payment_id is not null`);

  // Client idempotency (`Idempotency-Key`): the first successful response, replayed for the same
  // request, refused for another. Kept at least 30 days (gateways retry that long).
  await knex.schema.createTable('idempotency_keys', (t) => {
    t.text('scope').notNullable();
    t.text('key').notNullable();
    t.text('request_hash').notNullable();
    t.smallint('status').notNullable();
    t.jsonb('response').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.primary(['scope', 'key']);
  });
  await knex.raw(`create index idempotency_keys_expiry on idempotency_keys (expires_at)`);
}

export async function down(knex: Knex): Promise<void> {
  for (const table of [
    'idempotency_keys',
    'loyalty_entries',
    'loyalty_redemptions',
    'loyalty_lots',
    'shopper_merges',
    'loyalty_accounts',
    'loyalty_programme_versions',
  ]) {
    await knex.schema.dropTableIfExists(table);
  }
}
