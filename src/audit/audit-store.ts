/**
 * SQL of the audit trail: the entries (`audit_events`), the chain head (`audit_chain_head`) and the
 * audit-chain keys (`audit_chain_keys`). Functions take a knex handle or a transaction: the callers
 * (audit-log.ts, audit-verify.ts, …) decide where a transaction begins, what is locked in which order
 * and what is verified; this file only reads and writes rows. Nothing here checks a MAC or a seal.
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

/** The values of `audit_events.outcome` (re-exported by audit-chain.ts and audit-log.ts). */
export type AuditOutcome = 'success' | 'failure' | 'denied';
/** The values of `audit_events.actor_type`. */
export type ActorType = 'client' | 'custodian' | 'operator' | 'service' | 'system';

/** An `audit_events` row as stored. */
export interface AuditRow {
  seq: number;
  id: string;
  occurred_at: Date;
  actor: string;
  actor_type: ActorType;
  action: string;
  outcome: AuditOutcome;
  origin: string;
  resource: string;
  details: Record<string, unknown> | string;
  details_digest: string | null;
  details_salt: string | null;
  key_version: number | null;
  prev_hash: string;
  hash: string;
}

/** The `audit_chain_head` row (one, id 1). */
export interface HeadRow {
  id: number;
  seq: number;
  hash: string;
  key_version: number | null;
  mac: string | null;
  legacy_verdict: string | null;
}

/** An `audit_chain_keys` row: a version and its wrapped key (and, when selected, the wrapping key's id). */
export interface ChainKeyRow {
  version: number;
  wrapped_key: Buffer;
  kek_id?: string;
}

// ---- the chain head ----------------------------------------------------------------------------

/** Locks the head row (`for update`): every append holds this lock, which keeps the chain linear. */
export async function lockAuditHead(trx: Knex.Transaction): Promise<HeadRow | undefined> {
  return (await trx('audit_chain_head').where({ id: 1 }).forUpdate().first()) as HeadRow | undefined;
}

/** The head row, not locked (verification). */
export async function readAuditHead(db: Db): Promise<HeadRow | undefined> {
  return (await db('audit_chain_head').where({ id: 1 }).first()) as HeadRow | undefined;
}

/** The version of the key the head is sealed under, or undefined without a head row. */
export async function headKeyVersion(db: Db): Promise<{ key_version: number | null } | undefined> {
  return (await db('audit_chain_head').where({ id: 1 }).first('key_version')) as
    { key_version: number | null } | undefined;
}

/** Points the head at entry `seq` with its MAC, sealed under `keyVersion` with `mac`. */
export async function writeAuditHead(
  trx: Knex.Transaction,
  head: { seq: number; hash: string; keyVersion: number; mac: string },
): Promise<void> {
  await trx('audit_chain_head')
    .where({ id: 1 })
    .update({ seq: head.seq, hash: head.hash, key_version: head.keyVersion, mac: head.mac });
}

// ---- entries -----------------------------------------------------------------------------------

/** Appends one entry row (the caller holds the head lock). */
export async function insertAuditEntry(
  trx: Knex.Transaction,
  row: Omit<AuditRow, 'details'> & { details: string },
): Promise<void> {
  await trx('audit_events').insert({
    seq: row.seq,
    id: row.id,
    occurred_at: row.occurred_at,
    actor: row.actor,
    actor_type: row.actor_type,
    action: row.action,
    outcome: row.outcome,
    origin: row.origin,
    resource: row.resource,
    details: row.details,
    details_digest: row.details_digest,
    details_salt: row.details_salt,
    key_version: row.key_version,
    prev_hash: row.prev_hash,
    hash: row.hash,
  });
}

/** Entry `seq`, or undefined. */
export async function findEntry(db: Db, seq: number): Promise<AuditRow | undefined> {
  return (await db('audit_events').where({ seq }).first()) as AuditRow | undefined;
}

/** Entry `seq`, locked (`for update`) for a change to it. */
export async function lockEntry(trx: Knex.Transaction, seq: number): Promise<AuditRow | undefined> {
  return (await trx('audit_events').where({ seq }).forUpdate().first()) as AuditRow | undefined;
}

/** The MAC of entry `seq` (a checkpoint's entry). */
export async function entryHash(db: Db, seq: number): Promise<{ hash: string } | undefined> {
  return (await db('audit_events').where({ seq }).first('hash')) as { hash: string } | undefined;
}

