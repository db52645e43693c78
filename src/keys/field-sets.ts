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
 * {@link aesColumnFieldSet} in {@link builtInFieldSets} (or pass it to the registry): nothing else in
 * rotation, retirement or the inventory needs to change.
 */
import type { Knex } from 'knex';
import {
  decryptValue,
  emailAad,
  encryptValue,
  fingerprint,
  identifierAad,
  panAad,
  type Identifier,
  type IdentifierKind,
} from '../crypto/field-crypto.js';
import {
  legacySubscriptionSecrets,
  SUBSCRIPTION_SECRET_PURPOSE,
  subscriptionSecretAad,
} from '../events/subscription-secrets.js';
import type { DataKey, KeyPurpose, KeyRing } from './key-ring.js';

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
async function keyFor(ring: KeyRing, purpose: KeyPurpose, version: number): Promise<DataKey | undefined> {
  try {
    return await ring.version(purpose, version);
  } catch {
    return undefined;
  }
}

async function countByVersion(
  db: Db,
  table: string,
  versionColumn: string,
  rowsWhere: Readonly<Record<string, string>> = {},
): Promise<Map<number, number>> {
  const rows = (await db(table)
    .where(rowsWhere)
    .whereNotNull(versionColumn)
    .groupBy(versionColumn)
    .select(`${versionColumn} as version`)
    .count<{ version: number; count: number | string }[]>('* as count')) as { version: number; count: number }[];
  return new Map(rows.map((r) => [r.version, Number(r.count)]));
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
  const { table, idColumn: id, ciphertextColumn: ct, versionColumn: ver } = spec;
  const purpose = spec.purpose ?? 'pan-encryption';
  const rowsWhere = spec.rowsWhere ?? {};
  return {
    name: spec.name,
    purpose,
    description: spec.description,
    countByVersion: (db) => countByVersion(db, table, ver, rowsWhere),
    async prepareBatch(db, context) {
      const rows = (await db(table)
        .where(rowsWhere)
        .andWhere(ver, '<', context.target.version)
        .andWhere(id, '>', context.after)
        .orderBy(id)
        .limit(context.limit)
        .select(`${id} as id`, `${ct} as ct`, `${ver} as ver`)) as { id: string; ct: Buffer; ver: number }[];
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
          const result = (await trx.raw(
            `update ?? as t set ?? = v.ct, ?? = ?
             from unnest(?::text[], ?::bytea[], ?::integer[], ?::bytea[]) as v (id, ct, old, old_ct)
             where t.?? = v.id and t.?? = v.old and t.?? = v.old_ct`,
            [table, ct, ver, context.target.version, ids, sealed, olds, oldCts, id, ver, ct],
          )) as { rowCount?: number; affectedRows?: number };
          return result.rowCount ?? result.affectedRows ?? 0;
        },
      };
    },
  };
}

/** Card PANs: `cards.pan_ciphertext`, AAD bound to the token and key version. */
export const cardPans = aesColumnFieldSet({
  name: 'cards.pan',
  description: 'card numbers (cards.pan_ciphertext)',
  table: 'cards',
  idColumn: 'token',
  ciphertextColumn: 'pan_ciphertext',
  versionColumn: 'pan_key_version',
  aad: panAad,
});

/** PAR and gateway-alias values kept so that fingerprints can be re-derived after a MAC rotation. */
export const identifierValues = aesColumnFieldSet({
  name: 'card_identifiers.value',
  description: 'PAR and gateway alias values (card_identifiers.value_ciphertext)',
  table: 'card_identifiers',
  idColumn: 'id',
  ciphertextColumn: 'value_ciphertext',
  versionColumn: 'value_key_version',
  aad: identifierAad,
});

interface FingerprintSourceRow {
  identifier_id: string;
  mac_key_version: number;
  fingerprint: Buffer;
  token: string;
  kind: IdentifierKind;
  namespace: string | null;
  value_ciphertext: Buffer | null;
  value_key_version: number | null;
  pan_ciphertext: Buffer | null;
  pan_key_version: number | null;
}

/**
 * Identifier fingerprints (HMAC-SHA256 under `identifier-mac`). A row under an old MAC version is
 * replaced by the fingerprint of the same identifier under the target version, recomputed from the
 * decrypted value: the PAN from `cards.pan_ciphertext`, PAR and aliases from
 * `card_identifiers.value_ciphertext`, by the same rule as the vault (`fingerprint()`). The new row is
 * inserted and the old one deleted in one transaction, so a lookup (which matches every readable
 * version) finds the card before, during and after.
 */
