/**
 * Seals: what ties the mTLS trust data in the database to the master key.
 *
 * The service trusts the client CA certificates stored in `data_keys` and takes a client's name and
 * scopes from its `mtls_client_certificates` row. Without a seal, write access to the database alone
 * (no master key) would be enough to add a CA of one's own or to widen a till's scopes. So when the
 * key CLI creates a CA version or records a certificate, it stores
 * `masterKey.wrap(SHA-256(canonical description), aad)`: AES-256-GCM under the master key, so a seal
 * can be neither forged nor moved to another row without the master key, and the service (which
 * holds the master key source) verifies it with `unwrap` before trusting the row.
 *
 * - The description is a JSON array (unambiguous field boundaries) starting with a domain label, and
 *   the AAD is domain-separated per kind and bound to the row's identity (serial, CA version).
 * - A grant covers serial, fingerprint, client, sorted scopes, CA version, validity and key source.
 *   Revocation is outside it: revocations are sealed as one hash-chained list whose head is wrapped
 *   the same way (src/mtls/revocation-list.ts), so that deleting one breaks the list's seal.
 */
import { isMasterKeyUnavailable } from '../errors/app-error.js';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import type { MasterKeySource } from '../keys/master-key-types.js';
import { rewrapRevocationHead } from './revocation-list.js';
import { sealedCaRows, sealedGrantRows, updateCaSeal, updateGrantSeal } from './certificate-store.js';

export interface GrantFields {
  readonly serial: string;
  readonly fingerprint: string;
  readonly clientName: string;
  readonly scopes: readonly string[];
  readonly caVersion: number | null;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly keySource: string;
}

export interface CaFields {
  readonly purpose: string;
  readonly version: number;
  readonly certificatePem: string;
}

const GRANT_LABEL = 'loyalty-vault/mtls-grant/v1';
const CA_LABEL = 'loyalty-vault/mtls-ca/v1';

export const grantSealAad = (serial: string): string => `${GRANT_LABEL}:${serial}`;
export const caSealAad = (version: number): string => `${CA_LABEL}:${version}`;

export function grantDigest(g: GrantFields): Buffer {
  return sha256(
    JSON.stringify([
      GRANT_LABEL,
      g.serial,
      g.fingerprint,
      g.clientName,
      [...g.scopes].sort(),
      g.caVersion,
      g.notBefore.toISOString(),
      g.notAfter.toISOString(),
      g.keySource,
    ]),
  );
}

export function caDigest(ca: CaFields): Buffer {
  return sha256(JSON.stringify([CA_LABEL, ca.purpose, ca.version, sha256(ca.certificatePem).toString('hex')]));
}

export function sealGrant(masterKey: MasterKeySource, g: GrantFields): Promise<Buffer> {
  return masterKey.wrap(grantDigest(g), grantSealAad(g.serial));
}

export function sealCa(masterKey: MasterKeySource, ca: CaFields): Promise<Buffer> {
  return masterKey.wrap(caDigest(ca), caSealAad(ca.version));
}

/** True only when the seal unwraps under a configured master key and matches the row as read. */
export function grantSealValid(masterKey: MasterKeySource, g: GrantFields, seal: Buffer | null): Promise<boolean> {
  return sealMatches(masterKey, seal, grantSealAad(g.serial), grantDigest(g));
}

export function caSealValid(masterKey: MasterKeySource, ca: CaFields, seal: Buffer | null): Promise<boolean> {
  return sealMatches(masterKey, seal, caSealAad(ca.version), caDigest(ca));
}

/**
 * For a master-key rotation, in its transaction: rewraps every seal that the configured master keys
 * open under the current one (a seal wrapped by a retired master key would otherwise stop verifying
 * once MASTER_KEY_PREVIOUS is removed). A seal no master key opens stays as it is: still refused.
 */
export async function rewrapSeals(trx: Knex.Transaction, masterKey: MasterKeySource): Promise<number> {
  let count = 0;
  const cas = await sealedCaRows(trx);
  for (const ca of cas) {
    const rewrapped = await rewrap(masterKey, ca.certificate_seal, caSealAad(ca.version));
    if (rewrapped === undefined) continue;
    await updateCaSeal(trx, ca.purpose, ca.version, rewrapped);
    count += 1;
  }
  const grants = await sealedGrantRows(trx);
  for (const grant of grants) {
    const rewrapped = await rewrap(masterKey, grant.seal, grantSealAad(grant.serial));
    if (rewrapped === undefined) continue;
    await updateGrantSeal(trx, grant.serial, rewrapped);
    count += 1;
  }
  return count + (await rewrapRevocationHead(trx, masterKey));
}

async function rewrap(masterKey: MasterKeySource, seal: Buffer, aad: string): Promise<Buffer | undefined> {
  let digest: Buffer;
  try {
    digest = await masterKey.unwrap(seal, aad);
  } catch (error) {
    // A source that cannot answer now is not "another key": skipping would half-write a rotation.
    if (isMasterKeyUnavailable(error)) throw error;
    return undefined;
  }
  return masterKey.wrap(digest, aad);
}

async function sealMatches(
  masterKey: MasterKeySource,
  seal: Buffer | null,
  aad: string,
  expected: Buffer,
): Promise<boolean> {
  if (seal === null || seal.length === 0) return false;
  let digest: Buffer;
  try {
    digest = await masterKey.unwrap(seal, aad);
  } catch (error) {
    // A source that cannot answer now is not "another key": skipping would half-write a rotation.
    if (isMasterKeyUnavailable(error)) throw error;
    return false;
  }
  return digest.length === expected.length && timingSafeEqual(digest, expected);
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
