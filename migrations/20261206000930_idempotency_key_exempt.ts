/**
 * `idempotency_keys.key` leaves the database card-data guard for the edge's check.
 *
 * Every Idempotency-Key is checked where it arrives (src/http/operation-middleware.ts): one holding a
 * card number is refused with 422 before anything is stored. A canonical UUID is accepted there even
 * when its 4-4-4 middle groups read as a dashed, Luhn-valid number (about one random UUID in 180);
 * the trigger, which cannot tell the two apart, would refuse that row and fail the client's write.
 * Keys reach this table only through that check.
 */
import type { Knex } from 'knex';

const REASON =
  'client Idempotency-Key: refused at the edge when it holds card data (src/http/operation-middleware.ts); canonical UUIDs accepted';

export async function up(knex: Knex): Promise<void> {
  await knex('card_data_exempt_columns').insert({ table_name: 'idempotency_keys', column_name: 'key', reason: REASON });
  await knex.raw('select card_data_guard_attach(?)', ['idempotency_keys']);
}

export async function down(knex: Knex): Promise<void> {
  await knex('card_data_exempt_columns').where({ table_name: 'idempotency_keys', column_name: 'key' }).delete();
  await knex.raw('select card_data_guard_attach(?)', ['idempotency_keys']);
}
