/**
 * The data-key ring: versioned AES-256 and HMAC keys, each wrapped by the master key (envelope
 * encryption) and stored in `data_keys`; unwrapped only into this process's memory.
 *
 * Which versions serve what:
 * - the one `active` version of a purpose encrypts / MACs every new value;
 * - `published`, `active` and `decrypt-only` versions decrypt and serve lookups (a lookup computes
 *   the fingerprint under each and matches any, so a MAC rotation never breaks a lookup);
 * - `retired` and `destroyed` versions are never used.
 *
 * Another process (the key CLI, another instance) may change the ring at any time. Every change bumps
 * `key_ring_generation` in the same transaction; this ring re-reads that counter at most every
 * `refreshIntervalMs` and reloads when it moved, and reloads at once when asked for a version it has
 * not seen. Rotation publishes a version before activating it (two-phase), so no instance is asked to
 * read data under a version it cannot load.
 *
 * Whatever a ring has cached, the database refuses a row written under a version that is not writable
 * at that moment (triggers of migration 20261206000700): the writer recognises the refusal
 * ({@link isKeyVersionNotWritable}), reloads and retries once ({@link retryOnStaleKey}). Each instance
 * reports the generation it has loaded in a heartbeat (instance-heartbeat.ts), which the key CLI waits
 * for before activating, retiring or destroying a version.
 *
 * Callers inside a transaction pass it as `db`: a check or reload then runs on that transaction's
 * connection. (On a single-connection database such as PGlite, a query on the pool while the caller
 * holds the only connection would wait forever; on PostgreSQL it would take a second connection.)
 */
