/**
 * SQL of client idempotency keys (`idempotency_keys`). Every function runs on the caller's
 * transaction: the claim's insert is what serialises concurrent requests with one key
 * (idempotency.ts states the contract). Expired keys are purged by the expiry run (ledger-store.ts).
 */
import type { Knex } from 'knex';

export interface StoredKeyRow<T> {
  request_hash: string;
  status: number;
  response: T | string;
}

/**
 * Inserts the key with an empty response unless it exists; true when this call inserted it. A
 * concurrent insert of the same key blocks here until the other transaction ends.
 */
export async function insertKeyIfAbsent(
  trx: Knex.Transaction,
  row: { scope: string; key: string; requestHash: string; now: Date; expiresAt: Date },
): Promise<boolean> {
  const claimed = (await trx('idempotency_keys')
    .insert({
      scope: row.scope,
      key: row.key,
      request_hash: row.requestHash,
      status: 0,
      response: JSON.stringify(null),
      created_at: row.now,
      expires_at: row.expiresAt,
    })
    .onConflict(['scope', 'key'])
    .ignore()
    .returning('key')) as unknown[];
  return claimed.length > 0;
}

export async function findKey<T>(trx: Knex.Transaction, scope: string, key: string): Promise<StoredKeyRow<T>> {
  return (await trx('idempotency_keys').where({ scope, key }).first()) as StoredKeyRow<T>;
}

export async function storeResponse(
  trx: Knex.Transaction,
  scope: string,
  key: string,
  status: number,
  body: unknown,
): Promise<void> {
  await trx('idempotency_keys')
    .where({ scope, key })
    .update({ status, response: JSON.stringify(body) });
}
