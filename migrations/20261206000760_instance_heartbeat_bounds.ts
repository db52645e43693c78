/**
 * Heartbeat rows bounded to what a real instance can write: `refresh_interval_ms` at most 300 000 (the
 * largest KEY_RING_REFRESH_MS the configuration accepts, src/config/config.ts). A forged row with an
 * interval of 2^31-1 ms would otherwise count as live for weeks and hold every rotation, retirement
 * and destruction at its instance wait. (A row beating from the future is ignored by the reader,
 * src/keys/instance-heartbeat.ts: now() in a CHECK would be evaluated only at write time.)
 * Rows over the bound cannot come from a running instance: they are deleted before the check is added.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex('key_ring_instances').where('refresh_interval_ms', '>', 300_000).delete();
  await knex.raw(
    `alter table key_ring_instances add constraint key_ring_instances_refresh_max check (refresh_interval_ms <= 300000)`,
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`alter table key_ring_instances drop constraint if exists key_ring_instances_refresh_max`);
}
