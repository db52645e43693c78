/**
 * Campaign state that payments are judged on besides their own facts (issue 21):
 *
 * - `loyalty_campaign_budgets`: per campaign, the bonus points granted in all (`spent`), updated by
 *   the earning transaction under the row's lock, so a global budget is exact across instances.
 * - `loyalty_campaign_usage`: per shopper, campaign and cap period, the purchases the campaign
 *   counted (first / every Nth purchase; period `campaign`) and the bonus granted (per-shopper caps);
 *   written under the shopper's account lock.
 * - `loyalty_campaign_activations`: the shopper's opt-in to a campaign, from the app.
 *
 * An insider who lowered a counter or back-dated an activation would buy bonus points, so the
 * counters only grow (no update lowers them, no delete) and activations are append-only; each
 * activation also has an audit entry (`loyalty.campaign.activated`).
 */
import type { Knex } from 'knex';

/** Each table's guard and what it refuses besides a delete (an activation is never updated). */
const GUARDS: readonly (readonly [string, string])[] = [
  ['loyalty_campaign_budgets', 'new.spent < old.spent'],
  ['loyalty_campaign_usage', '(new.purchases < old.purchases or new.granted < old.granted)'],
  ['loyalty_campaign_activations', 'true'],
];

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('loyalty_campaign_budgets', (t) => {
    t.text('campaign_id').primary();
    t.bigInteger('spent').notNullable().defaultTo(0);
    t.timestamp('updated_at', { useTz: true }).notNullable();
  });
  await knex.schema.createTable('loyalty_campaign_usage', (t) => {
    t.text('shopper_ref').notNullable();
    t.text('campaign_id').notNullable();
    t.text('period').notNullable();
    t.integer('purchases').notNullable().defaultTo(0);
    t.bigInteger('granted').notNullable().defaultTo(0);
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.primary(['shopper_ref', 'campaign_id', 'period']);
  });
  await knex.schema.createTable('loyalty_campaign_activations', (t) => {
    t.text('shopper_ref').notNullable();
    t.text('campaign_id').notNullable();
    t.timestamp('activated_at', { useTz: true }).notNullable();
    t.text('activated_by').notNullable();
    t.primary(['shopper_ref', 'campaign_id']);
  });
  await knex.raw('create index loyalty_campaign_activations_campaign on loyalty_campaign_activations (campaign_id)');
  await knex.raw(
    `alter table loyalty_campaign_budgets add constraint loyalty_campaign_budgets_spent_check check (spent >= 0)`,
  );
  await knex.raw(`alter table loyalty_campaign_usage add constraint loyalty_campaign_usage_counts_check
    check (purchases >= 0 and granted >= 0)`);
  // One function per table: PL/pgSQL resolves every field an expression names, whatever the branch.
  for (const [table, lowered] of GUARDS) {
    await knex.raw(`
      create function ${table}_guard() returns trigger language plpgsql as $$
      begin
        if TG_OP = 'DELETE' or ${lowered} then
          raise exception using
            errcode = 'check_violation',
            constraint = 'loyalty_campaign_counters_only_grow',
            message = format('%s: %s refused (campaign counters only grow, activations are append-only)', TG_TABLE_NAME, TG_OP);
        end if;
        return new;
      end $$`);
  }
  for (const table of ['loyalty_campaign_budgets', 'loyalty_campaign_usage', 'loyalty_campaign_activations']) {
    await knex.raw(
      `create trigger ${table}_guard before update or delete on ${table}
       for each row execute function ${table}_guard()`,
    );
    await knex.raw('select card_data_guard_attach(?)', [table]);
  }
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['loyalty_campaign_activations', 'loyalty_campaign_usage', 'loyalty_campaign_budgets']) {
    await knex.schema.dropTable(table);
  }
  for (const [table] of GUARDS) await knex.raw(`drop function ${table}_guard()`);
}
