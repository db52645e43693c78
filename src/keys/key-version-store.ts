/**
 * SQL of the data-key versions (`data_keys`) and the key-ring generation (`key_ring_generation`),
 * with the key-state lock that serialises state changes with the writes checked against them.
 * Functions take a knex handle or the caller's transaction: the ring, the key manager and the
 * backfill decide where a transaction begins.
 */
import type { Knex } from 'knex';
import type { KeyPurpose } from '../crypto/key-specs.js';
import type { KeyState } from './key-states.js';

type Db = Knex | Knex.Transaction;

/** A `data_keys` row as the key manager reads it (`wrapped_key` aside). */
export interface DataKeyRecord {
  purpose: KeyPurpose;
  version: number;
  state: KeyState;
  algorithm: string;
  strength_bits: number;
  kek_id: string;
  cryptoperiod_days: number;
  created_at: Date;
  published_at: Date | null;
  activated_at: Date | null;
  retired_at: Date | null;
  destroyed_at: Date | null;
  public_key_pem: string | null;
  state_generation: number | string | null;
}

/** What the ring loads: the wrapped material of a version (null once destroyed). */
export interface WrappedKeyRow {
  purpose: KeyPurpose;
  version: number;
  state: KeyState;
  wrapped_key: Buffer | null;
}

/** What a master-key rotation reads and rewraps. */
export interface WrappingRow {
  purpose: KeyPurpose;
  version: number;
  kek_id: string;
  wrapped_key: Buffer;
}

/** What a cryptoperiod is computed from (cryptoperiods.ts). */
export interface PeriodRow {
  purpose: KeyPurpose;
  version: number;
  state: KeyState;
  cryptoperiod_days: number;
  created_at: Date;
  published_at: Date | null;
  activated_at: Date | null;
}

/** The row `insertDataKey` writes. */
export interface NewDataKey {
  purpose: KeyPurpose;
  version: number;
  state: 'active' | 'published';
  algorithm: string;
  strength_bits: number;
  wrapped_key: Buffer;
  kek_id: string;
  cryptoperiod_days: number;
  public_key_pem: string | null;
  certificate_pem: string | null;
  certificate_seal: Buffer | null;
  created_at: Date;
  published_at: Date;
  activated_at: Date | null;
}

/** The current `key_ring_generation`. */
export async function readGeneration(db: Db): Promise<number> {
  const row = (await db('key_ring_generation').where({ id: 1 }).first('generation')) as { generation: number | string };
  return Number(row.generation);
}

/** The readable versions of these purposes, with their wrapped material. */
export async function readableKeys(
  db: Db,
  states: readonly KeyState[],
  purposes: readonly KeyPurpose[],
): Promise<WrappedKeyRow[]> {
  return (await db('data_keys')
    .whereIn('state', states as KeyState[])
    .whereIn('purpose', purposes as KeyPurpose[])
    .select('purpose', 'version', 'state', 'wrapped_key')) as WrappedKeyRow[];
}

/** Whether `purpose` has any version at all. */
export async function hasKeyVersion(db: Db, purpose: KeyPurpose): Promise<boolean> {
  return (await db('data_keys').where({ purpose }).first('version')) !== undefined;
}

export async function insertDataKey(trx: Knex.Transaction, row: NewDataKey): Promise<void> {
  await trx('data_keys').insert(row);
}

/** Every version of every purpose, by purpose and version. */
export async function allKeyVersions(db: Db): Promise<DataKeyRecord[]> {
  return (await db('data_keys').orderBy(['purpose', 'version'])) as DataKeyRecord[];
}

/** Every version of `purpose`, oldest first. */
export async function keyVersionsOf(db: Db, purpose: KeyPurpose): Promise<DataKeyRecord[]> {
  return (await db('data_keys').where({ purpose }).orderBy('version')) as DataKeyRecord[];
}

/** One version, or undefined. `lock`: FOR UPDATE, until the caller's transaction ends. */
export async function keyVersion(
  db: Db,
  purpose: KeyPurpose,
  version: number,
  lock: 'for-update' | undefined = undefined,
): Promise<DataKeyRecord | undefined> {
  const query = db('data_keys').where({ purpose, version });
  return (await (lock === 'for-update' ? query.forUpdate() : query).first()) as DataKeyRecord | undefined;
}

/** Locks one version's row (FOR UPDATE) until the caller's transaction ends. */
export async function lockKeyVersion(trx: Knex.Transaction, purpose: KeyPurpose, version: number): Promise<void> {
  await trx('data_keys').where({ purpose, version }).forUpdate();
}

export async function keyStateOf(db: Db, purpose: KeyPurpose, version: number): Promise<KeyState | undefined> {
  const row = (await db('data_keys').where({ purpose, version }).first('state')) as { state: KeyState } | undefined;
  return row?.state;
}

/** The generation in which a version's state last changed; null for rows older than the column. */
export async function stateGenerationOf(
  db: Db,
  purpose: KeyPurpose,
  version: number,
): Promise<number | string | null | undefined> {
  const row = (await db('data_keys').where({ purpose, version }).first('state_generation')) as
    { state_generation: number | string | null } | undefined;
  return row?.state_generation;
}

/** When a version was activated (it exists: the caller read it from the ring). */
export async function activatedAt(db: Db, purpose: KeyPurpose, version: number): Promise<Date | null> {
  const row = (await db('data_keys').where({ purpose, version }).first('activated_at')) as {
    activated_at: Date | null;
  };
  return row.activated_at;
}

