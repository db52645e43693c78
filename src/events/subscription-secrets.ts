/**
 * Subscription signing secrets at rest. The service must sign with the raw secret, so a one-way hash
 * will not do: each secret is sealed with AES-256-GCM under the active `pan-encryption` data key,
 * like a PAN or a member's e-mail, with AAD binding it to its row and key version. The field set
 * `event_subscription_secrets.secret` (src/keys/field-sets.ts) lets `keys reencrypt` move it to a
 * new key version and lets retirement prove that none is left under an old one.
 */
import type { Knex } from 'knex';
import { decryptValue, encryptValue } from '../cards/card-crypto.js';
import { newId } from '../ids/prefixed-id.js';
import type { KeyRing } from '../keys/key-ring.js';
import { newSigningSecret } from './signing.js';

type Db = Knex | Knex.Transaction;

export function subscriptionSecretAad(secretId: string, keyVersion: number): string {
  return `loyalty-vault/subscription-secret/v1|${secretId}|${keyVersion}`;
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
  const key = await keyRing.active('pan-encryption', trx);
  await trx('event_subscription_secrets').insert({
    id,
    subscription_id: subscriptionId,
    secret_ciphertext: encryptValue(key.key, subscriptionSecretAad(id, key.version), secret),
    secret_key_version: key.version,
    created_at: now,
    expires_at: null,
    rotation_key: rotationKey ?? null,
  });
  return { id, secret };
}

/** The secrets that sign a delivery now: the current one and any still in a rotation's overlap. */
export async function liveSecrets(db: Db, keyRing: KeyRing, subscriptionId: string, now: Date): Promise<string[]> {
  const rows = (await db('event_subscription_secrets')
    .where({ subscription_id: subscriptionId })
    .where((q) => q.whereNull('expires_at').orWhere('expires_at', '>', now))
    .orderBy([
      { column: 'created_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])
    .select('id', 'secret_ciphertext', 'secret_key_version')) as {
    id: string;
    secret_ciphertext: Buffer;
    secret_key_version: number;
  }[];
  const secrets: string[] = [];
  for (const row of rows) {
    const key = await keyRing.version('pan-encryption', row.secret_key_version, db);
    secrets.push(decryptValue(key.key, subscriptionSecretAad(row.id, row.secret_key_version), row.secret_ciphertext));
  }
  return secrets;
}
