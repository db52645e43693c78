/**
 * SQL of the database catalogue read by `keys status`: the triggers the write-time key check depends
 * on (key-version-triggers.ts compares them with their definitions).
 */
import type { Knex } from 'knex';

export interface TriggerRow {
  table: string;
  trigger: string;
  /** `tgenabled`: 'O' when it fires (origin and local), else disabled or replica-only. */
  enabled: string;
  /** The trigger function's source (`prosrc`). */
  source: string;
}

/** Every user trigger (internal ones, such as foreign-key checks, aside) with its function's source. */
export async function userTriggers(db: Knex | Knex.Transaction): Promise<TriggerRow[]> {
  return (
    (await db.raw(
      `select c.relname as "table", t.tgname as "trigger", t.tgenabled::text as "enabled", p.prosrc as "source"
         from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_proc p on p.oid = t.tgfoid
        where not t.tgisinternal`,
    )) as { rows: TriggerRow[] }
  ).rows;
}
