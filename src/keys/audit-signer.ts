/**
 * The audit trail's signer (exports and checkpoints, src/audit): the active `audit-signing` data key,
 * unwrapped from the ring. The audit module is given this, so it never reaches into the key ring.
 */
import { createPublicKey } from 'node:crypto';
import type { Knex } from 'knex';
import { publicKeyThumbprint, type AuditSigner } from '../audit/audit-export.js';
import { ed25519PrivateKey, type KeyRing } from './key-ring.js';

/** The active audit-signing key, its public half and its JWK thumbprint (`kid`). */
export async function auditSigner(knex: Knex, ring: KeyRing): Promise<AuditSigner> {
  const signing = await ring.active('audit-signing');
  const row = (await knex('data_keys').where({ purpose: 'audit-signing', version: signing.version }).first()) as {
    public_key_pem: string;
  };
  const seed = signing.key.export();
  const privateKey = ed25519PrivateKey(seed);
  seed.fill(0);
  const kid = await publicKeyThumbprint(createPublicKey(row.public_key_pem));
  return { version: signing.version, kid, publicKeyPem: row.public_key_pem, privateKey };
}
