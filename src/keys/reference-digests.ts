/**
 * Reference digests: how a UUID-shaped id that reads as a card number is stored without the number.
 *
 * A platform `webhook-id` and a client `Idempotency-Key` may be canonical UUIDs, and a random UUID
 * reads as a dashed, Luhn-valid card number about once in 180 values (its first or middle groups), so
 * those ids are not refused at the edge (src/webhooks/webhook-schemes.ts,
 * src/http/operation-middleware.ts). A hostile sender can therefore shape a UUID around a real PAN
 * (`41111111-1111-1111-abcd-…`). Such an id is never stored as sent: {@link storedReference} returns
 * `~` + base64url(HMAC-SHA256(reference key, id)), 44 characters. `~` is outside both ids' patterns
 * (`^[A-Za-z0-9_.:-]+$`), so a digest never equals a real id. It is deterministic across instances and
 * restarts, so de-duplication (`webhook_inbox.event_key`, `payment_facts.fact_key`) and idempotent
 * replay (`idempotency_keys.key`, `event_subscription_secrets.rotation_key`) work as before. An id the
 * card-data detector does not flag is returned unchanged: the common path costs one detector call.
 *
 * The reference key: one random 256-bit key per database, in `reference_digest_keys`, wrapped by the
 * master key (AES-256-GCM, AAD naming the purpose and the version), like the audit-chain key
 * (src/audit/audit-chain-keys.ts). Created at start-up (KeyRing.ensureInitialKeys) or by the first
 * transaction that needs it; unwrapped once per process and cached; forgotten when the vault seals;
 * rewrapped by every master-key rotation (master-rewrap.ts). Never rotated on its own: it indexes
 * de-duplication, its outputs are only compared and never leave as a secret, and a new key would turn
 * a redelivery into a new event (double points). Reading a digest back to the PAN needs the key, which
 * needs the master key; and even then it is a one-way MAC (a guess must be confirmed, as for any keyed
 * fingerprint). docs/key-management.md has its inventory entry.
 *
 * Fail closed: when the key cannot be had (no master key registered for the handle, a sealed vault, a
 * token away) the request fails with 503 (`MASTER_KEY_UNAVAILABLE`/`VAULT_SEALED`); the id is never
 * stored raw instead.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { containsCardData, mayHoldCardData } from '../card-data/card-data-guard.js';
import { AppError, isMasterKeyUnavailable } from '../errors/app-error.js';
import {
  findReferenceKey,
  insertReferenceKeyIfAbsent,
  lockReferenceKeys,
  rewrapReferenceKey,
  type ReferenceKeyRow,
} from './reference-key-store.js';

type Db = Knex | Knex.Transaction;

/** The subset of a master key source this needs (src/keys/master-key-types.ts). */
export interface ReferenceKeyWrapper {
  readonly keyId: string;
  wrap(plaintextKey: Buffer, aad: string): Promise<Buffer>;
  unwrap(wrappedKey: Buffer, aad: string): Promise<Buffer>;
}

export const REFERENCE_DIGEST_PREFIX = '~';

export const referenceKeyAad = (version: number): string => `loyalty-vault/reference-digest-key/v1|${version}`;

/** A UUID, bare or after a `msg_`-style prefix: the ids the edges accept as sent. */
const UUID_SHAPED = /^(?:[a-z]+_)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** True for a stored digest (`~` and 43 base64url characters). */
export function isReferenceDigest(value: string): boolean {
  return /^~[A-Za-z0-9_-]{43}$/.test(value);
}

/**
 * The form of `id` to store and serve: the id itself, or its keyed digest when the card-data
 * detector flags it. Needs the reference key only in the second case (fails closed without it).
 */
export async function storedReference(db: Db, id: string): Promise<string> {
  // A UUID with 12 or more digits in a row is digested whether or not the detector finds a whole card
  // number in it: a junk digit and a 15-digit Amex number fill its 16-digit run without the run
  // itself passing Luhn (attacker review). A legitimate UUID so digested is only stored differently.
  if (!(UUID_SHAPED.test(id) && mayHoldCardData(id)) && !containsCardData(id)) return id;
  const key = await registrationOf(db).material(db);
  return REFERENCE_DIGEST_PREFIX + createHmac('sha256', key).update(id, 'utf8').digest('base64url');
}

class Registration {
  /** Newest first: after a master rotation in-process, the newest source opens the rewrapped key. */
  readonly wrappers: ReferenceKeyWrapper[] = [];
  private key: Buffer | undefined;
  /** Transactions that created the row: its key is not cached until another transaction reads it. */
  private readonly creators = new WeakSet<object>();

