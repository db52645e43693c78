/**
 * Dual control an insider cannot forge (issue 17): what runs is bound to what the custodians signed,
 * once, and the custodian set is bound to the master key.
 *
 * - `key_custodians.seal`: masterKey.wrap(SHA-256(canonical custodian record)), AAD bound to the id
 *   (src/keys/custodians.ts). A row without a valid seal (inserted directly, or registered before this
 *   migration) is no custodian: it cannot approve, and it does not count towards the two needed.
 * - `key_approvals` is keyed by the signing key's thumbprint, not the custodian row, so that the first
 *   two custodians can sign their joint registration (the genesis ceremony) before they are custodians.
 * - `key_request_executions` + `dual_control_ledger`: the executed requests as a hash chain whose head
 *   is sealed under the master key (src/keys/dual-control-ledger.ts). Resetting a request's row,
 *   deleting or copying an execution, or re-pointing the head is detected before anything runs.
 * - `key_requests.operation` admits `genesis`; `audit_events.actor_type` admits `operator` (the person
 *   running the CLI) and `service`, next to `custodian` (a signature), `client` and `system`.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('key_custodians', (t) => {
    t.binary('seal');
    // The request (genesis or add-custodian) whose approvals registered this custodian.
    t.text('authorised_by');
  });

  await knex.schema.alterTable('key_approvals', (t) => {
    t.text('key_thumbprint');
  });
  await knex.raw(`
    update key_approvals a set key_thumbprint = c.key_thumbprint
      from key_custodians c where c.id = a.custodian_id`);
  await knex.raw('alter table key_approvals drop constraint key_approvals_pkey');
  await knex.raw('alter table key_approvals alter column key_thumbprint set not null');
  await knex.raw('alter table key_approvals alter column custodian_id drop not null');
  await knex.raw(
    'alter table key_approvals add constraint key_approvals_pkey primary key (request_id, key_thumbprint)',
  );

  await knex.raw('alter table key_requests drop constraint key_requests_operation_check');
  await knex.raw(`
    alter table key_requests add constraint key_requests_operation_check
      check (operation in ('rotate', 'retire', 'destroy', 'add-custodian', 'genesis'))`);

  await knex.schema.createTable('key_request_executions', (t) => {
    t.text('request_id').primary();
    t.integer('seq').notNullable().unique();
    t.text('operation').notNullable();
    // base64url SHA-256 of the signed canonical payload that ran.
    t.text('payload_sha256').notNullable();
    // hex SHA-256 over the previous link and this execution (src/keys/dual-control-ledger.ts).
    t.text('chain').notNullable();
    t.timestamp('executed_at', { useTz: true }).notNullable();
  });
  await knex.schema.createTable('dual_control_ledger', (t) => {
    t.integer('id').primary();
    t.integer('seq').notNullable();
    t.text('chain').notNullable();
    // masterKey.wrap(SHA-256(seq, chain)); null only before the first execution (the genesis).
    t.binary('seal');
  });
  await knex.raw('alter table dual_control_ledger add constraint dual_control_ledger_singleton check (id = 1)');
  await knex('dual_control_ledger').insert({ id: 1, seq: 0, chain: '0'.repeat(64), seal: null });

  await knex.raw('alter table audit_events drop constraint audit_events_actor_type_check');
  await knex.raw(`
    alter table audit_events add constraint audit_events_actor_type_check
      check (actor_type in ('client', 'custodian', 'system', 'operator', 'service'))`);
  // The second witness of an execution is looked up before every dual-controlled operation: a partial
  // index, so that the detokenisation entries (the bulk of the trail) pay nothing for it.
  await knex.raw(`
    create index audit_events_dual_control_idx on audit_events (action, resource)
      where action in ('key.request.executed', 'key.custodian.genesis')`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop index if exists audit_events_dual_control_idx');
  await knex.raw('alter table audit_events drop constraint audit_events_actor_type_check');
  await knex.raw(`update audit_events set actor_type = 'custodian' where actor_type = 'operator'`);
  await knex.raw(`update audit_events set actor_type = 'system' where actor_type = 'service'`);
  await knex.raw(`
    alter table audit_events add constraint audit_events_actor_type_check
      check (actor_type in ('client', 'custodian', 'system'))`);
  await knex.schema.dropTableIfExists('dual_control_ledger');
  await knex.schema.dropTableIfExists('key_request_executions');
  await knex('key_approvals').whereNull('custodian_id').delete();
  await knex('key_requests').where({ operation: 'genesis' }).delete();
  await knex.raw('alter table key_requests drop constraint key_requests_operation_check');
  await knex.raw(`
    alter table key_requests add constraint key_requests_operation_check
      check (operation in ('rotate', 'retire', 'destroy', 'add-custodian'))`);
  await knex.raw('alter table key_approvals drop constraint key_approvals_pkey');
  await knex.raw('alter table key_approvals alter column custodian_id set not null');
  await knex.raw('alter table key_approvals add constraint key_approvals_pkey primary key (request_id, custodian_id)');
  await knex.schema.alterTable('key_approvals', (t) => {
    t.dropColumn('key_thumbprint');
  });
  await knex.schema.alterTable('key_custodians', (t) => {
    t.dropColumn('authorised_by');
    t.dropColumn('seal');
  });
}
