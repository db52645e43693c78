/**
 * The audit-chain key: the HMAC-SHA256 key that every audit entry and the chain head are MAC'd
 * under, so that write access to the database without the master key can neither recompute an
 * entry's MAC after editing it nor seal a head over a truncated chain.
 *
 * Why a data key of its own, wrapped by the master key (envelope encryption), rather than a key
 * derived from the master key: the master key source may be an HSM that only wraps and unwraps
 * (src/keys/master-key-source.ts), and a wrapped data key survives a master-key rotation unchanged
 * (it is rewrapped, like every other data key, by `keys rotate --purpose master`), so entries
 * written years ago still verify. Each entry records the version it was MAC'd under.
 *
 * The keys live in `audit_chain_keys` (owned by this capability, not in `data_keys`), wrapped with
 * AES-256-GCM under the master key and an AAD naming the version, so a wrapped key copied onto
 * another row fails to unwrap. Version 1 is created by the first append on a database (inside that
 * append's transaction, serialised by the chain-head lock) and recorded in the chain itself.
 *
 * How code reaches the key: {@link registerAuditChainKeys} binds an unwrap capability (the master
 * key source) to one database handle, keyed by the handle's knex client configuration object, which
 * every transaction of that handle shares. `new KeyRing(knex, masterKey, …)` registers itself, so
 * the service, the CLIs and tests register by building their key ring; nothing is global across
 * databases, and services with different master keys in one process never see each other's key.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { AppError, isMasterKeyUnavailable } from '../errors/app-error.js';
import {
  activeChainKeyVersion,
  findChainKey,
  insertChainKey,
  latestChainKeyVersion,
  lockChainKeys,
  rewrapChainKey,
  type ChainKeyRow,
} from './audit-store.js';

type Db = Knex | Knex.Transaction;

/** The subset of a master key source this capability needs (src/keys/master-key-source.ts). */
export interface ChainKeyWrapper {
  readonly keyId: string;
  wrap(plaintextKey: Buffer, aad: string): Promise<Buffer>;
  unwrap(wrappedKey: Buffer, aad: string): Promise<Buffer>;
}

export const chainKeyAad = (version: number): string => `loyalty-vault/audit-chain-key/v1|${version}`;

export interface ChainKey {
  readonly version: number;
  mac(label: string, fields: readonly unknown[]): string;
}

class Registration {
  /** Newest first: after a master rotation in-process, the newest source opens the rewrapped key. */
  readonly wrappers: ChainKeyWrapper[] = [];
  /** Unwrapped keys by version: the material never changes for a version (rewrapping keeps it). */
  private readonly cache = new Map<number, ChainKey>();

  async key(db: Db, version: number): Promise<ChainKey> {
    const cached = this.cache.get(version);
    if (cached !== undefined) return cached;
    const row = await findChainKey(db, version);
    if (row === undefined) {
      throw new AppError('AUDIT_CHAIN_KEY_UNAVAILABLE', { detail: `audit-chain key v${version} does not exist` });
    }
    const raw = await this.unwrap(row);
    const key = chainKey(version, raw);
    raw.fill(0);
    this.cache.set(version, key);
    return key;
  }

  /** Drops the unwrapped keys (the vault was sealed): the next append unwraps again. */
  forget(): void {
    this.cache.clear();
  }

  /** The active version, creating one (in the caller's transaction) when there is none. */
  async active(
    trx: Knex.Transaction,
  ): Promise<{ key: ChainKey; created: boolean; kekId: string; previousVersion: number | null }> {
    const row = await activeChainKeyVersion(trx);
    if (row !== undefined) {
      return { key: await this.key(trx, row.version), created: false, kekId: row.kek_id, previousVersion: null };
    }
    // Version 1 on a new database; after a later version if a database writer demoted the active
    // one (the trail goes on under a fresh key, extending the keyed chain, and its creation is an
    // entry: never a stopped service; the caller verifies the chain it extends).
    const latest = await latestChainKeyVersion(trx);
    const version = (latest?.v ?? 0) + 1;
    const wrapper = this.wrappers[0] as ChainKeyWrapper;
    const material = randomBytes(32);
    const wrapped = await wrapper.wrap(material, chainKeyAad(version));
    await insertChainKey(trx, { version, wrappedKey: wrapped, kekId: wrapper.keyId, createdAt: new Date() });
    const key = chainKey(version, material);
    material.fill(0);
    this.cache.set(version, key);
    return { key, created: true, kekId: wrapper.keyId, previousVersion: latest?.v ?? null };
  }

