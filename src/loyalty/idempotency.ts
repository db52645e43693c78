/**
 * Client idempotency (`Idempotency-Key`), Stripe's contract: the same key with the same request gets
 * the first response again; the same key with another request is refused with
 * `IDEMPOTENCY_KEY_REUSED`. Keys are scoped (one shopper's redemptions) and kept at least 30 days.
 *
 * The key is claimed by an insert in the caller's transaction, before any other write. A concurrent
 * request with the same key blocks on that insert until the first transaction ends: if it committed,
 * the waiter finds the stored response and replays it; if it rolled back (a refused request), the
 * waiter claims the key itself. So one key never produces two effects, even across instances, and a
 * refused request stores nothing.
 *
 * A canonical UUID key that the card-data detector flags (the edge lets UUIDs through, see
 * src/http/operation-middleware.ts) is stored as its keyed digest (`~…`), never as sent.
 */
import type { Knex } from 'knex';
import { AppError } from '../errors/app-error.js';
import { storedReference } from '../keys/reference-digests.js';
import { findKey, insertKeyIfAbsent, storeResponse } from './idempotency-store.js';

export interface StoredResponse<T> {
  readonly status: number;
  readonly body: T;
  /** True when this is the stored response of an earlier request. */
  readonly replayed: boolean;
}

export interface IdempotencyClaim<T> {
  /** Set when the key was used before with the same request: answer with this. */
  readonly replay: StoredResponse<T> | undefined;
  /** Records the response under the claimed key (same transaction) and returns it. */
  store(status: number, body: T): Promise<StoredResponse<T>>;
}

export interface IdempotencyRequest {
  readonly scope: string;
  readonly key: string;
  /** SHA-256 of the canonical request: what "the same request" means. */
  readonly requestHash: string;
}

export async function claimIdempotencyKey<T>(
  trx: Knex.Transaction,
  request: IdempotencyRequest,
  now: Date,
  retentionDays: number,
): Promise<IdempotencyClaim<T>> {
  const { scope, requestHash } = request;
  // A UUID key that reads as a card number is kept as its keyed digest, never as sent (the same
  // digest for every retry, on every instance): src/keys/reference-digests.ts.
  const digest = await storedReference(trx, request.key);
  // An earlier release kept such a key as sent: its retry replays that row, never runs again.
  const key =
    digest !== request.key && (await findKey<T>(trx, scope, request.key)) !== undefined ? request.key : digest;
  const claimed = await insertKeyIfAbsent(trx, {
    scope,
    key,
    requestHash,
    now,
    expiresAt: new Date(now.getTime() + retentionDays * 86_400_000),
  });
  if (!claimed) {
    const stored = await findKey<T>(trx, scope, key);
    if (stored.request_hash !== requestHash) {
      throw new AppError('IDEMPOTENCY_KEY_REUSED', {
        detail: 'This Idempotency-Key was used with a different request.',
      });
    }
    const body = typeof stored.response === 'string' ? (JSON.parse(stored.response) as T) : stored.response;
    return {
      replay: { status: stored.status, body, replayed: true },
      store: () => Promise.reject(new Error('replay')),
    };
  }
  return {
    replay: undefined,
    async store(status, body) {
      await storeResponse(trx, scope, key, status, body);
      return { status, body, replayed: false };
    },
  };
}
