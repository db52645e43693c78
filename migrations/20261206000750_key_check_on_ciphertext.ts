/**
 * The write-time key check also fires when a value is re-sealed under the SAME key version.
 *
 * Migrations 20261206000700/710 checked an update only when the key version column changed. A stale
 * instance could therefore rewrite a member's e-mail (or a PAN, an identifier value, a subscription
 * secret) under a version that had become decrypt-only while keeping the version number, and the
 * database accepted it. The update triggers of every encrypt-use column now fire on the ciphertext
 * column too and check the (new) version whenever the ciphertext, the version (or, for subscription
 * secrets, the purpose) changes. Definitions: src/keys/key-version-triggers.ts (shared with
 * `keys status`, which verifies them). `down` restores the definitions of 700/710.
 */
import type { Knex } from 'knex';
import { ENCRYPT_COLUMNS, updateTriggerName, updateTriggerSql } from '../src/keys/key-version-triggers.js';

export async function up(knex: Knex): Promise<void> {
  for (const c of ENCRYPT_COLUMNS) {
    const sql = updateTriggerSql(c);
    await knex.raw(`drop trigger if exists ${updateTriggerName(c)} on ${c.table}`);
    await knex.raw(sql.fn);
    await knex.raw(sql.trigger);
  }
}

export async function down(knex: Knex): Promise<void> {
  for (const c of ENCRYPT_COLUMNS) {
    const name = updateTriggerName(c);
    await knex.raw(`drop trigger if exists ${name} on ${c.table}`);
    if (c.table === 'event_subscription_secrets') {
      await knex.raw(`
        create or replace function ${name}() returns trigger language plpgsql as $$
        begin
          if new.secret_key_version is not null and (new.secret_key_version is distinct from old.secret_key_version
              or new.secret_key_purpose is distinct from old.secret_key_purpose) then
            perform assert_key_version_writable(new.secret_key_purpose, new.secret_key_version, 'encrypt');
          end if;
          return new;
        end $$`);
      await knex.raw(
        `create trigger ${name} before update of secret_key_version, secret_key_purpose
         on event_subscription_secrets for each row execute function ${name}()`,
      );
      continue;
    }
    const v = c.versionColumn;
    await knex.raw(`
      create or replace function ${name}() returns trigger language plpgsql as $$
      begin
        if new.${v} is not null and new.${v} is distinct from old.${v} then
          perform assert_key_version_writable('pan-encryption', new.${v}, 'encrypt');
        end if;
        return new;
      end $$`);
    await knex.raw(
      `create trigger ${name} before update of ${v} on ${c.table} for each row execute function ${name}()`,
    );
  }
}
