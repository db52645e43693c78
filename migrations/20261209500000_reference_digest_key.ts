/**
 * The reference-digest key (src/keys/reference-digests.ts): one random 256-bit HMAC key per database,
 * wrapped by the master key (AES-256-GCM, AAD `loyalty-vault/reference-digest-key/v1|<version>`),
 * under which a UUID-shaped id that reads as a card number (a platform `webhook-id`, a client
 * `Idempotency-Key`) is stored as `~` + base64url(HMAC-SHA256(key, id)) instead of as sent.
 *
 * One row, version 1, never rotated on its own (its outputs are only compared: a new key would make
 * a redelivery look new); rewrapped by every master-key rotation. `kek_id` is a master-key id
 * (base64url) set by the service: exempt from the card-data guard like `audit_chain_keys.kek_id`.
 */
import type { Knex } from 'knex';

const REASON = 'master-key id (base64url), set by the service';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('reference_digest_keys', (t) => {
    t.integer('version').primary();
    t.binary('wrapped_key').notNullable();
    t.text('kek_id').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
  });
  await knex.raw(
    `alter table reference_digest_keys add constraint reference_digest_keys_version_check check (version = 1)`,
  );
  await knex('card_data_exempt_columns').insert({
    table_name: 'reference_digest_keys',
    column_name: 'kek_id',
    reason: REASON,
  });
  await knex.raw('select card_data_guard_attach(?)', ['reference_digest_keys']);
  // The columns that now hold a digest instead of a flagged UUID say so.
  const digestNote = '; a UUID-shaped value the card-data detector flags is stored as its keyed digest (~…)';
  for (const [table, column] of [
    ['idempotency_keys', 'key'],
    ['event_subscription_secrets', 'rotation_key'],
  ] as const) {
    await knex.raw(
      `update card_data_exempt_columns set reason = reason || ? where table_name = ? and column_name = ?`,
      [digestNote, table, column],
    );
  }
}

export async function down(knex: Knex): Promise<void> {
  const digestNote = '; a UUID-shaped value the card-data detector flags is stored as its keyed digest (~…)';
  for (const [table, column] of [
    ['idempotency_keys', 'key'],
    ['event_subscription_secrets', 'rotation_key'],
  ] as const) {
    await knex.raw(
      `update card_data_exempt_columns set reason = replace(reason, ?, '') where table_name = ? and column_name = ?`,
      [digestNote, table, column],
    );
  }
  await knex('card_data_exempt_columns').where({ table_name: 'reference_digest_keys', column_name: 'kek_id' }).delete();
  await knex.schema.dropTable('reference_digest_keys');
}