export const identifierFingerprints: EncryptedFieldSet = {
  name: 'identifier_fingerprints',
  purpose: 'identifier-mac',
  description: 'keyed fingerprints of PANs, PARs and aliases (identifier_fingerprints)',
  countByVersion: (db) => countByVersion(db, 'identifier_fingerprints', 'mac_key_version'),
  async prepareBatch(db, context) {
    const rows = (await db('identifier_fingerprints as f')
      .join('card_identifiers as i', 'i.id', 'f.identifier_id')
      .join('cards as c', 'c.token', 'f.token')
      .where('f.mac_key_version', '<', context.target.version)
      .andWhere('f.identifier_id', '>', context.after)
      .orderBy('f.identifier_id')
      .limit(context.limit)
      .select(
        'f.identifier_id',
        'f.mac_key_version',
        'f.fingerprint',
        'f.token',
        'i.kind',
        'i.namespace',
        'i.value_ciphertext',
        'i.value_key_version',
        'c.pan_ciphertext',
        'c.pan_key_version',
      )) as FingerprintSourceRow[];
    const failures: RowFailure[] = [];
    const moved: { id: string; token: string; oldVersion: number; oldFp: Buffer; newFp: Buffer }[] = [];
    const keys = new Map<number, DataKey | undefined>();
    for (const row of rows) {
      const sealed =
        row.kind === 'pan'
          ? { ct: row.pan_ciphertext, ver: row.pan_key_version, aad: panAad(row.token, row.pan_key_version ?? 0) }
          : {
              ct: row.value_ciphertext,
              ver: row.value_key_version,
              aad: identifierAad(row.identifier_id, row.value_key_version ?? 0),
            };
      const fail = (error: RowFailure['error']) =>
        failures.push({ rowId: row.identifier_id, fromVersion: row.mac_key_version, error });
      if (sealed.ct === null || sealed.ver === null) {
        fail('SOURCE_MISSING');
        continue;
      }
      if (!keys.has(sealed.ver)) keys.set(sealed.ver, await keyFor(context.keyRing, 'pan-encryption', sealed.ver));
      const key = keys.get(sealed.ver);
      if (key === undefined) {
        fail('KEY_UNAVAILABLE');
        continue;
      }
      let value: string;
      try {
        value = decryptValue(key.key, sealed.aad, sealed.ct);
      } catch {
        fail('DECRYPT_FAILED');
        continue;
      }
      const identifier: Identifier = { kind: row.kind, namespace: row.namespace ?? undefined, value };
      moved.push({
        id: row.identifier_id,
        token: row.token,
        oldVersion: row.mac_key_version,
        oldFp: row.fingerprint,
        newFp: fingerprint(context.target.key, identifier),
      });
    }
    return {
      read: rows.length,
      lastKey: rows.at(-1)?.identifier_id,
      failures,
      async write(trx) {
        if (moved.length === 0) return 0;
        const v = [
          moved.map((m) => m.id),
          moved.map((m) => m.token),
          moved.map((m) => m.oldVersion),
          moved.map((m) => m.oldFp),
          moved.map((m) => m.newFp),
        ];
        const values = `unnest(?::text[], ?::text[], ?::integer[], ?::bytea[], ?::bytea[]) as v (id, token, old_version, old_fp, new_fp)`;
        // The new fingerprint, unless it is there already (written during the publish phase, or by
        // another backfill). Only for rows whose old fingerprint still exists (compare-and-set).
        await trx.raw(
          `insert into identifier_fingerprints (mac_key_version, fingerprint, identifier_id, token, created_at)
           select ?, v.new_fp, v.id, v.token, ? from ${values}
           where exists (select 1 from identifier_fingerprints o
                         where o.mac_key_version = v.old_version and o.fingerprint = v.old_fp)
           on conflict (mac_key_version, fingerprint) do nothing`,
          [context.target.version, context.now, ...v],
        );
        // The old one goes only once the new one, of the same identifier, is in place.
        const deleted = (await trx.raw(
          `delete from identifier_fingerprints o using ${values}
           where o.mac_key_version = v.old_version and o.fingerprint = v.old_fp
             and exists (select 1 from identifier_fingerprints n
                         where n.mac_key_version = ? and n.fingerprint = v.new_fp and n.identifier_id = v.id)`,
          [...v, context.target.version],
        )) as { rowCount?: number; affectedRows?: number };
        return deleted.rowCount ?? deleted.affectedRows ?? 0;
      },
    };
  },
};

/** Every field set protected by data keys, in the order a backfill walks them. */
/** Loyalty members' e-mail addresses, AAD bound to the shopper and key version. */
export const memberEmails = aesColumnFieldSet({
  name: 'loyalty_accounts.email',
  description: 'member e-mail addresses (loyalty_accounts.email_ciphertext)',
  table: 'loyalty_accounts',
  idColumn: 'shopper_ref',
  ciphertextColumn: 'email_ciphertext',
  versionColumn: 'email_key_version',
  aad: emailAad,
});

/**
 * Outbound-event subscribers' signing secrets under their own purpose, AAD bound to the secret's row,
 * purpose and key version. Those still under `pan-encryption` are {@link legacySubscriptionSecrets}.
 */
export const subscriptionSecrets = aesColumnFieldSet({
  name: 'event_subscription_secrets.secret',
  description: 'webhook subscription signing secrets (event_subscription_secrets.secret_ciphertext)',
  table: 'event_subscription_secrets',
  idColumn: 'id',
  ciphertextColumn: 'secret_ciphertext',
  versionColumn: 'secret_key_version',
  aad: subscriptionSecretAad,
  purpose: SUBSCRIPTION_SECRET_PURPOSE,
  rowsWhere: { secret_key_purpose: SUBSCRIPTION_SECRET_PURPOSE },
});

export const builtInFieldSets: readonly EncryptedFieldSet[] = [
  cardPans,
  identifierValues,
  identifierFingerprints,
  memberEmails,
  legacySubscriptionSecrets,
  subscriptionSecrets,
];

export function fieldSetsFor(purpose: KeyPurpose, registry: readonly EncryptedFieldSet[]): EncryptedFieldSet[] {
  return registry.filter((f) => f.purpose === purpose);
}
