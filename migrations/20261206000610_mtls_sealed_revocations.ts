/**
 * Sealed revocations (issue 17): clearing `revoked_at` on a client certificate record un-revoked it.
 * Revocations are now also appended to `mtls_revocations`, hash-chained, with the chain's head sealed
 * under the master key in `mtls_revocation_list` (src/mtls/revocation-list.ts); the service trusts
 * that list, and `revoked_at` stays for display.
 *
 * The head starts as the empty list (length 0, zero chain, no seal: the one state that needs none).
 * Certificates revoked before this migration are appended and sealed by the service at its next start
 * (it holds the master key; a migration does not): adding a revocation only ever makes things
 * stricter, so doing it from what the records say is safe. Until then `revoked_at` still refuses them.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('mtls_revocations', (t) => {
    // 1, 2, 3, …: the order the chain is computed in.
    t.bigInteger('position').primary();
    t.text('serial').notNullable().unique();
    t.text('fingerprint_sha256').notNullable();
    t.timestamp('revoked_at', { useTz: true }).notNullable();
    t.text('revoked_by').notNullable();
    t.text('reason').notNullable();
  });
  await knex.raw(`alter table mtls_revocations add constraint mtls_revocations_position_check check (position > 0)`);
  await knex.schema.createTable('mtls_revocation_list', (t) => {
    t.integer('id').primary();
    t.bigInteger('length').notNullable();
    // chain(length): SHA-256 chain over the revocations, 32 bytes.
    t.binary('chain').notNullable();
    // masterKey.wrap(SHA-256(label, length, chain)); null only for the empty list.
    t.binary('seal');
  });
  await knex.raw(`alter table mtls_revocation_list add constraint mtls_revocation_list_singleton check (id = 1)`);
  await knex('mtls_revocation_list').insert({ id: 1, length: 0, chain: Buffer.alloc(32), seal: null });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('mtls_revocation_list');
  await knex.schema.dropTableIfExists('mtls_revocations');
}