  async material(db: Db): Promise<Buffer> {
    if (this.key !== undefined) return this.key;
    let row = await findReferenceKey(db);
    if (row === undefined) {
      await this.create(db);
      if ((db as { isTransaction?: boolean }).isTransaction === true) this.creators.add(db);
      row = await findReferenceKey(db);
      if (row === undefined)
        throw new AppError('MASTER_KEY_UNAVAILABLE', { detail: 'the reference key was not created' });
    }
    const key = await this.unwrap(row);
    // A key created in a transaction that may yet roll back must not outlive it in the cache.
    if (!this.creators.has(db)) this.key = key;
    return key;
  }

  /** Creates version 1 unless it exists (a concurrent creator's insert wins; both read the one row). */
  async create(db: Db): Promise<void> {
    const wrapper = this.wrappers[0];
    if (wrapper === undefined) throw unregistered();
    const material = randomBytes(32);
    try {
      const wrapped = await wrapper.wrap(material, referenceKeyAad(1));
      await insertReferenceKeyIfAbsent(db, { wrappedKey: wrapped, kekId: wrapper.keyId, createdAt: new Date() });
    } finally {
      material.fill(0);
    }
  }

  forget(): void {
    // Dropped, not zeroed: a request in flight may still be computing a digest with it.
    this.key = undefined;
  }

  private async unwrap(row: ReferenceKeyRow): Promise<Buffer> {
    let unavailable: Error | undefined;
    for (const wrapper of this.wrappers) {
      try {
        return await wrapper.unwrap(row.wrapped_key, referenceKeyAad(row.version));
      } catch (error) {
        // A source that cannot answer now (a sealed vault, a token away): 503, never "another key".
        if (isMasterKeyUnavailable(error)) unavailable ??= error as Error;
      }
    }
    if (unavailable !== undefined) throw unavailable;
    throw new AppError('MASTER_KEY_UNAVAILABLE', {
      detail: 'the reference-digest key does not unwrap under the configured master key',
    });
  }
}

function unregistered(): AppError {
  return new AppError('MASTER_KEY_UNAVAILABLE', {
    detail: 'no master key is registered for this database handle (build its KeyRing first)',
  });
}

const registry = new WeakMap<object, Registration>();

function handleOf(db: Db): object {
  // A transaction shares the configuration object of the knex instance it came from.
  return (db.client as { config: object }).config;
}

function registrationOf(db: Db): Registration {
  const registration = registry.get(handleOf(db));
  if (registration === undefined || registration.wrappers.length === 0) throw unregistered();
  return registration;
}

/** Binds the master key source to this database handle (KeyRing's constructor calls it). */
export function registerReferenceKey(db: Db, wrapper: ReferenceKeyWrapper): void {
  const handle = handleOf(db);
  let registration = registry.get(handle);
  if (registration === undefined) {
    registration = new Registration();
    registry.set(handle, registration);
  }
  const existing = registration.wrappers.indexOf(wrapper);
  if (existing >= 0) registration.wrappers.splice(existing, 1);
  registration.wrappers.unshift(wrapper);
}

/** Creates the key at start-up when the database has none (in its own, committed transaction). */
export async function ensureReferenceKey(knex: Knex): Promise<void> {
  if ((await findReferenceKey(knex)) !== undefined) return;
  await knex.transaction(async (trx) => registrationOf(trx).create(trx));
}

/** Forgets the unwrapped key of this database handle (the vault was sealed). */
export function forgetReferenceKey(db: Db): void {
  registry.get(handleOf(db))?.forget();
}

/**
 * For a master-key rotation, in its transaction: rewraps the reference key under the current master
 * key (master-rewrap.ts). The material is unchanged, so every stored digest stays the same. Returns
 * the versions rewrapped.
 */
export async function rewrapReferenceKeys(trx: Knex.Transaction, masterKey: ReferenceKeyWrapper): Promise<number[]> {
  const done: number[] = [];
  for (const row of await lockReferenceKeys(trx)) {
    // Every row, whatever its kek_id says: one mislabelled row would otherwise be left under the old key.
    const material = await masterKey.unwrap(row.wrapped_key, referenceKeyAad(row.version));
    try {
      const wrapped = await masterKey.wrap(material, referenceKeyAad(row.version));
      await rewrapReferenceKey(trx, row.version, { wrappedKey: wrapped, kekId: masterKey.keyId });
    } finally {
      material.fill(0);
    }
    done.push(row.version);
  }
  return done;
}
