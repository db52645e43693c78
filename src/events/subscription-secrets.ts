/**
 * Subscription signing secrets at rest. The service must sign with the raw secret, so a one-way hash
 * will not do: each secret is sealed with AES-256-GCM under the active data key of its own purpose,
 * `subscription-secret`, with AAD binding it to its row, the key's purpose and its version. The field
 * set `event_subscription_secrets.secret` (src/keys/field-sets.ts) lets `keys reencrypt --purpose
 * subscription-secret` move it to a new key version and lets retirement prove that none is left
 * under an old one; `keys list` and the inventory count it like every other field set.
 *
 * Secrets written before that purpose existed (migration 20261206000600) are sealed under a
 * `pan-encryption` version, with the AAD of that time, and say so in `secret_key_purpose`. They are
 * read as they are (a delivery never waits for a migration of keys), counted against their
 * `pan-encryption` version (which cannot be retired while they remain), and moved to
 * `subscription-secret` by {@link moveLegacySecrets}: at every start, and by `keys reencrypt --purpose
 * pan-encryption` through {@link legacySubscriptionSecrets}. The move is compare-and-set on the row's
 * purpose and version, so any number of instances and backfills may run it at once.
 */
import type { Knex } from 'knex';
import { decryptValue, encryptValue } from '../crypto/field-crypto.js';
import { newId } from '../ids/prefixed-id.js';
import { aesColumnFieldSet, type EncryptedFieldSet, type RowFailure } from '../keys/field-sets.js';
import type { DataKey, KeyRing } from '../keys/key-ring.js';
import { newSigningSecret } from './signing.js';
import {
  countLegacySecretsByVersion,
  insertSecret,
  legacySecretRows,
  liveSecretRows,
  moveLegacySecretRows,
  type SubscriptionSecretPurpose,
} from './subscription-secret-store.js';

type Db = Knex | Knex.Transaction;

export type { SubscriptionSecretPurpose } from './subscription-secret-store.js';

export const SUBSCRIPTION_SECRET_PURPOSE = 'subscription-secret' as const;

/**
 * The AAD of a secret under `subscription-secret` (v2: names the purpose, so a ciphertext cannot be
 * passed off as one sealed under another purpose's key of the same version).
 */
export function subscriptionSecretAad(secretId: string, keyVersion: number): string {
  return `loyalty-vault/subscription-secret/v2|${SUBSCRIPTION_SECRET_PURPOSE}|${secretId}|${keyVersion}`;
}

/** The AAD of a secret sealed under `pan-encryption` before migration 20261206000600. */
export function legacySubscriptionSecretAad(secretId: string, keyVersion: number): string {
  return `loyalty-vault/subscription-secret/v1|${secretId}|${keyVersion}`;
}

function aadFor(purpose: SubscriptionSecretPurpose, secretId: string, keyVersion: number): string {
  return purpose === SUBSCRIPTION_SECRET_PURPOSE
    ? subscriptionSecretAad(secretId, keyVersion)
    : legacySubscriptionSecretAad(secretId, keyVersion);
}

/**
 * Generates, seals and stores a new secret for a subscription; returns it in clear, once, with its
 * id. `rotationKey` is the `Idempotency-Key` of the rotation that asked for it, if any.
 */
export async function addSecret(
  trx: Knex.Transaction,
  keyRing: KeyRing,
  subscriptionId: string,
  now: Date,
  rotationKey?: string,
): Promise<{ id: string; secret: string }> {
  const secret = newSigningSecret();
  const id = newId('whs');
  const key = await keyRing.active(SUBSCRIPTION_SECRET_PURPOSE, trx);
  await insertSecret(trx, {
    id,
    subscription_id: subscriptionId,
    secret_ciphertext: encryptValue(key.key, subscriptionSecretAad(id, key.version), secret),
    secret_key_purpose: SUBSCRIPTION_SECRET_PURPOSE,
    secret_key_version: key.version,
    created_at: now,
    rotation_key: rotationKey ?? null,
  });
  return { id, secret };
}

