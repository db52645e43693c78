/**
 * SQL of subscription signing secrets at rest (`event_subscription_secrets`): the sealed values, the
 * key purpose and version each is under, and the compare-and-set move of legacy ones.
 * subscription-secrets.ts seals and opens them; the secrets' lifetimes (rotation overlap, deletion) are
 * in subscription-store.ts.
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

/** The purposes a secret can be sealed under: its own, or `pan-encryption` for a secret not yet moved. */
export type SubscriptionSecretPurpose = 'subscription-secret' | 'pan-encryption';

export interface SecretRow {
  id: string;
  secret_ciphertext: Buffer;
  secret_key_purpose: SubscriptionSecretPurpose;
  secret_key_version: number;
}

export async function insertSecret(
  trx: Knex.Transaction,
  row: SecretRow & { subscription_id: string; created_at: Date; rotation_key: string | null },
): Promise<void> {
  await trx('event_subscription_secrets').insert({
    id: row.id,
    subscription_id: row.subscription_id,
    secret_ciphertext: row.secret_ciphertext,
    secret_key_purpose: row.secret_key_purpose,
    secret_key_version: row.secret_key_version,
    created_at: row.created_at,
    expires_at: null,
    rotation_key: row.rotation_key,
  });
}

/** The secrets of a subscription that have not expired at `now`, newest first. */
export async function liveSecretRows(db: Db, subscriptionId: string, now: Date): Promise<SecretRow[]> {
  return (await db('event_subscription_secrets')
    .where({ subscription_id: subscriptionId })
    .where((q) => q.whereNull('expires_at').orWhere('expires_at', '>', now))
    .orderBy([
      { column: 'created_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])
    .select('id', 'secret_ciphertext', 'secret_key_purpose', 'secret_key_version')) as SecretRow[];
}

/** One page, by id, of the secrets still under `pan-encryption` (below `belowVersion` when given). */
export async function legacySecretRows(
  db: Db,
  options: { after: string; limit: number; belowVersion?: number },
): Promise<SecretRow[]> {
  const query = db('event_subscription_secrets')
    .where({ secret_key_purpose: 'pan-encryption' })
    .andWhere('id', '>', options.after)
    .orderBy('id')
    .limit(options.limit)
    .select('id', 'secret_ciphertext', 'secret_key_purpose', 'secret_key_version');
  if (options.belowVersion !== undefined) void query.andWhere('secret_key_version', '<', options.belowVersion);
  return (await query) as SecretRow[];
}

/**
 * Moves legacy secrets to `purpose` at `version` in one statement, each only if it is still under
 * `pan-encryption` at the version and with the ciphertext it was read with (compare-and-set); the
 * number moved.
 */
export async function moveLegacySecretRows(
  trx: Db,
  purpose: SubscriptionSecretPurpose,
  version: number,
  rows: { ids: string[]; sealed: Buffer[]; olds: number[]; oldCts: Buffer[] },
): Promise<number> {
  const result = (await trx.raw(
    `update event_subscription_secrets as t
        set secret_ciphertext = v.ct, secret_key_purpose = ?, secret_key_version = ?
       from unnest(?::text[], ?::bytea[], ?::integer[], ?::bytea[]) as v (id, ct, old, old_ct)
      where t.id = v.id and t.secret_key_purpose = 'pan-encryption' and t.secret_key_version = v.old
        and t.secret_ciphertext = v.old_ct`,
    [purpose, version, rows.ids, rows.sealed, rows.olds, rows.oldCts],
  )) as { rowCount?: number; affectedRows?: number };
  return result.rowCount ?? result.affectedRows ?? 0;
}

/** How many secrets are still under each `pan-encryption` version. */
export async function countLegacySecretsByVersion(db: Db): Promise<Map<number, number>> {
  const rows = (await db('event_subscription_secrets')
    .where({ secret_key_purpose: 'pan-encryption' })
    .groupBy('secret_key_version')
    .select('secret_key_version as version')
    .count({ n: '*' })) as { version: number; n: string | number }[];
  return new Map(rows.map((r) => [Number(r.version), Number(r.n)]));
}
