/**
 * Card-data retention integrity (docs/data-protection.md), against an insider with database write access:
 *
 * - `card_retention_purges`: one row per card a run purged (run key, token, when), append-only. The
 *   run's audit entry commits to this list (a digest of its sorted tokens, under the entry MAC), so a
 *   row deleted or added is found by `loyalty retention --verify`, and detokenisation refuses a listed
 *   token even if its ciphertext was put back from a backup (unless a later audited
 *   `card.pan.restored` says the PAN was presented again).
 * - `cards.last_used_at`: the last successful detokenisation or tokenise hit (at most one write a day
 *   per card), part of retention's "last use".
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('cards', (t) => {
    t.timestamp('last_used_at', { useTz: true });
  });
  await knex.schema.createTable('card_retention_purges', (t) => {
    t.text('run_key').notNullable();
    t.text('token').notNullable();
    t.timestamp('purged_at', { useTz: true }).notNullable();
    t.primary(['run_key', 'token']);
  });
  await knex.raw(`create index card_retention_purges_token on card_retention_purges (token)`);
  await knex.raw(`
    create function card_retention_purges_append_only() returns trigger language plpgsql as $$
    begin
      raise exception using
        errcode = 'check_violation',
        constraint = 'card_retention_purges_append_only',
        message = format('card_retention_purges is append-only: %s refused', TG_OP);
    end $$`);
  await knex.raw(
    `create trigger card_retention_purges_append_only before update or delete on card_retention_purges
     for each row execute function card_retention_purges_append_only()`,
  );
  await knex.raw(
    `create trigger card_retention_purges_no_truncate before truncate on card_retention_purges
     for each statement execute function card_retention_purges_append_only()`,
  );
  await knex.raw('select card_data_guard_attach(?)', ['card_retention_purges']);
  // Cards purged before the list existed: listed under one key of their own (no run, no digest).
  await knex.raw(
    `insert into card_retention_purges (run_key, token, purged_at)
     select 'before-purge-list', token, pan_purged_at from cards where pan_purged_at is not null`,
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('card_retention_purges');
  await knex.raw('drop function card_retention_purges_append_only()');
  await knex.schema.alterTable('cards', (t) => {
    t.dropColumn('last_used_at');
  });
}
