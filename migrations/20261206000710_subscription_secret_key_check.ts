/**
 * The write-time key check of subscription secrets follows the purpose each row records.
 *
 * Migration 20261206000700 checks `event_subscription_secrets.secret_key_version` against the
 * `pan-encryption` key, which sealed every secret when it was written. Since 20261206000600 a secret
 * records the purpose of the key that seals it (`secret_key_purpose`: `subscription-secret` for new
 * and moved secrets, `pan-encryption` for those not moved yet), so the check reads the purpose from the
 * row: a secret is written only under a version of its own purpose that is `active` at that moment.
 * The update trigger also fires when a row moves from one purpose to the other (the start-up move
 * and `keys reencrypt`).
 */
import type { Knex } from 'knex';

const NAME = 'event_subscription_secrets_secret_key_version_writable';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create or replace function ${NAME}_insert() returns trigger language plpgsql as $$
    declare
      r record;
    begin
      for r in select distinct secret_key_purpose, secret_key_version from new_rows
               where secret_key_version is not null loop
        perform assert_key_version_writable(r.secret_key_purpose, r.secret_key_version, 'encrypt');
      end loop;
      return null;
    end $$`);
  await knex.raw(`drop trigger ${NAME}_update on event_subscription_secrets`);
  await knex.raw(`
    create or replace function ${NAME}_update() returns trigger language plpgsql as $$
    begin
      if new.secret_key_version is not null and (new.secret_key_version is distinct from old.secret_key_version
          or new.secret_key_purpose is distinct from old.secret_key_purpose) then
        perform assert_key_version_writable(new.secret_key_purpose, new.secret_key_version, 'encrypt');
      end if;
      return new;
    end $$`);
  await knex.raw(
    `create trigger ${NAME}_update before update of secret_key_version, secret_key_purpose
     on event_subscription_secrets for each row execute function ${NAME}_update()`,
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    create or replace function ${NAME}_insert() returns trigger language plpgsql as $$
    declare
      v integer;
    begin
      for v in select distinct secret_key_version from new_rows where secret_key_version is not null loop
        perform assert_key_version_writable('pan-encryption', v, 'encrypt');
      end loop;
      return null;
    end $$`);
  await knex.raw(`drop trigger ${NAME}_update on event_subscription_secrets`);
  await knex.raw(`
    create or replace function ${NAME}_update() returns trigger language plpgsql as $$
    begin
      if new.secret_key_version is not null and new.secret_key_version is distinct from old.secret_key_version then
        perform assert_key_version_writable('pan-encryption', new.secret_key_version, 'encrypt');
      end if;
      return new;
    end $$`);
  await knex.raw(
    `create trigger ${NAME}_update before update of secret_key_version on event_subscription_secrets
     for each row execute function ${NAME}_update()`,
  );
}
