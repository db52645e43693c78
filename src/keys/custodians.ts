/**
 * The custodian register (PCI DSS 3.7.6, 3.7.8): who may approve key operations, and the seal that
 * makes the register unforgeable by a database writer.
 *
 * Each `key_custodians` row carries `seal = masterKey.wrap(SHA-256(canonical record))`, the AAD bound
 * to the row id, written only by the two ways a custodian is registered (the genesis ceremony and an
 * approved add-custodian request, src/keys/custodian-registration.ts). Only rows whose seal verifies
 * and whose thumbprint is that of the stored public key are custodians: a row inserted, edited or
 * copied with database access alone approves nothing and does not count towards the two required.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { createHash } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { Knex } from 'knex';
import { AppError, isMasterKeyUnavailable } from '../errors/app-error.js';
import {
  custodianClash,
  custodianRowByThumbprint,
  custodianRows,
  custodianSeals,
  insertCustodian,
  writeCustodianSeal,
  type CustodianRow,
} from './custody-store.js';
import { rewrapLedgerSeal, sealMatches } from './dual-control-ledger.js';
import type { MasterKeySource } from './master-key-types.js';

export const CUSTODIAN_ACKNOWLEDGEMENT =
  'I accept the responsibilities of a loyalty-vault key custodian (PCI DSS 3.7.8): I keep my private ' +
  'signing key secret and under my sole control, I approve a key operation only after reading its ' +
  'description and checking that it was requested for a legitimate reason, I never approve on behalf ' +
  'of another person, and I report any suspected compromise of a key or of my signing key at once.';

const CUSTODIAN_LABEL = 'loyalty-vault/custodian/v1';
const NAME = /^[A-Za-z][A-Za-z0-9 ._'-]{1,63}$/;

export interface Custodian {
  readonly id: string;
  readonly name: string;
  readonly keyThumbprint: string;
  readonly publicKeyJwk: JWK;
  readonly acknowledgedAt: Date;
  readonly authorisedBy: string | null;
}

export interface CustodianRecord extends Custodian {
  /** False for a row the master key never sealed: it is listed, flagged, and trusted for nothing. */
  readonly sealed: boolean;
}

export function assertCustodianName(name: string): void {
  if (!NAME.test(name)) {
    throw new AppError('CUSTODIAN_INVALID', {
      detail: "A custodian name is 2 to 64 letters, digits, spaces or . _ ' -.",
    });
  }
}

export function publicKeyFromPem(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (error) {
    throw new AppError('CUSTODIAN_INVALID', { detail: 'The public key is not a PEM public key.', cause: error });
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new AppError('CUSTODIAN_INVALID', { detail: 'Custodian keys must be Ed25519.' });
  }
  return key;
}

/** The Ed25519 public key as a minimal JWK and its RFC 7638 thumbprint (what identifies a key). */
export async function jwkOf(key: KeyObject): Promise<{ jwk: JWK; thumbprint: string }> {
  const full = key.export({ format: 'jwk' }) as JWK;
  const jwk = { crv: String(full.crv), kty: 'OKP', x: String(full.x) } as JWK;
  return { jwk, thumbprint: await calculateJwkThumbprint(jwk, 'sha256') };
}

/** An Ed25519 JWK from its `x` (as named in a genesis request), or undefined when it is not one. */
export async function jwkFromX(x: string): Promise<{ jwk: JWK; thumbprint: string } | undefined> {
  try {
    const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
    return await jwkOf(key);
  } catch {
    return undefined;
  }
}

function recordDigest(c: {
  id: string;
  name: string;
  jwk: JWK;
  thumbprint: string;
  acknowledgement: string;
  acknowledgedAt: Date;
  authorisedBy: string | null;
}): Buffer {
  return createHash('sha256')
    .update(
      JSON.stringify([
        CUSTODIAN_LABEL,
        c.id,
        c.name,
        c.jwk.kty,
        c.jwk.crv,
        c.jwk.x,
        c.thumbprint,
        c.acknowledgement,
        c.acknowledgedAt.toISOString(),
        c.authorisedBy,
      ]),
    )
    .digest();
}

const sealAad = (id: string): string => `${CUSTODIAN_LABEL}:${id}`;

