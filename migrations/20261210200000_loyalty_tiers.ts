/**
 * Loyalty tiers (issue 21).
 *
 * `loyalty_tier_changes` is a shopper's tier history, append-only (the database refuses UPDATE and
 * DELETE): each row is a change (upgrade, refund drop, review's downgrade or renewal), numbered per
 * shopper from 1, so two writers of the same change collide on the key; the newest row is the
 * shopper's state, and a payment's tier is the one its row at authorisation names.
 * `loyalty_tier_qualifying` keeps each earning payment's qualifying spend and authorisation time
 * (updated by the earning transaction as captures and refunds arrive). `loyalty_lots.tier` pins the
 * tier (name and multiplier) a payment earns with, decided at its authorisation.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('loyalty_tier_changes', (t) => {
    t.text('shopper_ref').notNullable();
    t.integer('seq').notNullable();
    t.text('tier').notNullable();
    t.text('floor_tier').notNullable();
    t.text('previous_tier').notNullable();
    t.text('reason').notNullable();
    t.bigInteger('figure').notNullable();
    t.timestamp('period_start', { useTz: true }).notNullable();
    t.timestamp('review_at', { useTz: true });
    t.integer('programme_version').notNullable();
    t.timestamp('changed_at', { useTz: true }).notNullable();
    t.primary(['shopper_ref', 'seq']);
  });
  await knex.raw(
    `alter table loyalty_tier_changes add constraint loyalty_tier_changes_reason_check
       check (reason in ('upgrade', 'refund', 'downgrade', 'renewed') and seq >= 1)`,
  );
  await knex.raw(
    'create index loyalty_tier_changes_review_at on loyalty_tier_changes (review_at) where review_at is not null',
  );
  await knex.raw(`
    create function loyalty_tier_changes_append_only() returns trigger language plpgsql as $$
    begin
      raise exception using
        errcode = 'check_violation',
        constraint = 'loyalty_tier_changes_append_only',
        message = format('loyalty_tier_changes is append-only: %s refused', TG_OP);
    end $$`);
  await knex.raw(
    `create trigger loyalty_tier_changes_append_only before update or delete on loyalty_tier_changes
     for each row execute function loyalty_tier_changes_append_only()`,
  );
  await knex.schema.createTable('loyalty_tier_qualifying', (t) => {
    t.text('payment_id').primary();
    t.timestamp('authorised_at', { useTz: true }).notNullable();
    t.text('currency').notNullable();
    t.bigInteger('spend').notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
  });
  await knex.raw(
    'alter table loyalty_tier_qualifying add constraint loyalty_tier_qualifying_spend_check check (spend >= 0)',
  );
  await knex.schema.alterTable('loyalty_lots', (t) => {
    t.jsonb('tier');
  });
  for (const table of ['loyalty_tier_changes', 'loyalty_tier_qualifying', 'loyalty_lots']) {
    await knex.raw('select card_data_guard_attach(?)', [table]);
  }
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('loyalty_lots', (t) => {
    t.dropColumn('tier');
  });
  await knex.raw('select card_data_guard_attach(?)', ['loyalty_lots']);
  await knex.schema.dropTable('loyalty_tier_qualifying');
  await knex.schema.dropTable('loyalty_tier_changes');
  await knex.raw('drop function loyalty_tier_changes_append_only()');
}
