/**
 * SQL of the instances' heartbeats (`key_ring_instances`), on the database clock: a beat is stamped
 * with the database's now(), and liveness is judged against it, never against this process's clock.
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

export interface InstanceRow {
  instance_id: string;
  host: string;
  pid: number;
  started_at: Date;
  generation: number | string;
  refresh_interval_ms: number;
  last_beat_at: Date;
  /** Seconds since the last beat, on the database clock. */
  since: number | string;
}

/**
 * Rows whose last beat is younger than twice their refresh interval plus `graceMs`, and not dated
 * ahead of the database clock by more than `futureSkewMs`; by instance id.
 */
export async function liveInstanceRows(db: Db, graceMs: number, futureSkewMs: number): Promise<InstanceRow[]> {
  return (await db('key_ring_instances')
    .whereRaw(`last_beat_at > now() - make_interval(secs => (2.0 * refresh_interval_ms + ?) / 1000.0)`, [graceMs])
    .whereRaw(`last_beat_at <= now() + make_interval(secs => ? / 1000.0)`, [futureSkewMs])
    .orderBy('instance_id')
    .select('*', db.raw('extract(epoch from now() - last_beat_at) as since'))) as InstanceRow[];
}

/** Rows dated ahead of the database clock by more than `futureSkewMs`; by instance id. */
export async function futureBeatRows(db: Db, futureSkewMs: number): Promise<InstanceRow[]> {
  return (await db('key_ring_instances')
    .whereRaw(`last_beat_at > now() + make_interval(secs => ? / 1000.0)`, [futureSkewMs])
    .orderBy('instance_id')
    .select('*', db.raw('extract(epoch from now() - last_beat_at) as since'))) as InstanceRow[];
}

/** Records a beat: the instance's row, created on its first beat, stamped with the database's now(). */
export async function recordBeat(
  knex: Knex,
  beat: {
    instanceId: string;
    host: string;
    pid: number;
    startedAt: Date;
    generation: number;
    refreshIntervalMs: number;
  },
): Promise<void> {
  await knex('key_ring_instances')
    .insert({
      instance_id: beat.instanceId,
      host: beat.host,
      pid: beat.pid,
      started_at: beat.startedAt,
      generation: beat.generation,
      refresh_interval_ms: beat.refreshIntervalMs,
      last_beat_at: knex.fn.now(),
    })
    .onConflict('instance_id')
    .merge(['generation', 'refresh_interval_ms', 'last_beat_at']);
}

/** Removes an instance's row: nobody waits for it any more. */
export async function deleteInstance(knex: Knex, instanceId: string): Promise<void> {
  await knex('key_ring_instances').where({ instance_id: instanceId }).delete();
}