/** Inserts a custodian with its seal, in the registering transaction (after its authorisation). */
export async function insertSealedCustodian(
  trx: Knex.Transaction,
  masterKey: MasterKeySource,
  c: { id: string; name: string; jwk: JWK; thumbprint: string; authorisedBy: string; registeredBy: string },
  now: Date,
): Promise<void> {
  if (await custodianClash(trx, c.name, c.thumbprint)) throw new AppError('CUSTODIAN_EXISTS');
  const seal = await masterKey.wrap(
    recordDigest({ ...c, acknowledgement: CUSTODIAN_ACKNOWLEDGEMENT, acknowledgedAt: now }),
    sealAad(c.id),
  );
  await insertCustodian(trx, {
    id: c.id,
    name: c.name,
    publicKeyJwk: JSON.stringify(c.jwk),
    keyThumbprint: c.thumbprint,
    acknowledgement: CUSTODIAN_ACKNOWLEDGEMENT,
    acknowledgedAt: now,
    registeredBy: c.registeredBy,
    authorisedBy: c.authorisedBy,
    createdAt: now,
    seal,
  });
}

async function toRecord(masterKey: MasterKeySource, row: CustodianRow): Promise<CustodianRecord> {
  const jwk = typeof row.public_key_jwk === 'string' ? (JSON.parse(row.public_key_jwk) as JWK) : row.public_key_jwk;
  const thumbprintMatches = await calculateJwkThumbprint(jwk, 'sha256').then(
    (t) => t === row.key_thumbprint,
    () => false,
  );
  const sealed =
    thumbprintMatches &&
    jwk.kty === 'OKP' &&
    jwk.crv === 'Ed25519' &&
    (await sealMatches(
      masterKey,
      row.seal,
      recordDigest({
        id: row.id,
        name: row.name,
        jwk,
        thumbprint: row.key_thumbprint,
        acknowledgement: row.acknowledgement,
        acknowledgedAt: row.acknowledged_at,
        authorisedBy: row.authorised_by,
      }),
      sealAad(row.id),
    ));
  return {
    id: row.id,
    name: row.name,
    keyThumbprint: row.key_thumbprint,
    publicKeyJwk: jwk,
    acknowledgedAt: row.acknowledged_at,
    authorisedBy: row.authorised_by,
    sealed,
  };
}

/** Every row of the register, each with whether its seal verifies. */
export async function listCustodianRecords(
  db: Knex | Knex.Transaction,
  masterKey: MasterKeySource,
): Promise<CustodianRecord[]> {
  const rows = await custodianRows(db);
  return Promise.all(rows.map((row) => toRecord(masterKey, row)));
}

/** The custodians: rows whose seal verifies under the master key. */
export async function listCustodians(db: Knex | Knex.Transaction, masterKey: MasterKeySource): Promise<Custodian[]> {
  return (await listCustodianRecords(db, masterKey)).filter((c) => c.sealed);
}

/** The custodian holding this key, or undefined when no sealed row names it. */
export async function findCustodianByThumbprint(
  db: Knex | Knex.Transaction,
  masterKey: MasterKeySource,
  thumbprint: string,
): Promise<Custodian | undefined> {
  const row = await custodianRowByThumbprint(db, thumbprint);
  if (row === undefined) return undefined;
  const record = await toRecord(masterKey, row);
  return record.sealed ? record : undefined;
}

/** For a master-key rotation: reseals every custodian that a configured master key opens. */
export async function rewrapCustodianSeals(trx: Knex.Transaction, masterKey: MasterKeySource): Promise<void> {
  for (const row of await custodianSeals(trx)) {
    let digest: Buffer;
    try {
      digest = await masterKey.unwrap(row.seal, sealAad(row.id));
    } catch (error) {
      // A source that cannot answer now is not "another key": skipping would half-write a rotation.
      if (isMasterKeyUnavailable(error)) throw error;
      continue;
    }
    await writeCustodianSeal(trx, row.id, await masterKey.wrap(digest, sealAad(row.id)));
  }
}

/** For a master-key rotation, in its transaction: the custodian seals and the ledger head. */
export async function rewrapDualControlSeals(trx: Knex.Transaction, masterKey: MasterKeySource): Promise<void> {
  await rewrapCustodianSeals(trx, masterKey);
  await rewrapLedgerSeal(trx, masterKey);
}
