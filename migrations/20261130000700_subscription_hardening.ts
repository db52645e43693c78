/**
 * Hardening of the subscriptions (security review of the outbound events).
 *
 * One live subscription per URL, without a btree over the URL itself: an index row holds at most
 * about 2,700 bytes, so a long (percent-encoded, non-ASCII) URL made the unique index fail with
 * 54000 and the create a 500. The uniqueness now rests on `url_sha256`, the SHA-256 of the stored
 * (normalised) URL, written by the service; rows already there are hashed here.
 *
 * A secret remembers the `Idempotency-Key` of the rotation that made it (`rotation_key`, null for
 * the first secret and for rotations without a key), so a retried rotation is told which secret it
 * already made instead of minting another.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`alter table event_subscriptions add column url_sha256 bytea`);
  await knex.raw(`update event_subscriptions set url_sha256 = sha256(convert_to(url, 'UTF8'))`);
  await knex.raw(`alter table event_subscriptions alter column url_sha256 set not null`);
  await knex.raw(`drop index event_subscriptions_url`);
  await knex.raw(
    `create unique index event_subscriptions_url_sha256 on event_subscriptions (url_sha256) where state <> 'deleted'`,
  );
  await knex.raw(`alter table event_subscription_secrets add column rotation_key text`);
  await knex.raw(
    `create index event_subscription_secrets_rotation_key on event_subscription_secrets (subscription_id, rotation_key)
     where rotation_key is not null`,
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`alter table event_subscription_secrets drop column rotation_key`);
  await knex.raw(`drop index event_subscriptions_url_sha256`);
  await knex.raw(`alter table event_subscriptions drop column url_sha256`);
  await knex.raw(`create unique index event_subscriptions_url on event_subscriptions (url) where state <> 'deleted'`);
}
