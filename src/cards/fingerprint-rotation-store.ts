/**
 * SQL of the identifier fingerprints' move to a new `identifier-mac` version (card-field-sets.ts): a
 * batch of fingerprints with the sealed values they are recomputed from, and the replacement of old
 * fingerprints by new ones in the batch's transaction (insert the new, then delete the old only once
 * the new one of the same identifier is in place, so a lookup finds the card throughout).
 */
import type { Knex } from 'knex';
import type { IdentifierKind } from '../crypto/field-crypto.js';

type Db = Knex | Knex.Transaction;

export interface FingerprintSourceRow {
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
  /** Set when retention purged the card's PAN: its PAN fingerprint cannot be recomputed. */
  pan_purged_at: Date | null;
}

/** The next `limit` fingerprints after `after` (by identifier id) under a MAC version below `belowVersion`. */
export async function fingerprintSources(
  db: Db,
  batch: { belowVersion: number; after: string; limit: number },
): Promise<FingerprintSourceRow[]> {
  return (await db('identifier_fingerprints as f')
    .join('card_identifiers as i', 'i.id', 'f.identifier_id')
    .join('cards as c', 'c.token', 'f.token')
    .where('f.mac_key_version', '<', batch.belowVersion)
    .andWhere('f.identifier_id', '>', batch.after)
    .orderBy('f.identifier_id')
    .limit(batch.limit)
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
      'c.pan_purged_at',
    )) as FingerprintSourceRow[];
}

export interface FingerprintMove {
  readonly id: string;
  readonly token: string;
  readonly oldVersion: number;
  readonly oldFp: Buffer;
  readonly newFp: Buffer;
}

/** Replaces each old fingerprint by its new one under `targetVersion`; returns how many moved. */
export async function replaceFingerprints(
  trx: Knex.Transaction,
  targetVersion: number,
  now: Date,
  moved: readonly FingerprintMove[],
): Promise<number> {
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
    [targetVersion, now, ...v],
  );
  // The old one goes only once the new one, of the same identifier, is in place.
  const deleted = (await trx.raw(
    `delete from identifier_fingerprints o using ${values}
     where o.mac_key_version = v.old_version and o.fingerprint = v.old_fp
       and exists (select 1 from identifier_fingerprints n
                   where n.mac_key_version = ? and n.fingerprint = v.new_fp and n.identifier_id = v.id)`,
    [...v, targetVersion],
  )) as { rowCount?: number; affectedRows?: number };
  return deleted.rowCount ?? deleted.affectedRows ?? 0;
}

/**
 * Deletes fingerprints that cannot move to the new MAC version: the PAN fingerprints of cards whose
 * PAN retention purged (nothing left to recompute them from). Compare-and-set on the old row, and
 * only while the card is still purged. Returns how many went.
 */
export async function dropPurgedPanFingerprints(
  trx: Knex.Transaction,
  dropped: readonly { readonly version: number; readonly fingerprint: Buffer }[],
): Promise<number> {
  if (dropped.length === 0) return 0;
  const result = (await trx.raw(
    `delete from identifier_fingerprints f
     using unnest(?::integer[], ?::bytea[]) as v (version, fp), card_identifiers i, cards c
     where f.mac_key_version = v.version and f.fingerprint = v.fp
       and i.id = f.identifier_id and i.kind = 'pan' and c.token = f.token and c.pan_purged_at is not null`,
    [dropped.map((d) => d.version), dropped.map((d) => d.fingerprint)],
  )) as { rowCount?: number; affectedRows?: number };
  return result.rowCount ?? result.affectedRows ?? 0;
}
