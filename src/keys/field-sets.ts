/**
 * The registry of encrypted field sets: every place in the database where a value is protected by a
 * data key, with the column that records the key version. Key rotation asks it three things: how many
 * rows each version protects (inventory, retirement proof), and to move one batch of rows to the
 * active version (the re-encryption backfill).
 *
 * A batch is read without locks, transformed in this process (decrypt / re-encrypt, or recompute a
 * fingerprint from the decrypted value), then written back set-based with compare-and-set on the old
 * key version and the old ciphertext: a row rewritten meanwhile (a new e-mail) is never overwritten, a row that another backfill (or instance) already moved is simply not updated again,
 * so any number of backfills may run at once and a crash loses nothing but the batch in flight.
 *
 * To protect another column with a data key (`pan-encryption` by default), register it with
 * {@link aesColumnFieldSet} in the owning feature and list it in src/encrypted-field-sets.ts (the
 * composition root hands the registry to rotation): nothing else in
 * rotation, retirement or the inventory needs to change.
 */
import type { Knex } from 'knex';
import { decryptValue, encryptValue } from '../crypto/field-crypto.js';
import type { DataKey, KeyPurpose, KeyRing } from './key-ring.js';
import { countByVersion, readAesBatch, writeAesBatch, type AesColumn } from './field-set-store.js';

// Every feature's field set counts its rows with it (this file is what features may import).
export { countByVersion } from './field-set-store.js';

type Db = Knex | Knex.Transaction;

export interface RowFailure {
  /** The row's identifier (token, identifier id, shopper reference): never its value. */
  readonly rowId: string;
  readonly fromVersion: number;
  /** A stable code: never an exception message, which could quote data. */
  readonly error: 'DECRYPT_FAILED' | 'KEY_UNAVAILABLE' | 'FINGERPRINT_CONFLICT' | 'SOURCE_MISSING';
}

/** One batch read: its rows transformed, ready to be written by `write`. */
export interface PreparedBatch {
  /** Rows read (the batch is the last of the pass when fewer than the limit). */
  readonly read: number;
  /** The largest row key read: the next batch starts after it. */
  readonly lastKey: string | undefined;
  readonly failures: readonly RowFailure[];
  /** Writes the transformed rows with compare-and-set; returns how many rows moved. */
  write(trx: Knex.Transaction): Promise<number>;
}

export interface BatchContext {
  readonly after: string;
  readonly limit: number;
  readonly target: DataKey;
  readonly keyRing: KeyRing;
  readonly now: Date;
}

export interface EncryptedFieldSet {
  /** Stable name, stored in progress and failure rows: `cards.pan`, `loyalty_accounts.email`, … */
  readonly name: string;
  /** The key purpose that protects it. */
  readonly purpose: KeyPurpose;
  readonly description: string;
  /** Rows per key version (versions with no rows are absent). */
  countByVersion(db: Db): Promise<Map<number, number>>;
  /** Reads the next batch of rows under a version older than `target` and prepares their new form. */
  prepareBatch(db: Db, context: BatchContext): Promise<PreparedBatch>;
}

/** Reads a key version for the backfill, as a failure code instead of an exception. */
export async function keyFor(ring: KeyRing, purpose: KeyPurpose, version: number): Promise<DataKey | undefined> {
  try {
    return await ring.version(purpose, version);
  } catch {
    return undefined;
  }
}

export interface AesColumnSpec {
  readonly name: string;
  readonly description: string;
  readonly table: string;
  /** A unique text column: the batch order and the row id in failure reports. */
  readonly idColumn: string;
  readonly ciphertextColumn: string;
  readonly versionColumn: string;
  /** The AAD the value was sealed with: binds it to its row and key version (see src/crypto/field-crypto.ts). */
  readonly aad: (rowId: string, keyVersion: number) => string;
  /** The key purpose; `pan-encryption` unless said. */
  readonly purpose?: KeyPurpose;
  /** Only rows with these column values belong to the set (a table whose rows name their key's purpose). */
  readonly rowsWhere?: Readonly<Record<string, string>>;
}

/**
 * A column holding `iv ‖ tag ‖ ciphertext` (field-crypto `encryptValue`) under a key version (of
 * `pan-encryption` unless the spec names another purpose) recorded in `versionColumn`. Re-encryption decrypts under the old version and seals
 * again under the target with a fresh IV and the AAD of the new version.
 */
export function aesColumnFieldSet(spec: AesColumnSpec): EncryptedFieldSet {
  const purpose = spec.purpose ?? 'pan-encryption';
  const column: AesColumn = {
    table: spec.table,
    idColumn: spec.idColumn,
    ciphertextColumn: spec.ciphertextColumn,
    versionColumn: spec.versionColumn,
    rowsWhere: spec.rowsWhere ?? {},
  };
  return {
    name: spec.name,
    purpose,
    description: spec.description,
    countByVersion: (db) => countByVersion(db, column.table, column.versionColumn, column.rowsWhere),
    async prepareBatch(db, context) {
      const rows = await readAesBatch(db, column, {
        belowVersion: context.target.version,
        after: context.after,
        limit: context.limit,
      });
      const failures: RowFailure[] = [];
      const ids: string[] = [];
      const sealed: Buffer[] = [];
      const olds: number[] = [];
      const oldCts: Buffer[] = [];
      const keys = new Map<number, DataKey | undefined>();
      for (const row of rows) {
        if (!keys.has(row.ver)) keys.set(row.ver, await keyFor(context.keyRing, purpose, row.ver));
        const key = keys.get(row.ver);
        if (key === undefined) {
          failures.push({ rowId: row.id, fromVersion: row.ver, error: 'KEY_UNAVAILABLE' });
          continue;
        }
        let plain: string;
        try {
          plain = decryptValue(key.key, spec.aad(row.id, row.ver), row.ct);
        } catch {
          failures.push({ rowId: row.id, fromVersion: row.ver, error: 'DECRYPT_FAILED' });
          continue;
        }
        ids.push(row.id);
        sealed.push(encryptValue(context.target.key, spec.aad(row.id, context.target.version), plain));
        olds.push(row.ver);
        oldCts.push(row.ct);
      }
      return {
        read: rows.length,
        lastKey: rows.at(-1)?.id,
        failures,
        async write(trx) {
          if (ids.length === 0) return 0;
          // Compare-and-set: only a row still holding the very value it was read with (same version
          // AND same ciphertext) is rewritten; a value written meanwhile is never overwritten with
          // the old one (the next pass moves it).
          return writeAesBatch(trx, column, context.target.version, { ids, sealed, olds, oldCts });
        },
      };
    },
  };
}

export function fieldSetsFor(purpose: KeyPurpose, registry: readonly EncryptedFieldSet[]): EncryptedFieldSet[] {
  return registry.filter((f) => f.purpose === purpose);
}