/** The public half of a version (audit-signing, the client CA), as stored. */
export async function publicKeyPemOf(db: Db, purpose: KeyPurpose, version: number): Promise<string> {
  const row = (await db('data_keys').where({ purpose, version }).first()) as { public_key_pem: string };
  return row.public_key_pem;
}

/** The newest version number of `purpose` (0 when none). */
export async function latestVersion(db: Db, purpose: KeyPurpose): Promise<number> {
  const latest = (await db('data_keys').where({ purpose }).max('version as v').first()) as { v: number | null };
  return latest.v ?? 0;
}

/** The version numbers of `purpose` in these states. */
export async function versionsIn(db: Db, purpose: KeyPurpose, states: readonly KeyState[]): Promise<number[]> {
  return (await db('data_keys')
    .where({ purpose })
    .whereIn('state', states as KeyState[])
    .pluck('version')) as number[];
}

/** The cryptoperiod inputs of every published or active version. */
export async function livePeriodRows(db: Db): Promise<PeriodRow[]> {
  return (await db('data_keys')
    .whereIn('state', ['published', 'active'])
    .orderBy(['purpose', 'version'])
    .select(
      'purpose',
      'version',
      'state',
      'cryptoperiod_days',
      'created_at',
      'published_at',
      'activated_at',
    )) as PeriodRow[];
}

/** Makes `version` the active one of `purpose`; the active one before it becomes decrypt-only. */
export async function activateVersion(
  trx: Knex.Transaction,
  purpose: KeyPurpose,
  version: number,
  at: Date,
): Promise<void> {
  await trx('data_keys').where({ purpose, state: 'active' }).update({ state: 'decrypt-only' });
  await trx('data_keys').where({ purpose, version }).update({ state: 'active', activated_at: at });
}

export async function retireVersion(trx: Knex.Transaction, purpose: KeyPurpose, version: number, at: Date) {
  await trx('data_keys').where({ purpose, version }).update({ state: 'retired', retired_at: at });
}

/** Marks a version destroyed and wipes its wrapped material. */
export async function destroyVersion(trx: Knex.Transaction, purpose: KeyPurpose, version: number, at: Date) {
  await trx('data_keys')
    .where({ purpose, version })
    .update({ state: 'destroyed', wrapped_key: null, destroyed_at: at });
}

/** Every version that still has wrapped material, by purpose and version. */
export async function wrappedKeys(db: Db): Promise<WrappingRow[]> {
  return (await db('data_keys')
    .whereNotNull('wrapped_key')
    .orderBy(['purpose', 'version'])
    .select('purpose', 'version', 'kek_id', 'wrapped_key')) as WrappingRow[];
}

/** Locks every version that still has wrapped material (FOR UPDATE) and reads it. */
export async function lockWrappedKeys(trx: Knex.Transaction): Promise<WrappingRow[]> {
  return (await trx('data_keys')
    .whereNotNull('wrapped_key')
    .forUpdate()
    .select('purpose', 'version', 'wrapped_key', 'kek_id')) as WrappingRow[];
}

/** Stores a version's material wrapped anew, and the master key that wrapped it. */
export async function setWrapping(
  trx: Knex.Transaction,
  key: { purpose: KeyPurpose; version: number },
  wrapped: Buffer,
  kekId: string,
): Promise<void> {
  await trx('data_keys')
    .where({ purpose: key.purpose, version: key.version })
    .update({ wrapped_key: wrapped, kek_id: kekId });
}

/**
 * The advisory lock key ('keystate' as a 64-bit integer) that serialises key-state changes with the
 * writes checked by `assert_key_version_writable` (migration 20261206000700): writers take it shared,
 * state changes exclusively, each until its transaction ends.
 */
export const KEY_STATES_LOCK = '7738144525008659557';

/**
 * Starts a key-state change: waits for every write whose key check already passed to commit (so a
 * count that follows sees it), and holds back every new write until this transaction ends (so it
 * checks against the new state). Also locks the generation row, serialising state changes.
 */
export async function lockKeyStates(trx: Knex.Transaction): Promise<void> {
  // Always the generation row first, then the advisory lock: one order everywhere, no deadlock.
  await trx('key_ring_generation').where({ id: 1 }).forUpdate();
  await trx.raw(`select pg_advisory_xact_lock(${KEY_STATES_LOCK})`);
}

/**
 * Holds key-state changes back until the caller's transaction ends, while letting other writers
 * through (the shared side of {@link KEY_STATES_LOCK}): a state read in this transaction stays true
 * until it commits.
 */
export async function shareKeyStates(trx: Knex.Transaction): Promise<void> {
  await trx.raw(`select pg_advisory_xact_lock_shared(${KEY_STATES_LOCK})`);
}

/**
 * Bumps `key_ring_generation` in the caller's transaction (every ring reloads when it moved) and
 * returns the new generation; stamps it as the `state_generation` of the versions whose state this
 * transaction changed. Takes the key-state lock if the caller has not.
 */
export async function bumpGeneration(
  trx: Knex.Transaction,
  changed: readonly { purpose: KeyPurpose; version: number }[] = [],
): Promise<number> {
  const [row] = (await trx('key_ring_generation')
    .where({ id: 1 })
    .increment('generation', 1)
    .returning('generation')) as { generation: number | string }[];
  await trx.raw(`select pg_advisory_xact_lock(${KEY_STATES_LOCK})`);
  const generation = Number(row?.generation);
  for (const { purpose, version } of changed) {
    await trx('data_keys').where({ purpose, version }).update({ state_generation: generation });
  }
  return generation;
}
