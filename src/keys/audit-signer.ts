/**
 * The audit trail's signer (exports and checkpoints, src/audit): the active `audit-signing` data key,
 * unwrapped from the ring. The audit module is given this, so it never reaches into the key ring.
 */
import { createPublicKey } from 'node:crypto';
import type { Knex } from 'knex';
import { publicKeyThumbprint, type AuditSigner } from '../audit/audit-export.js';
import { ed25519PrivateKey, type KeyRing } from './key-ring.js';
import { publicKeyPemOf } from './key-version-store.js';

/** The active audit-signing key, its public half and its JWK thumbprint (`kid`). */
export async function auditSigner(knex: Knex, ring: KeyRing): Promise<AuditSigner> {
  const signing = await ring.active('audit-signing');
  const publicKeyPem = await publicKeyPemOf(knex, 'audit-signing', signing.version);
  const seed = signing.key.export();
  const privateKey = ed25519PrivateKey(seed);
  seed.fill(0);
  const kid = await publicKeyThumbprint(createPublicKey(publicKeyPem));
  return { version: signing.version, kid, publicKeyPem, privateKey };
}
