/**
 * `event_subscription_secrets.rotation_key` leaves the database card-data guard for the edge's check,
 * as `idempotency_keys.key` did (migration 20261206000930): it holds the same client Idempotency-Key.
 *
 * Every Idempotency-Key is checked where it arrives (src/http/operation-middleware.ts): one holding a
 * card number is refused with 422 before anything is stored. A bare canonical UUID is accepted there
 * even when its 4-4-4 middle groups read as a dashed, Luhn-valid number (about one random UUID in
 * 180); the trigger, which cannot tell the two apart, refused that row and the rotation answered 500.
 */
import type { Knex } from 'knex';

const TABLE = 'event_subscription_secrets';
const REASON =
  'client Idempotency-Key of a secret rotation: refused at the edge when it holds card data (src/http/operation-middleware.ts); bare canonical UUIDs accepted';

export async function up(knex: Knex): Promise<void> {
  await knex('card_data_exempt_columns').insert({ table_name: TABLE, column_name: 'rotation_key', reason: REASON });
  await knex.raw('select card_data_guard_attach(?)', [TABLE]);
}

export async function down(knex: Knex): Promise<void> {
  await knex('card_data_exempt_columns').where({ table_name: TABLE, column_name: 'rotation_key' }).delete();
  await knex.raw('select card_data_guard_attach(?)', [TABLE]);
}
