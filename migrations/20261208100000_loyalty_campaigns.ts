/**
 * Loyalty campaigns (issue 21): bonus points layered on the programme.
 *
 * `loyalty_campaign_versions` holds immutable versions: a change to a campaign is a new version
 * effective from a time, never an update. `loyalty_lots.campaigns` pins, per payment, the campaign
 * versions in force at its authorisation and what each was last booked to (null: none was in force);
 * `loyalty_entries.campaign_id`/`campaign_version` name the campaign an entry's points came from
 * (null: the base programme).
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('loyalty_campaign_versions', (t) => {
    t.text('campaign_id').notNullable();
    t.integer('version').notNullable();
    t.jsonb('definition').notNullable();
    t.timestamp('effective_from', { useTz: true }).notNullable();
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.primary(['campaign_id', 'version']);
  });
  await knex.raw(
    `alter table loyalty_campaign_versions add constraint loyalty_campaign_versions_version_check check (version >= 1)`,
  );
  await knex.schema.alterTable('loyalty_lots', (t) => {
    t.jsonb('campaigns');
  });
  await knex.schema.alterTable('loyalty_entries', (t) => {
    t.text('campaign_id');
    t.integer('campaign_version');
  });
  for (const table of ['loyalty_campaign_versions', 'loyalty_lots', 'loyalty_entries']) {
    await knex.raw('select card_data_guard_attach(?)', [table]);
  }
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('loyalty_entries', (t) => {
    t.dropColumn('campaign_id');
    t.dropColumn('campaign_version');
  });
  await knex.schema.alterTable('loyalty_lots', (t) => {
    t.dropColumn('campaigns');
  });
  await knex.schema.dropTable('loyalty_campaign_versions');
  for (const table of ['loyalty_lots', 'loyalty_entries']) {
    await knex.raw('select card_data_guard_attach(?)', [table]);
  }
}
