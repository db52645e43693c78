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
 *
 * Deleted or replaced (issue 16, third review): the key is created in the same transaction as a keyed
 * audit entry `reference-key.created` (resource `reference-key:v1`) naming its master key and its
 * check value (`checkValue`: the first 8 bytes of HMAC-SHA256(key, a fixed label), base64url; it
 * confirms the key, reveals nothing of it). A key an earlier release created without one is recorded
 * by `reference-key.recorded` the first time a process unwraps it. From then on, a process that finds
 * the row gone, or a key whose check value is not the recorded one, refuses (503
 * `REFERENCE_KEY_MISSING`, logged by the problem middleware) instead of creating a new key: a new key
 * would give every redelivery of a card-shaped UUID id a new digest, and apply it twice. The runtime
 * counts any such entry, intact or not (an entry made unverifiable must not reopen silent re-creation);
 * `keys audit verify` and `keys status` report a missing or replaced key, and entries that do not
 * verify ({@link reconcileReferenceKey}, through key-state-reconciliation.ts).
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { appendAuditEvent, auditEntryIntact } from '../audit/audit-log.js';
import { containsCardData, mayHoldCardData } from '../card-data/card-data-guard.js';
import { AppError, isMasterKeyUnavailable } from '../errors/app-error.js';
import {
  findReferenceKey,
  insertReferenceKeyIfAbsent,
  lockReferenceKeys,
  REFERENCE_KEY_RESOURCE,
  referenceKeyEntries,
  rewrapReferenceKey,
  type ReferenceKeyEntryRow,
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

/** The audit actions that name the reference key and its check value. */
export const REFERENCE_KEY_ACTIONS = ['reference-key.created', 'reference-key.recorded'] as const;

/** The key's check value: confirms which key it is, reveals nothing of it (11 base64url characters). */
export function referenceKeyCheckValue(key: Buffer): string {
  return createHmac('sha256', key)
    .update('loyalty-vault/reference-digest-key/check-value', 'utf8')
    .digest()
    .subarray(0, 8)
    .toString('base64url');
}

interface RecordedKey {
  readonly seq: number;
  readonly checkValue: string | undefined;
}

function recordedOf(row: ReferenceKeyEntryRow): RecordedKey {
  const details = (typeof row.details === 'string' ? JSON.parse(row.details) : (row.details ?? {})) as Record<
    string,
    unknown
  >;
  const checkValue = details['checkValue'];
  return { seq: Number(row.seq), checkValue: typeof checkValue === 'string' ? checkValue : undefined };
}

/** The newest successful entry naming the key (any, intact or not: the runtime fails closed on it). */
async function recordedKey(db: Db): Promise<RecordedKey | undefined> {
  const rows = (await referenceKeyEntries(db, REFERENCE_KEY_ACTIONS)).filter((r) => r.outcome === 'success');
  const last = rows[rows.length - 1];
  return last === undefined ? undefined : recordedOf(last);
}

function keyMissing(detail: string): AppError {
  return new AppError('REFERENCE_KEY_MISSING', { detail });
}

const isTransaction = (db: Db): db is Knex.Transaction => (db as { isTransaction?: boolean }).isTransaction === true;

async function inTransaction<T>(db: Db, work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  return isTransaction(db) ? work(db) : (db as Knex).transaction(work);
}

class Registration {
  /** Newest first: after a master rotation in-process, the newest source opens the rewrapped key. */
  readonly wrappers: ReferenceKeyWrapper[] = [];
  private key: Buffer | undefined;
  /** Transactions that created or recorded the key: not cached until another transaction reads it. */
  private readonly creators = new WeakSet<object>();

  async material(db: Db): Promise<Buffer> {
    if (this.key !== undefined) return this.key;
    let recorded = await recordedKey(db);
    let row = await findReferenceKey(db);
    if (row === undefined) {
      // Created once, recorded in the trail: never silently again (a new key = new digests = double points).
      if (recorded !== undefined) {
        throw keyMissing(
          `the reference-digest key recorded by audit entry ${recorded.seq} is gone: restore reference_digest_keys from a backup (docs/key-management.md)`,
        );
      }
      await inTransaction(db, (trx) => this.create(trx));
      if (isTransaction(db)) this.creators.add(db);
      row = await findReferenceKey(db);
      recorded = await recordedKey(db);
      if (row === undefined)
        throw new AppError('MASTER_KEY_UNAVAILABLE', { detail: 'the reference key was not created' });
    }
    const key = await this.unwrap(row);
    const checkValue = referenceKeyCheckValue(key);
    if (recorded === undefined) {
      // Created by an earlier release, before its creation was audited: recorded now, checked from now on.
      await inTransaction(db, (trx) => recordKey(trx, 'reference-key.recorded', row.kek_id, checkValue));
      if (isTransaction(db)) this.creators.add(db);
    } else if (recorded.checkValue !== checkValue) {
      throw keyMissing(
        `the reference-digest key is not the one audit entry ${recorded.seq} recorded (check value differs): restore reference_digest_keys from a backup (docs/key-management.md)`,
      );
    }
    // A key created in a transaction that may yet roll back must not outlive it in the cache.
    if (!this.creators.has(db)) this.key = key;
    return key;
  }

  /** Creates version 1 and its audit entry unless it exists (a concurrent creator's insert wins). */
  async create(trx: Knex.Transaction): Promise<void> {
    const wrapper = this.wrappers[0];
    if (wrapper === undefined) throw unregistered();
    const material = randomBytes(32);
    try {
      const wrapped = await wrapper.wrap(material, referenceKeyAad(1));
      const inserted = await insertReferenceKeyIfAbsent(trx, {
        wrappedKey: wrapped,
        kekId: wrapper.keyId,
        createdAt: new Date(),
      });
      if (inserted) await recordKey(trx, 'reference-key.created', wrapper.keyId, referenceKeyCheckValue(material));
    } finally {
      material.fill(0);
    }
  }

  forget(): void {
    // Dropped, not zeroed: a request in flight may still be computing a digest with it.
    this.key = undefined;
  }

  async unwrap(row: ReferenceKeyRow): Promise<Buffer> {
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

async function recordKey(
  trx: Knex.Transaction,
  action: (typeof REFERENCE_KEY_ACTIONS)[number],
  kekId: string,
  checkValue: string,
): Promise<void> {
  await appendAuditEvent(trx, {
    actor: 'system',
    actorType: 'system',
    action,
    outcome: 'success',
    origin: 'reference-digests',
    resource: REFERENCE_KEY_RESOURCE,
    details: { version: 1, algorithm: 'HMAC-SHA256', strengthBits: 256, kekId, checkValue },
  });
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

/**
 * At start-up: creates the key (with its audit entry) when the database has none and the trail records
 * none; records a key an earlier release created without an entry. A key the trail records but that is
 * gone or replaced does not stop the start: every use refuses (`REFERENCE_KEY_MISSING`) and `keys
 * status` reports it.
 */
export async function ensureReferenceKey(knex: Knex): Promise<void> {
  try {
    await registrationOf(knex).material(knex);
  } catch (error) {
    if (error instanceof AppError && error.code === 'REFERENCE_KEY_MISSING') return;
    throw error;
  }
}

/** One problem with the reference key, for `keys audit verify` and `keys status`. */
export interface ReferenceKeyFinding {
  readonly problem: string;
}

/**
 * The reference key against the keyed trail: the row gone while an intact entry records it, a key
 * whose check value is not the recorded one (replaced) or that does not unwrap under `wrapper`, a row
 * no intact entry records, an entry that does not verify. Empty when they agree (or when neither
 * exists: no card-shaped id needed a digest yet).
 */
export async function reconcileReferenceKey(
  db: Knex | Knex.Transaction,
  wrapper: ReferenceKeyWrapper,
): Promise<ReferenceKeyFinding[]> {
  const findings: ReferenceKeyFinding[] = [];
  let intact: RecordedKey | undefined;
  for (const row of await referenceKeyEntries(db, REFERENCE_KEY_ACTIONS)) {
    if (row.outcome !== 'success') continue;
    if (await auditEntryIntact(db, Number(row.seq))) intact = recordedOf(row);
    else findings.push({ problem: `its ${row.action} entry ${row.seq} does not verify (not counted)` });
  }
  const row = await findReferenceKey(db);
  if (row === undefined) {
    if (intact !== undefined) {
      findings.push({
        problem: `the audit trail recorded it (entry ${intact.seq}) but its row is gone: every id needing a digest is refused (REFERENCE_KEY_MISSING) until it is restored from a backup`,
      });
    }
    return findings;
  }
  if (intact === undefined) {
    findings.push({
      problem: 'its row exists but no intact reference-key entry records it (created outside the service?)',
    });
    return findings;
  }
  let key: Buffer;
  try {
    key = await wrapper.unwrap(row.wrapped_key, referenceKeyAad(row.version));
  } catch (error) {
    findings.push({
      problem: isMasterKeyUnavailable(error)
        ? 'could not be checked: the master key is unavailable'
        : 'its row does not unwrap under the current master key (replaced?)',
    });
    return findings;
  }
  try {
    if (referenceKeyCheckValue(key) !== intact.checkValue) {
      findings.push({
        problem: `it was replaced: its check value differs from the one entry ${intact.seq} recorded; every id needing a digest is refused (REFERENCE_KEY_MISSING)`,
      });
    }
  } finally {
    key.fill(0);
  }
  return findings;
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