/** The highest `seq` written, whatever the head says. */
export async function lastEntrySeq(trx: Knex.Transaction): Promise<{ seq: number | null }> {
  return (await trx('audit_events').max('seq as seq').first()) as { seq: number | null };
}

/** Up to `limit` entries from `fromSeq` (inclusive), in order: verification's batches. */
export async function entriesFrom(db: Db, fromSeq: number, limit: number): Promise<AuditRow[]> {
  return (await db('audit_events').where('seq', '>=', fromSeq).orderBy('seq').limit(limit)) as AuditRow[];
}

/** Up to `limit` entries after `afterSeq` (exclusive), in order: the conversion's batches. */
export async function auditEntriesAfter(trx: Knex.Transaction, afterSeq: number, limit: number): Promise<AuditRow[]> {
  return (await trx('audit_events').where('seq', '>', afterSeq).orderBy('seq').limit(limit)) as AuditRow[];
}

/** Entries `first` to `last` (inclusive), in order. */
export async function entriesBetween(db: Db, first: number, last: number): Promise<AuditRow[]> {
  return (await db('audit_events').whereBetween('seq', [first, last]).orderBy('seq')) as AuditRow[];
}

/**
 * The first entry at or after `from` and the last one before `to`, by `seq` (instances' clocks may
 * differ slightly, `seq` never does): the bounds of a contiguous run of the chain.
 */
export async function seqBoundsOf(
  knex: Knex,
  range: { from: Date; to: Date },
): Promise<{ first: number | string | null; last: number | string | null }> {
  return (await knex('audit_events')
    .min({ first: knex.raw('case when occurred_at >= ? then seq end', [range.from]) })
    .max({ last: knex.raw('case when occurred_at < ? then seq end', [range.to]) })
    .first()) as { first: number | string | null; last: number | string | null };
}

/** Whether any entry is keyed (has a key version). */
export async function anyKeyedEntry(trx: Knex.Transaction): Promise<boolean> {
  const keyed: unknown = await trx('audit_events').whereNotNull('key_version').first('seq');
  return keyed !== undefined;
}

/** The lowest `seq` of an entry dated after `at`. */
export async function firstEntrySeqAfter(trx: Knex.Transaction, at: Date): Promise<{ seq: number | null } | undefined> {
  return (await trx('audit_events').where('occurred_at', '>', at).min('seq as seq').first()) as
    { seq: number | null } | undefined;
}

/** Rewrites an entry's chain columns (the conversion re-MACs the plain chain under the key). */
export async function rechainEntry(
  trx: Knex.Transaction,
  seq: number,
  chain: { details_salt: string | null; details_digest: string; key_version: number; prev_hash: string; hash: string },
): Promise<void> {
  await trx('audit_events').where({ seq }).update({
    details_salt: chain.details_salt,
    details_digest: chain.details_digest,
    key_version: chain.key_version,
    prev_hash: chain.prev_hash,
    hash: chain.hash,
  });
}

/** Replaces an entry's details by a tombstone (its JSON) and discards its salt. */
export async function tombstoneEntry(trx: Knex.Transaction, seq: number, tombstone: string): Promise<void> {
  await trx('audit_events').where({ seq }).update({ details: tombstone, details_salt: null });
}

/** Replaces the details of an entry the migration redacted (its salt is already gone). */
export async function replaceEntryDetails(trx: Knex.Transaction, seq: number, details: string): Promise<void> {
  await trx('audit_events').where({ seq }).update({ details });
}

/**
 * Whether an entry matches (e.g. `{ action, resource, outcome }`): for a capability asking whether the
 * trail records something. It says nothing about the entry's MAC (see `auditEntryIntact`).
 */
export async function auditEntryExists(
  db: Db,
  match: { readonly action: string; readonly resource?: string; readonly outcome: AuditOutcome },
): Promise<boolean> {
  const row = (await db('audit_events').where(match).first('seq')) as unknown;
  return row !== undefined;
}

/** The successful entries of `action`, in order: their seq and resource. */
export async function successfulAuditEntries(
  db: Db,
  action: string,
): Promise<{ seq: number | string; resource: string }[]> {
  return (await db('audit_events').where({ action, outcome: 'success' }).orderBy('seq').select('seq', 'resource')) as {
    seq: number | string;
    resource: string;
  }[];
}

