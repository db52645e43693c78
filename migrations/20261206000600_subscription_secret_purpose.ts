/**
 * Subscription signing secrets get a data-key purpose of their own, `subscription-secret` (issue 17):
 * until now they were sealed under `pan-encryption`, so the key that protects PANs also protected a
 * CRM's webhook secret, and neither could be rotated or retired without the other.
 *
 * Each secret now records the purpose of the key that seals it (`secret_key_purpose`). Rows present
 * when this migration runs keep `pan-encryption`: a migration holds no keys, so it cannot re-encrypt.
 * They go on signing as before (the service reads each row under the purpose it records), and are
 * moved to `subscription-secret` by the service at start and by `keys reencrypt --purpose
 * pan-encryption` (src/events/subscription-secrets.ts), both compare-and-set, any number at once.
 * Until then they count as rows of their `pan-encryption` version, so that version cannot be retired.
 *
 * The default exists only to fill the rows already there; it is dropped so that every new row names
 * its purpose.
 *
 * down: refused while any secret is sealed under `subscription-secret` (the earlier schema could not
 * read it); otherwise the unused `subscription-secret` key versions go with the column.
 */
import type { Knex } from 'knex';

const PURPOSES_BEFORE = `'pan-encryption', 'identifier-mac', 'audit-signing', 'mtls-client-ca'`;

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    alter table data_keys
      drop constraint data_keys_purpose_check,
      add constraint data_keys_purpose_check check (purpose in (${PURPOSES_BEFORE}, 'subscription-secret'))`);
  await knex.raw(
    `alter table event_subscription_secrets add column secret_key_purpose text not null default 'pan-encryption'`,
  );
  await knex.raw(`alter table event_subscription_secrets alter column secret_key_purpose drop default`);
  await knex.raw(`
    alter table event_subscription_secrets
      add constraint event_subscription_secrets_key_purpose_check
        check (secret_key_purpose in ('pan-encryption', 'subscription-secret'))`);
}

export async function down(knex: Knex): Promise<void> {
  const moved = (await knex('event_subscription_secrets')
    .where({ secret_key_purpose: 'subscription-secret' })
    .count({ n: '*' })
    .first()) as { n: string | number };
  if (Number(moved.n) > 0) {
    throw new Error(
      `${moved.n} subscription secret(s) are sealed under the subscription-secret key, which the earlier schema cannot read: ` +
        'rotate those subscriptions’ secrets after the rollback instead, or restore from a backup',
    );
  }
  await knex.raw(`alter table event_subscription_secrets drop constraint event_subscription_secrets_key_purpose_check`);
  await knex.raw(`alter table event_subscription_secrets drop column secret_key_purpose`);
  await knex('data_keys').where({ purpose: 'subscription-secret' }).delete();
  await knex.raw(`
    alter table data_keys
      drop constraint data_keys_purpose_check,
      add constraint data_keys_purpose_check check (purpose in (${PURPOSES_BEFORE}))`);
}