/** The secrets that sign a delivery now: the current one and any still in a rotation's overlap. */
export async function liveSecrets(db: Db, keyRing: KeyRing, subscriptionId: string, now: Date): Promise<string[]> {
  const rows = await liveSecretRows(db, subscriptionId, now);
  const secrets: string[] = [];
  for (const row of rows) {
    const key = await keyRing.version(row.secret_key_purpose, row.secret_key_version, db);
    secrets.push(
      decryptValue(key.key, aadFor(row.secret_key_purpose, row.id, row.secret_key_version), row.secret_ciphertext),
    );
  }
  return secrets;
}

/**
 * One batch of secrets still under `pan-encryption` (ids after `after`; below `belowVersion` when
 * given), decrypted and sealed again under the active `subscription-secret` key. `write` moves them
 * with compare-and-set on purpose and version.
 */
async function prepareLegacyBatch(
  db: Db,
  keyRing: KeyRing,
  options: { after: string; limit: number; belowVersion?: number },
): Promise<{ read: number; lastKey: string | undefined; failures: RowFailure[]; write: (trx: Db) => Promise<number> }> {
  const rows = await legacySecretRows(db, options);
  const target = await keyRing.active(SUBSCRIPTION_SECRET_PURPOSE, db);
  const failures: RowFailure[] = [];
  const ids: string[] = [];
  const sealed: Buffer[] = [];
  const olds: number[] = [];
  const oldCts: Buffer[] = [];
  const keys = new Map<number, DataKey | undefined>();
  for (const row of rows) {
    if (!keys.has(row.secret_key_version)) {
      keys.set(
        row.secret_key_version,
        await keyRing.version('pan-encryption', row.secret_key_version, db).catch(() => undefined),
      );
    }
    const key = keys.get(row.secret_key_version);
    if (key === undefined) {
      failures.push({ rowId: row.id, fromVersion: row.secret_key_version, error: 'KEY_UNAVAILABLE' });
      continue;
    }
    let plain: string;
    try {
      plain = decryptValue(key.key, legacySubscriptionSecretAad(row.id, row.secret_key_version), row.secret_ciphertext);
    } catch {
      failures.push({ rowId: row.id, fromVersion: row.secret_key_version, error: 'DECRYPT_FAILED' });
      continue;
    }
    ids.push(row.id);
    sealed.push(encryptValue(target.key, subscriptionSecretAad(row.id, target.version), plain));
    olds.push(row.secret_key_version);
    oldCts.push(row.secret_ciphertext);
  }
  return {
    read: rows.length,
    lastKey: rows.at(-1)?.id,
    failures,
    async write(trx) {
      if (ids.length === 0) return 0;
      return moveLegacySecretRows(trx, SUBSCRIPTION_SECRET_PURPOSE, target.version, { ids, sealed, olds, oldCts });
    },
  };
}

/**
 * Moves every secret still sealed under `pan-encryption` to the active `subscription-secret` key, in
 * batches, each written in its own short transaction. Run at start: idempotent, concurrent-safe, and a
 * row it cannot decrypt is left as it is (counted, never logged by value) for `keys reencrypt` to report.
 */
export async function moveLegacySecrets(
  knex: Knex,
  keyRing: KeyRing,
  batchSize = 500,
): Promise<{ moved: number; failed: number }> {
  let after = '';
  let moved = 0;
  let failed = 0;
  for (;;) {
    const batch = await prepareLegacyBatch(knex, keyRing, { after, limit: batchSize });
    failed += batch.failures.length;
    if (batch.read > 0) moved += await knex.transaction((trx) => batch.write(trx));
    if (batch.read < batchSize || batch.lastKey === undefined) return { moved, failed };
    after = batch.lastKey;
  }
}

/**
 * The secrets not yet moved, registered under `pan-encryption`. Counted against their
 * pan-encryption version, so that version's retirement waits for them; `keys reencrypt --purpose
 * pan-encryption` moves them to `subscription-secret` (out of this set) instead of to the new
 * pan-encryption version.
 */
export const legacySubscriptionSecrets: EncryptedFieldSet = {
  name: 'event_subscription_secrets.legacy_secret',
  purpose: 'pan-encryption',
  description: 'webhook subscription signing secrets not yet moved to the subscription-secret key',
  countByVersion(db) {
    return countLegacySecretsByVersion(db);
  },
  prepareBatch(db, context) {
    return prepareLegacyBatch(db, context.keyRing, {
      after: context.after,
      limit: context.limit,
      belowVersion: context.target.version,
    });
  },
};

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
