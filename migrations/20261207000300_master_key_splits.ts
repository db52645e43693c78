/**
 * `master_key_splits`: the record of each M-of-N split of the master key (issue 19, key shares).
 *
 * One row per split: the threshold, how many shares, the id of the master key split, and the holders
 * (custodian id, name, key thumbprint, Ed25519 public key, share x coordinate, share digest). Never a
 * share: the shares leave the CLI encrypted to their custodians (src/keys/master-key-sources/).
 * `seal` is `masterKey.wrap(SHA-256(canonical record))`: a database writer may edit any column while
 * the service is sealed, but an unseal verifies the seal under the rebuilt key and refuses a record
 * that does not match (src/keys/key-shares.ts). At most one split is `active`.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('master_key_splits', (t) => {
    t.text('id').primary();
    t.text('state').notNullable();
    t.integer('threshold').notNullable();
    t.integer('total').notNullable();
    t.text('kek_id').notNullable();
    t.jsonb('holders').notNullable();
    t.text('request_id');
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('superseded_at', { useTz: true });
    t.binary('seal').notNullable();
  });
  await knex.raw(
    `alter table master_key_splits add constraint master_key_splits_state check (state in ('active', 'superseded'))`,
  );
  await knex.raw(
    `alter table master_key_splits add constraint master_key_splits_threshold check (threshold >= 2 and threshold <= total and total <= 255)`,
  );
  await knex.raw(
    `create unique index master_key_splits_one_active on master_key_splits ((true)) where state = 'active'`,
  );
  await knex.raw('select card_data_guard_attach(?)', ['master_key_splits']);
  // The split (and a re-split when a custodian leaves) is a dual-controlled request.
  await knex.raw('alter table key_requests drop constraint key_requests_operation_check');
  await knex.raw(`
    alter table key_requests add constraint key_requests_operation_check
      check (operation in ('rotate', 'retire', 'destroy', 'add-custodian', 'genesis', 'split-master-key'))`);
}

export async function down(knex: Knex): Promise<void> {
  await knex('key_requests').where({ operation: 'split-master-key' }).delete();
  await knex.raw('alter table key_requests drop constraint key_requests_operation_check');
  await knex.raw(`
    alter table key_requests add constraint key_requests_operation_check
      check (operation in ('rotate', 'retire', 'destroy', 'add-custodian', 'genesis'))`);
  await knex.schema.dropTable('master_key_splits');
}
