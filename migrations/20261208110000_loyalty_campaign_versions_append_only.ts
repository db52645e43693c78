/**
 * `loyalty_campaign_versions` is append-only: a published version is what payments were judged on
 * and what its audit entry's `definitionSha256` names, so the database refuses any UPDATE or DELETE
 * of it (a change to a campaign is a new version). Added here by a trigger, never by editing the
 * landed 20261208100000 migration.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function loyalty_campaign_versions_append_only() returns trigger language plpgsql as $$
    begin
      raise exception using
        errcode = 'check_violation',
        constraint = 'loyalty_campaign_versions_append_only',
        message = format('loyalty_campaign_versions is append-only: %s refused', TG_OP);
    end $$`);
  await knex.raw(
    `create trigger loyalty_campaign_versions_append_only before update or delete on loyalty_campaign_versions
     for each row execute function loyalty_campaign_versions_append_only()`,
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop trigger loyalty_campaign_versions_append_only on loyalty_campaign_versions');
  await knex.raw('drop function loyalty_campaign_versions_append_only()');
}
