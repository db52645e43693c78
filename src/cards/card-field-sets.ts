/**
 * The card vault's encrypted fields, registered with key rotation at the composition root
 * (src/encrypted-field-sets.ts): PANs and identifier values under `pan-encryption`, identifier
 * fingerprints under `identifier-mac`.
 */
import { decryptValue, fingerprint, identifierAad, panAad, type Identifier } from '../crypto/field-crypto.js';
import {
  aesColumnFieldSet,
  countByVersion,
  keyFor,
  type EncryptedFieldSet,
  type RowFailure,
} from '../keys/field-sets.js';
import type { DataKey } from '../keys/key-ring.js';
import {
  dropPurgedPanFingerprints,
  fingerprintSources,
  replaceFingerprints,
  type FingerprintMove,
  type FingerprintSourceRow,
} from './fingerprint-rotation-store.js';

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

/**
 * Identifier fingerprints (HMAC-SHA256 under `identifier-mac`). A row under an old MAC version is
 * replaced by the fingerprint of the same identifier under the target version, recomputed from the
 * decrypted value: the PAN from `cards.pan_ciphertext`, PAR and aliases from
 * `card_identifiers.value_ciphertext`, by the same rule as the vault (`fingerprint()`). The new row is
 * inserted and the old one deleted in one transaction, so a lookup (which matches every readable
 * version) finds the card before, during and after.
 *
 * A card whose PAN retention purged (docs/data-protection.md) has nothing to recompute its PAN
 * fingerprint from: that fingerprint is deleted instead of reported as a failure (which would block
 * the old version's retirement for ever), so recognition by the PAN of a purged card ends with the
 * MAC version it was fingerprinted under. Its PAR and aliases move as any others.
 */
export const identifierFingerprints: EncryptedFieldSet = {
  name: 'identifier_fingerprints',
  purpose: 'identifier-mac',
  description: 'keyed fingerprints of PANs, PARs and aliases (identifier_fingerprints)',
  countByVersion: (db) => countByVersion(db, 'identifier_fingerprints', 'mac_key_version'),
  async prepareBatch(db, context) {
    const rows = await fingerprintSources(db, {
      belowVersion: context.target.version,
      after: context.after,
      limit: context.limit,
    });
    const failures: RowFailure[] = [];
    const moved: FingerprintMove[] = [];
    const dropped: { version: number; fingerprint: Buffer }[] = [];
    const keys = new Map<number, DataKey | undefined>();
    for (const row of rows) {
      const sealed = sealedSource(row);
      const fail = (error: RowFailure['error']) =>
        failures.push({ rowId: row.identifier_id, fromVersion: row.mac_key_version, error });
      if (row.kind === 'pan' && row.pan_purged_at !== null && row.pan_ciphertext === null) {
        dropped.push({ version: row.mac_key_version, fingerprint: row.fingerprint });
        continue;
      }
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
        const gone = await dropPurgedPanFingerprints(trx, dropped);
        if (moved.length === 0) return gone;
        return gone + (await replaceFingerprints(trx, context.target.version, context.now, moved));
      },
    };
  },
};

/** The sealed value a fingerprint is recomputed from: the card's PAN, or the identifier's own value. */
function sealedSource(row: FingerprintSourceRow): { ct: Buffer | null; ver: number | null; aad: string } {
  return row.kind === 'pan'
    ? { ct: row.pan_ciphertext, ver: row.pan_key_version, aad: panAad(row.token, row.pan_key_version ?? 0) }
    : {
        ct: row.value_ciphertext,
        ver: row.value_key_version,
        aad: identifierAad(row.identifier_id, row.value_key_version ?? 0),
      };
}
