/**
 * The card vault's encrypted fields, registered with key rotation at the composition root
 * (src/encrypted-field-sets.ts): PANs and identifier values under `pan-encryption`, identifier
 * fingerprints under `identifier-mac`.
 */
import {
  decryptValue,
  fingerprint,
  identifierAad,
  panAad,
  type Identifier,
  type IdentifierKind,
} from '../crypto/field-crypto.js';
import {
  aesColumnFieldSet,
  countByVersion,
  keyFor,
  type EncryptedFieldSet,
  type RowFailure,
} from '../keys/field-sets.js';
import type { DataKey } from '../keys/key-ring.js';

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
