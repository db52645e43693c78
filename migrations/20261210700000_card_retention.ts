/**
 * Card-data retention (PCI DSS 3.2.1, docs/data-protection.md): a card unused for longer than the
 * configured retention period loses its PAN ciphertext; the token, brand, last 4, expiry, its loyalty
 * history and (by policy) its fingerprints stay.
 *
 * - `cards.pan_purged_at`: when the PAN was purged (detokenisation then answers `CARD_PAN_PURGED`,
 *   and a MAC rotation drops the PAN's fingerprint instead of failing to recompute it).
 * - `card_retention_runs`: one row per run with its evidence (counts, oldest remaining), append-only
 *   (an insider must not rewrite what the auditor's quarterly check reads); `run_key` is unique, so a
 *   scheduled run (`scheduled:<UTC day>`) happens once across every instance.
 * - `payments (card_token, updated_at)`: "when was this card last used" without a scan.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('cards', (t) => {
    t.timestamp('pan_purged_at', { useTz: true });
  });
  await knex.raw(
    `alter table cards add constraint cards_pan_purged_check check (pan_purged_at is null or pan_ciphertext is null)`,
  );
  await knex.raw(`create index payments_card_token_updated on payments (card_token, updated_at)`);
  await knex.schema.createTable('card_retention_runs', (t) => {
    t.text('run_key').primary();
    t.text('mode').notNullable();
    t.integer('retention_days').notNullable();
    t.timestamp('cutoff', { useTz: true }).notNullable();
    t.boolean('keep_fingerprints').notNullable();
    t.integer('purged').notNullable();
    t.integer('fingerprints_dropped').notNullable();
    t.integer('remaining_with_pan').notNullable();
    t.timestamp('oldest_remaining_last_used_at', { useTz: true });
    t.integer('purged_total').notNullable();
    t.text('ran_by').notNullable();
    t.timestamp('ran_at', { useTz: true }).notNullable();
  });
  await knex.raw(`
    alter table card_retention_runs
      add constraint card_retention_runs_mode_check check (mode in ('scheduled', 'manual')),
      add constraint card_retention_runs_counts_check check (
        retention_days >= 1 and purged >= 0 and fingerprints_dropped >= 0 and remaining_with_pan >= 0
        and purged_total >= purged)`);
  await knex.raw(`
    create function card_retention_runs_append_only() returns trigger language plpgsql as $$
    begin
      raise exception using
        errcode = 'check_violation',
        constraint = 'card_retention_runs_append_only',
        message = format('card_retention_runs is append-only: %s refused', TG_OP);
    end $$`);
  await knex.raw(
    `create trigger card_retention_runs_append_only before update or delete on card_retention_runs
     for each row execute function card_retention_runs_append_only()`,
  );
  await knex.raw(
    `create trigger card_retention_runs_no_truncate before truncate on card_retention_runs
     for each statement execute function card_retention_runs_append_only()`,
  );
  await knex.raw('select card_data_guard_attach(?)', ['card_retention_runs']);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('card_retention_runs');
  await knex.raw('drop function card_retention_runs_append_only()');
  await knex.raw('drop index payments_card_token_updated');
  await knex.raw('alter table cards drop constraint cards_pan_purged_check');
  await knex.schema.alterTable('cards', (t) => {
    t.dropColumn('pan_purged_at');
  });
}