  private async unwrap(row: ChainKeyRow): Promise<Buffer> {
    let unavailable: Error | undefined;
    for (const wrapper of this.wrappers) {
      try {
        return await wrapper.unwrap(row.wrapped_key, chainKeyAad(row.version));
      } catch (error) {
        // A source that cannot answer now (a token away, a sealed vault) is not "another key": when
        // no other registered source opens the row, that is the answer (503), never "altered".
        if (isMasterKeyUnavailable(error)) unavailable ??= error as Error;
        // another master key, or an altered row: try the next registered source
      }
    }
    if (unavailable !== undefined) throw unavailable;
    throw new AppError('AUDIT_CHAIN_KEY_UNAVAILABLE', {
      detail: `audit-chain key v${row.version} does not unwrap under the configured master key (another master key, or the stored key was altered)`,
    });
  }
}

function chainKey(version: number, material: Buffer): ChainKey {
  const secret = Buffer.from(material);
  return {
    version,
    mac: (label, fields) =>
      createHmac('sha256', secret)
        .update(JSON.stringify([label, ...fields]))
        .digest('base64url'),
  };
}

const registry = new WeakMap<object, Registration>();

function handleOf(db: Db): object {
  // A transaction's client is a fresh object, but it shares the configuration object of the knex
  // instance it came from (knex makeTxClient): one registration per database handle.
  return (db.client as { config: object }).config;
}

/** Binds the master key source to this database handle: every audit append and check on it uses it. */
export function registerAuditChainKeys(db: Db, wrapper: ChainKeyWrapper): void {
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

/** Forgets the unwrapped audit-chain keys of this database handle (a sealed vault). */
export function forgetAuditChainKeys(db: Db): void {
  registry.get(handleOf(db))?.forget();
}

export function chainKeysFor(db: Db): Registration {
  const registration = registry.get(handleOf(db));
  if (registration === undefined || registration.wrappers.length === 0) {
    throw new AppError('AUDIT_CHAIN_KEY_UNAVAILABLE', {
      detail: 'no master key is registered for this database handle (build its KeyRing first)',
    });
  }
  return registration;
}

/**
 * For a master-key rotation, in its transaction: rewraps every audit-chain key under the current
 * master key (src/keys/key-manager.ts calls it beside the mTLS seals). The material is unchanged,
 * so every entry keeps verifying. Returns the versions rewrapped.
 */
export async function rewrapAuditChainKeys(trx: Knex.Transaction, masterKey: ChainKeyWrapper): Promise<number[]> {
  // Not chosen by kek_id alone: an insider who set kek_id to the current key on a row still under the
  // old one would have it skipped, and unopenable (the trail unverifiable) once the old key is gone.
  const currentOnly = currentWrapper(masterKey);
  const rows: ChainKeyRow[] = [];
  for (const row of await lockChainKeys(trx)) {
    if (row.kek_id !== masterKey.keyId) rows.push(row);
    else if (!(await opens(currentOnly, row))) rows.push(row);
  }
  const done: number[] = [];
  for (const row of rows) {
    let material: Buffer;
    try {
      material = await masterKey.unwrap(row.wrapped_key, chainKeyAad(row.version));
    } catch (error) {
      // A source that cannot answer now is not "another key": skipping would half-write a rotation.
      if (isMasterKeyUnavailable(error)) throw error;
      continue;
    }
    const wrapped = await masterKey.wrap(material, chainKeyAad(row.version));
    material.fill(0);
    await rewrapChainKey(trx, row.version, { wrappedKey: wrapped, kekId: masterKey.keyId });
    done.push(row.version);
  }
  return done;
}

/** The current key of a rotation's key set (MasterKeySet.current), else the wrapper itself. */
function currentWrapper(wrapper: ChainKeyWrapper): ChainKeyWrapper {
  const current = (wrapper as { current?: ChainKeyWrapper; previous?: unknown }).current;
  return current !== undefined && 'previous' in wrapper ? currentWrapper(current) : wrapper;
}

async function opens(wrapper: ChainKeyWrapper, row: ChainKeyRow): Promise<boolean> {
  try {
    (await wrapper.unwrap(Buffer.from(row.wrapped_key), chainKeyAad(row.version))).fill(0);
    return true;
  } catch (error) {
    if (isMasterKeyUnavailable(error)) throw error;
    return false;
  }
}