// ---- audit-chain keys --------------------------------------------------------------------------

/** Version `version` of the audit-chain key, wrapped. */
export async function findChainKey(db: Db, version: number): Promise<ChainKeyRow | undefined> {
  return (await db('audit_chain_keys').where({ version }).first('version', 'wrapped_key')) as ChainKeyRow | undefined;
}

/** The active audit-chain key's version and the id of the master key it is wrapped under. */
export async function activeChainKeyVersion(
  trx: Knex.Transaction,
): Promise<{ version: number; kek_id: string } | undefined> {
  return (await trx('audit_chain_keys').where({ state: 'active' }).first('version', 'kek_id')) as
    { version: number; kek_id: string } | undefined;
}

/** The highest audit-chain key version, whatever its state. */
export async function latestChainKeyVersion(trx: Knex.Transaction): Promise<{ v: number | null } | undefined> {
  return (await trx('audit_chain_keys').max('version as v').first()) as { v: number | null } | undefined;
}

/** Every audit-chain key version, whatever its state: each one's creation must be in the trail. */
export async function chainKeyVersions(db: Db): Promise<number[]> {
  const rows = (await db('audit_chain_keys').orderBy('version').select('version')) as { version: number }[];
  return rows.map((r) => Number(r.version));
}

/** The lowest audit-chain key version, whatever its state: whether a key was ever created. */
export async function firstChainKeyVersion(trx: Knex.Transaction): Promise<{ v: number | null } | undefined> {
  return (await trx('audit_chain_keys').min('version as v').first()) as { v: number | null } | undefined;
}

export async function insertChainKey(
  trx: Knex.Transaction,
  key: { version: number; wrappedKey: Buffer; kekId: string; createdAt: Date },
): Promise<void> {
  await trx('audit_chain_keys').insert({
    version: key.version,
    state: 'active',
    wrapped_key: key.wrappedKey,
    kek_id: key.kekId,
    created_at: key.createdAt,
  });
}

/** Every audit-chain key row, locked (`for update`): a master-key rotation rewraps them. */
export async function lockChainKeys(trx: Knex.Transaction): Promise<ChainKeyRow[]> {
  return (await trx('audit_chain_keys').forUpdate()) as ChainKeyRow[];
}

export async function rewrapChainKey(
  trx: Knex.Transaction,
  version: number,
  wrapped: { wrappedKey: Buffer; kekId: string },
): Promise<void> {
  await trx('audit_chain_keys').where({ version }).update({ wrapped_key: wrapped.wrappedKey, kek_id: wrapped.kekId });
}

// ---- outside the trail's own tables ------------------------------------------------------------

/** When the migration `name` (a prefix of it) ran, or undefined when it has not. */
export async function migrationTime(
  trx: Knex.Transaction,
  name: string,
): Promise<{ migration_time: Date | string } | undefined> {
  return (await trx('knex_migrations').where('name', 'like', `${name}%`).first('migration_time')) as
    { migration_time: Date | string } | undefined;
}

/**
 * The audit-signing public keys (PEM) of every version: the keys a checkpoint may be signed with. Read
 * from the key ring's table (`data_keys`, public halves only); a verifier trusts one only when its
 * thumbprint is pinned outside the database (audit-checkpoint.ts).
 */
export async function auditSigningPublicKeyPems(db: Db): Promise<string[]> {
  return (await db('data_keys').where({ purpose: 'audit-signing' }).pluck('public_key_pem')) as string[];
}

/** One audit-signing public key: version `version`, or the active one when `version` is undefined. */
export async function auditSigningPublicKey(
  db: Db,
  version: number | undefined,
): Promise<{ version: number; public_key_pem: string } | undefined> {
  const query = db('data_keys').where({ purpose: 'audit-signing' });
  if (version !== undefined) void query.andWhere({ version });
  else void query.andWhere({ state: 'active' });
  return (await query.first('version', 'public_key_pem')) as { version: number; public_key_pem: string } | undefined;
}

/** The successful entries of `action` on `resource`, in order (their MACs unchecked: see auditEntryIntact). */
export async function successfulEntriesOn(db: Db, action: string, resource: string): Promise<AuditRow[]> {
  return (await db('audit_events')
    .where({ action, resource, outcome: 'success' })
    .orderBy('seq')
    .select()) as AuditRow[];
}
