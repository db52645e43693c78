/**
 * Key management (issue 6): key custodians and their acknowledgements (PCI DSS 3.7.8), dual-control
 * requests and their signed approvals (3.7.6), progress and failures of the online re-encryption
 * backfill, master-key (KEK) records, and the public half of `audit-signing` keys.
 *
 * Append-only: constraints on earlier tables are added here by ALTER, never by editing them.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  // Ed25519 `audit-signing` keys keep their public key in clear (an auditor verifies exports with it,
  // also after the private key is destroyed); other purposes are symmetric and have none.
  await knex.schema.alterTable('data_keys', (t) => {
    t.text('public_key_pem');
  });
  await knex.raw(`
    alter table data_keys
      add constraint data_keys_public_key_check check ((purpose = 'audit-signing') = (public_key_pem is not null))`);

  await knex.schema.createTable('key_custodians', (t) => {
    t.text('id').primary();
    t.text('name').notNullable().unique();
    // Ed25519 public key as a JWK; its RFC 7638 thumbprint identifies the custodian's key.
    t.jsonb('public_key_jwk').notNullable();
    t.text('key_thumbprint').notNullable().unique();
    t.text('acknowledgement').notNullable();
    t.timestamp('acknowledged_at', { useTz: true }).notNullable();
    t.text('registered_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
  });

  await knex.schema.createTable('key_requests', (t) => {
    t.text('id').primary();
    t.text('operation').notNullable();
    t.jsonb('params').notNullable();
    // The exact bytes every custodian signs (canonical JSON of id, operation, params, description).
    t.text('payload').notNullable();
    t.text('description').notNullable();
    t.text('state').notNullable();
    t.text('requested_by').notNullable();
    t.text('origin').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.timestamp('executed_at', { useTz: true });
  });
  await knex.raw(`
    alter table key_requests
      add constraint key_requests_operation_check check (operation in ('rotate', 'retire', 'destroy', 'add-custodian')),
      add constraint key_requests_state_check check (state in ('pending', 'executed'))`);

  await knex.schema.createTable('key_approvals', (t) => {
    t.text('request_id').notNullable().references('key_requests.id');
    t.text('custodian_id').notNullable().references('key_custodians.id');
    // Compact JWS (EdDSA) over the request payload, by the custodian's private key.
    t.text('jws').notNullable();
    t.timestamp('approved_at', { useTz: true }).notNullable();
    t.primary(['request_id', 'custodian_id']);
  });

  // One row per (purpose, target version, field set): where the backfill is, resumable after a crash.
  await knex.schema.createTable('reencrypt_progress', (t) => {
    t.text('purpose').notNullable();
    t.integer('target_version').notNullable();
    t.text('field_set').notNullable();
    t.text('state').notNullable();
    // Rows at or before this key were visited in the current pass (a low-water mark: never ahead).
    t.text('cursor').notNullable().defaultTo('');
    t.bigInteger('rows_done').notNullable().defaultTo(0);
    t.integer('passes').notNullable().defaultTo(0);
    t.timestamp('started_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.timestamp('completed_at', { useTz: true });
    t.primary(['purpose', 'target_version', 'field_set']);
  });
  await knex.raw(`
    alter table reencrypt_progress
      add constraint reencrypt_progress_state_check check (state in ('running', 'completed'))`);

  await knex.schema.createTable('reencrypt_failures', (t) => {
    t.text('purpose').notNullable();
    t.integer('target_version').notNullable();
    t.text('field_set').notNullable();
    // The row's id (token, identifier id, …): never its value.
    t.text('row_id').notNullable();
    t.integer('from_version').notNullable();
    t.text('error').notNullable();
    t.timestamp('failed_at', { useTz: true }).notNullable();
    t.primary(['purpose', 'target_version', 'field_set', 'row_id']);
  });

  // Every master key (KEK) that has wrapped data keys: the key-store inventory (PCI DSS 3.6.1.1).
  await knex.schema.createTable('master_keys', (t) => {
    t.text('kek_id').primary();
    t.text('description').notNullable();
    t.text('state').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('retired_at', { useTz: true });
  });
  await knex.raw(
    `alter table master_keys add constraint master_keys_state_check check (state in ('active', 'retired'))`,
  );
}

export async function down(knex: Knex): Promise<void> {
  for (const table of [
    'master_keys',
    'reencrypt_failures',
    'reencrypt_progress',
    'key_approvals',
    'key_requests',
    'key_custodians',
  ]) {
    await knex.schema.dropTableIfExists(table);
  }
  await knex.raw('alter table data_keys drop constraint if exists data_keys_public_key_check');
  await knex.schema.alterTable('data_keys', (t) => {
    t.dropColumn('public_key_pem');
  });
}