import { createPrivateKey, createPublicKey, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import type { Knex } from 'knex';
import { registerAuditChainKeys } from '../audit/audit-chain-keys.js';
import { ensureReferenceKey, registerReferenceKey } from './reference-digests.js';
import { appendAuditEvent } from '../audit/audit-log.js';
import { isMasterKeyUnavailable } from '../errors/app-error.js';
import type { KeyActor } from '../auth/actors.js';
import { isKeyVersionNotWritable } from '../db/key-version-check.js';
import { KEY_PURPOSES, KEY_SPECS, type KeyPurpose } from '../crypto/key-specs.js';
import type { ClientCaHooks } from './client-ca.js';
import type { KeyIdRename, MasterKeySource } from './master-key-types.js';
import { READABLE_STATES, type KeyState } from './key-states.js';
import {
  bumpGeneration,
  hasKeyVersion,
  insertDataKey,
  lockKeyStates,
  readableKeys,
  readGeneration,
  type WrappedKeyRow,
} from './key-version-store.js';
import { kekIdsInUse, registerMasterKey, renameKekId } from './master-key-store.js';

// The purposes and their specs live in a leaf module (config reads them too); re-exported here.
export { KEY_PURPOSES, KEY_SPECS, type KeyPurpose, type KeySpec } from '../crypto/key-specs.js';
export type { KeyActor } from '../auth/actors.js';
export { isKeyVersionNotWritable } from '../db/key-version-check.js';
// The states are a leaf of this folder (the key stores read them); the key-state lock and the
// generation bump are SQL and live in the store: both are part of the ring's public surface.
export { INDEXING_STATES, READABLE_STATES, type KeyState } from './key-states.js';
export { bumpGeneration, KEY_STATES_LOCK, lockKeyStates, shareKeyStates } from './key-version-store.js';

type Db = Knex | Knex.Transaction;

/**
 * Purposes whose version 1 every start creates. The client CA is created on request
 * (`keys mtls init-ca`): a deployment without mTLS has no CA key to guard.
 */
export const AUTO_CREATED_PURPOSES: readonly KeyPurpose[] = KEY_PURPOSES.filter((p) => p !== 'mtls-client-ca');

/**
 * Purposes whose keys the ring loads into every instance. The CA private key is unwrapped only by the
 * key CLI when it issues a certificate: the service needs just the CA certificates, which are public.
 */
export const RING_PURPOSES: readonly KeyPurpose[] = AUTO_CREATED_PURPOSES;

/** Longest validity of a client certificate (days): the CA certificate outlives its key by this. */
export const MAX_CLIENT_CERTIFICATE_DAYS = 397;

/** The documented default cryptoperiod of every purpose. */
export const DEFAULT_CRYPTOPERIOD_DAYS = Object.fromEntries(
  KEY_PURPOSES.map((p) => [p, KEY_SPECS[p].cryptoperiodDays]),
) as Readonly<Record<KeyPurpose, number>>;

export interface DataKey {
  readonly purpose: KeyPurpose;
  readonly version: number;
  readonly state: KeyState;
  readonly key: KeyObject;
}

export function wrappingAad(purpose: string, version: number): string {
  return `loyalty-vault/data-key/v1|${purpose}|${version}`;
}

export class KeyRing {
  private keys = new Map<string, DataKey>();
  /** The wrapped bytes each loaded version was unwrapped from (not secret). */
  private wrapped = new Map<string, Buffer>();
  private generation = -1;
  private checkedAt = 0;
  private loading: Promise<void> | undefined;
  private readonly loadListeners: ((generation: number) => void)[] = [];

  constructor(
    private readonly knex: Knex,
    private readonly masterKey: MasterKeySource,
    private readonly refreshIntervalMs: number,
  ) {
    // The audit trail of this database handle is MAC'd under a key this master key unwraps.
    registerAuditChainKeys(knex, masterKey);
    // So is the key of the digests stored in place of card-shaped UUID ids (reference-digests.ts).
    registerReferenceKey(knex, masterKey);
  }

  /** Creates version 1 of each purpose on first start (concurrent starts create it once). */
  async ensureInitialKeys(origin: string): Promise<void> {
    await renameLegacyKekIds(this.knex, this.masterKey.keyIdRenames ?? []);
    await registerMasterKey(this.knex, {
      kekId: this.masterKey.keyId,
      description: this.masterKey.description,
      createdAt: new Date(),
    });
    for (const purpose of AUTO_CREATED_PURPOSES) {
      if (await hasKeyVersion(this.knex, purpose)) continue;
      await this.knex.transaction(async (trx) => {
        // Serialise concurrent first starts on the generation row, then re-check.
        await lockKeyStates(trx);
        if (await hasKeyVersion(trx, purpose)) return;
        await insertNewKey(trx, this.masterKey, purpose, 1, 'active', { actor: 'system', actorType: 'system', origin });
      });
    }
    await ensureReferenceKey(this.knex);
    await this.reload();
  }

  async active(purpose: KeyPurpose, db: Db = this.knex): Promise<DataKey> {
    await this.refreshIfDue(db);
    const key = [...this.keys.values()].find((k) => k.purpose === purpose && k.state === 'active');
    if (key === undefined) throw new Error(`no active ${purpose} key`);
    return key;
  }

  /** Every version of `purpose` that may serve lookups and decryption, newest first. */
  async readable(purpose: KeyPurpose, db: Db = this.knex): Promise<DataKey[]> {
    await this.refreshIfDue(db);
    return [...this.keys.values()].filter((k) => k.purpose === purpose).sort((a, b) => b.version - a.version);
  }

  async version(purpose: KeyPurpose, version: number, db: Db = this.knex): Promise<DataKey> {
    await this.refreshIfDue(db);
    let key = this.keys.get(`${purpose}:${version}`);
    if (key === undefined) {
      await this.reload(db);
      key = this.keys.get(`${purpose}:${version}`);
    }
    if (key === undefined) throw new Error(`${purpose} key version ${version} is not readable`);
    return key;
  }

  /**
   * Drops every unwrapped data key (the vault was sealed): the next use reloads, which a sealed
   * master key refuses with VAULT_SEALED. KeyObjects cannot be wiped from JavaScript; they are left
   * to the garbage collector.
   */
  forget(): void {
    this.keys = new Map();
    this.wrapped = new Map();
    this.generation = -1;
    this.checkedAt = 0;
  }

  /** The `key_ring_generation` this ring has loaded (-1 before its first load). */
  get loadedGeneration(): number {
    return this.generation;
  }

  get refreshInterval(): number {
    return this.refreshIntervalMs;
  }

  /** Called with the generation after every load (the heartbeat reports it at once). */
  onLoad(listener: (generation: number) => void): void {
    this.loadListeners.push(listener);
  }

  /** Checks the generation now, whatever the interval, and reloads when it moved. */
  async refresh(db: Db = this.knex): Promise<void> {
    this.checkedAt = 0;
    await this.refreshIfDue(db);
  }

  /** Forces a reload now (after this process changed the ring itself). */
  async reload(db: Db = this.knex): Promise<void> {
    // A load on a transaction is never shared: another caller waiting on it from the pool could be
    // waiting for the very connection that transaction holds.
    if (db !== this.knex) return this.load(db);
    this.loading ??= this.load(db).finally(() => {
      this.loading = undefined;
    });
    await this.loading;
  }

  /**
   * A reload that starts after this call: used after the database refused a key version. A load
   * already running may have read `data_keys` before the state change committed; joining it would
   * retry on the same stale ring, so it is waited out (its outcome ignored) and a fresh load follows
   * (or one that another caller started after it, which is as fresh).
   */
  async reloadFresh(db: Db = this.knex): Promise<void> {
    if (db !== this.knex) return this.load(db);
    const running = this.loading;
    if (running !== undefined) await running.catch(() => undefined);
    await this.reload(db);
  }

  private async refreshIfDue(db: Db): Promise<void> {
    if (Date.now() - this.checkedAt < this.refreshIntervalMs && this.generation >= 0) return;
    const generation = await readGeneration(db);
    this.checkedAt = Date.now();
    if (generation !== this.generation) await this.reload(db);
  }

  private async load(db: Db): Promise<void> {
    const generation = await readGeneration(db);
    const rows: WrappedKeyRow[] = await readableKeys(db, READABLE_STATES, RING_PURPOSES);
    const next = new Map<string, DataKey>();
    const nextWrapped = new Map<string, Buffer>();
    for (const row of rows) {
      if (row.wrapped_key === null) continue;
      const id = `${row.purpose}:${row.version}`;
      // A version already unwrapped from these very bytes (same purpose and version, hence same AAD)
      // is reused, not sent to the master key again: a reload for a state change (or an insider
      // bumping key_ring_generation) needs no token round trip on the request path, and works while
      // the token is away. Changed bytes (a master-key rotation, an altered row) are unwrapped anew.
      const wrappedBytes = Buffer.from(row.wrapped_key); // PGlite answers a Uint8Array
      const known = this.keys.get(id);
      if (known !== undefined && this.wrapped.get(id)?.equals(wrappedBytes) === true) {
        next.set(id, { ...known, state: row.state });
        nextWrapped.set(id, wrappedBytes);
        continue;
      }
      let raw: Buffer;
      try {
        raw = await this.masterKey.unwrap(row.wrapped_key, wrappingAad(row.purpose, row.version));
      } catch (error) {
        // The token away, or the vault sealed (503, retried by the caller), is not a wrong key.
        if (isMasterKeyUnavailable(error)) throw error;
        throw new Error(
          `cannot unwrap data key ${row.purpose} v${row.version} with master key ${this.masterKey.keyId}: ` +
            'it was wrapped by another master key, or the stored key was altered',
          { cause: error },
        );
      }
      next.set(id, {
        purpose: row.purpose,
        version: row.version,
        state: row.state,
        key: createSecretKey(raw),
      });
      nextWrapped.set(id, wrappedBytes);
      raw.fill(0);
    }
    this.keys = next;
    this.wrapped = nextWrapped;
    this.generation = generation;
    this.checkedAt = Date.now();
    for (const listener of this.loadListeners) listener(this.generation);
  }
}

/** Generates, wraps and stores a new data key version, audited, in the caller's transaction. */
export async function insertNewKey(
  trx: Knex.Transaction,
  masterKey: MasterKeySource,
  purpose: KeyPurpose,
  version: number,
  state: 'active' | 'published',
  actor: KeyActor,
  cryptoperiodDays: number = KEY_SPECS[purpose].cryptoperiodDays,
  /** Required for `mtls-client-ca`, whose key is a certificate authority (given by the composition root). */
  clientCa?: ClientCaHooks,
): Promise<void> {
  registerAuditChainKeys(trx, masterKey); // its audit entry below is MAC'd under a key this master key opens
  const spec = KEY_SPECS[purpose];
  let material: Buffer;
  let publicKeyPem: string | null = null;
  let certificatePem: string | null = null;
  if (purpose === 'mtls-client-ca') {
    if (clientCa === undefined) throw new Error('creating an mtls-client-ca key needs the client CA hooks');
    // An RSA-3072 key (PKCS#8 DER) and its self-signed CA certificate (src/mtls).
    const ca = clientCa.generate(version, cryptoperiodDays + MAX_CLIENT_CERTIFICATE_DAYS);
    material = ca.privateKeyDer;
    publicKeyPem = ca.publicKeyPem;
    certificatePem = ca.certificatePem;
  } else {
    // 32 random bytes: an AES-256 key, an HMAC-SHA256 key, or an Ed25519 private key (RFC 8032 seed).
    material = randomBytes(32);
    if (purpose === 'audit-signing') publicKeyPem = ed25519PublicKeyPem(material);
  }
  const wrapped = await masterKey.wrap(material, wrappingAad(purpose, version));
  material.fill(0);
  // The service trusts a CA certificate only with this seal (src/mtls/seals.ts).
  const certificateSeal =
    certificatePem === null || clientCa === undefined
      ? null
      : await clientCa.seal(masterKey, { purpose, version, certificatePem });
  const now = new Date();
  await insertDataKey(trx, {
    purpose,
    version,
    state,
    algorithm: spec.algorithm,
    strength_bits: spec.strengthBits,
    wrapped_key: wrapped,
    kek_id: masterKey.keyId,
    cryptoperiod_days: cryptoperiodDays,
    public_key_pem: publicKeyPem,
    certificate_pem: certificatePem,
    certificate_seal: certificateSeal,
    created_at: now,
    published_at: now,
    activated_at: state === 'active' ? now : null,
  });
  await bumpGeneration(trx, [{ purpose, version }]);
  await appendAuditEvent(trx, {
    ...actor,
    action: 'key.created',
    outcome: 'success',
    resource: `key:${purpose}:v${version}`,
    details: { algorithm: spec.algorithm, strengthBits: spec.strengthBits, state, kekId: masterKey.keyId },
  });
}

const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** The Ed25519 private key whose RFC 8032 seed is `seed` (32 bytes). */
export function ed25519PrivateKey(seed: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

function ed25519PublicKeyPem(seed: Buffer): string {
  return createPublicKey(ed25519PrivateKey(seed)).export({ format: 'pem', type: 'spki' }).toString();
}

/**
 * Runs a write that chose its key versions from `ring`; when the database refuses it because a version
 * is no longer writable, reloads the ring and runs it once more (choosing again), invisibly to the
 * caller. A second refusal is thrown: the ring then disagrees with a database it has just read.
 */
export async function retryOnStaleKey<T>(ring: KeyRing, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (!isKeyVersionNotWritable(error)) throw error;
    await ring.reloadFresh();
    return write();
  }
}

/**
 * Renames KEK identifiers written by an earlier release (see LocalMasterKey), in one transaction:
 * where both names exist (another instance already registered the new one), the old row goes.
 */
async function renameLegacyKekIds(knex: Knex, renames: readonly KeyIdRename[]): Promise<void> {
  const stale = renames.filter((r) => r.from !== r.to);
  if (stale.length === 0) return;
  const from = stale.map((r) => r.from);
  if (!(await kekIdsInUse(knex, from))) return;
  await knex.transaction(async (trx) => {
    for (const { from, to } of stale) await renameKekId(trx, from, to);
  });
}
