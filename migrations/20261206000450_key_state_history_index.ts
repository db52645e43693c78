/**
 * Resuming an interrupted rotation (src/keys/key-publication.ts) reads a key version's state history
 * from the audit trail: its `key.published`, `key.activated`, `key.retired` and `key.destroyed`
 * entries. A partial index, so that the bulk of the trail (detokenisations) pays nothing for it.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create index audit_events_key_state_idx on audit_events (resource, action)
      where action in ('key.published', 'key.activated', 'key.retired', 'key.destroyed')`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop index if exists audit_events_key_state_idx');
}
