/**
 * Key state enforced where the row is written, and instances that acknowledge the key ring (issue 18).
 *
 * 1. Every column that records the key version a value was written under has a trigger that refuses
 *    the row unless that version is writable in `data_keys` at that moment, whatever the writing
 *    instance has cached:
 *    - encryption (`pan-encryption`): only the `active` version;
 *    - indexing (`identifier-mac` fingerprints): the indexing versions, `published` and `active`
 *      (see INDEXING_STATES in src/keys/key-ring.ts);
 *    - `decrypt-only`, `retired`, `destroyed` and unknown versions: never.
 *    Not covered: `mtls_client_certificates.ca_version` (certificates are issued by the key CLI from a
 *    ring it has just loaded, never by a long-running instance; their grants are sealed, src/mtls) and
 *    `audit-signing` (signs exports, stores no rows).
 *    The refusal is SQLSTATE 23514 (check_violation) with constraint `key_version_writable`, which the
 *    application recognises (src/keys/key-ring.ts, isKeyVersionNotWritable), reloads its ring and
 *    retries once.
 *
 *    Serialisation with state changes: the check takes a shared transaction-level advisory lock and
 *    every key-state change takes it exclusively (lockKeyStates / bumpGeneration). A write whose check
 *    passed therefore commits before the state change can commit (and is seen by any count that
 *    follows it), and a write that checks after the state change committed reads the new state (each
 *    query of a PL/pgSQL function takes a fresh snapshot under READ COMMITTED, the isolation every
 *    writer here uses). An advisory lock lives in the lock table only: unlike `FOR SHARE` on the key's
 *    row it writes nothing to the heap or the WAL on the hot path.
 *
 * 2. `data_keys.state_generation`: the `key_ring_generation` in which the version's state last changed
 *    (set by the application in the same transaction as the bump). For a `decrypt-only` version it is
 *    the generation in which the version stopped being writable.
 *
 * 3. `key_ring_instances`: one heartbeat row per live service instance with the generation its ring
 *    has loaded; the key CLI waits for these before activating, retiring or destroying a version.
 *    Every bump of `key_ring_generation` notifies channel `key_ring_generation` (at commit), so that
 *    listening instances reload at once instead of at their next refresh.
 */
import type { Knex } from 'knex';

/** 'keystate' as a 64-bit integer: the advisory lock key of key-state changes (KEY_STATES_LOCK in key-ring.ts). */
const KEY_STATES_LOCK = '7738144525008659557';

interface VersionColumn {
  readonly table: string;
  readonly column: string;
  readonly purpose: string;
  readonly use: 'encrypt' | 'index';
}

const VERSION_COLUMNS: readonly VersionColumn[] = [
  { table: 'cards', column: 'pan_key_version', purpose: 'pan-encryption', use: 'encrypt' },
  { table: 'card_identifiers', column: 'value_key_version', purpose: 'pan-encryption', use: 'encrypt' },
  { table: 'identifier_fingerprints', column: 'mac_key_version', purpose: 'identifier-mac', use: 'index' },
  { table: 'loyalty_accounts', column: 'email_key_version', purpose: 'pan-encryption', use: 'encrypt' },
  {
    table: 'event_subscription_secrets',
    column: 'secret_key_version',
    purpose: 'pan-encryption',
    use: 'encrypt',
  },
];

const triggerName = (c: VersionColumn): string => `${c.table}_${c.column}_writable`;

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function assert_key_version_writable(p_purpose text, p_version integer, p_use text) returns void
    language plpgsql as $$
    declare
      v_state text;
    begin
      perform pg_advisory_xact_lock_shared(${KEY_STATES_LOCK});
      select state into v_state from data_keys where purpose = p_purpose and version = p_version;
      if v_state is null or not (v_state = 'active' or (p_use = 'index' and v_state = 'published')) then
        raise exception using
          errcode = 'check_violation',
          constraint = 'key_version_writable',
          message = format('key_version_writable: %s v%s is %s, not writable for %s',
                           p_purpose, p_version, coalesce(v_state, 'unknown'), p_use);
      end if;
    end $$`);
  for (const c of VERSION_COLUMNS) {
    // Inserts (the hot path: group-committed multi-row statements) are checked once per statement and
    // distinct version, over the statement's transition table.
    await knex.raw(`
      create function ${triggerName(c)}_insert() returns trigger language plpgsql as $$
      declare
        v integer;
      begin
        for v in select distinct ${c.column} from new_rows where ${c.column} is not null loop
          perform assert_key_version_writable('${c.purpose}', v, '${c.use}');
        end loop;
        return null;
      end $$`);
    await knex.raw(
      `create trigger ${triggerName(c)}_insert after insert on ${c.table}
       referencing new table as new_rows for each statement execute function ${triggerName(c)}_insert()`,
    );
    // Updates that move a row to another version (the backfill, a PAN attached to a card), per row.
    await knex.raw(`
      create function ${triggerName(c)}_update() returns trigger language plpgsql as $$
      begin
        if new.${c.column} is not null and new.${c.column} is distinct from old.${c.column} then
          perform assert_key_version_writable('${c.purpose}', new.${c.column}, '${c.use}');
        end if;
        return new;
      end $$`);
    await knex.raw(
      `create trigger ${triggerName(c)}_update before update of ${c.column} on ${c.table}
       for each row execute function ${triggerName(c)}_update()`,
    );
  }

  await knex.schema.alterTable('data_keys', (t) => {
    t.bigInteger('state_generation');
  });
  await knex.raw(`
    create function key_ring_generation_notify() returns trigger language plpgsql as $$
    begin
      perform pg_notify('key_ring_generation', new.generation::text);
      return new;
    end $$`);
  await knex.raw(`
    create trigger key_ring_generation_notify after update of generation on key_ring_generation
    for each row execute function key_ring_generation_notify()`);

  await knex.schema.createTable('key_ring_instances', (t) => {
    t.text('instance_id').primary();
    t.text('host').notNullable();
    t.integer('pid').notNullable();
    t.timestamp('started_at', { useTz: true }).notNullable();
    // The key_ring_generation this instance's ring has loaded.
    t.bigInteger('generation').notNullable();
    t.integer('refresh_interval_ms').notNullable();
    // On the database clock (now()), so that instances' clocks never matter.
    t.timestamp('last_beat_at', { useTz: true }).notNullable();
  });
  await knex.raw(
    `alter table key_ring_instances add constraint key_ring_instances_refresh_check check (refresh_interval_ms > 0)`,
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('key_ring_instances');
  await knex.raw('drop trigger if exists key_ring_generation_notify on key_ring_generation');
  await knex.raw('drop function if exists key_ring_generation_notify()');
  await knex.schema.alterTable('data_keys', (t) => {
    t.dropColumn('state_generation');
  });
  for (const c of VERSION_COLUMNS) {
    for (const kind of ['insert', 'update']) {
      await knex.raw(`drop trigger if exists ${triggerName(c)}_${kind} on ${c.table}`);
      await knex.raw(`drop function if exists ${triggerName(c)}_${kind}()`);
    }
  }
  await knex.raw('drop function if exists assert_key_version_writable(text, integer, text)');
}
