/**
 * SQL of key custody: the custodian register (`key_custodians`) and the master key's split records
 * (`master_key_splits`). Functions take a knex handle or a transaction: custodians.ts,
 * custodian-registration.ts and key-shares.ts decide the transaction, the locks and every check (the
 * seals, the signatures); this file only reads and writes rows. A row read here is trusted for
 * nothing until its caller verifies its seal.
 */
import type { JWK } from 'jose';
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

export interface CustodianRow {
  id: string;
  name: string;
  public_key_jwk: JWK | string;
  key_thumbprint: string;
  acknowledgement: string;
  acknowledged_at: Date;
  authorised_by: string | null;
  seal: Buffer | null;
}

export interface SplitRow {
  id: string;
  threshold: number;
  total: number;
  kek_id: string;
  /** JSON: the share holders (key-shares.ts `ShareHolder[]`), parsed by the driver or not. */
  holders: unknown;
  request_id: string | null;
  created_at: Date;
  seal: Buffer;
}

// ---- custodians --------------------------------------------------------------------------------

/** Whether a custodian row (sealed or not) already has this name or this key. */
export async function custodianClash(trx: Knex.Transaction, name: string, thumbprint: string): Promise<boolean> {
  const clash = (await trx('key_custodians')
    .where({ name })
    .orWhere({ key_thumbprint: thumbprint })
    .first('id')) as unknown;
  return clash !== undefined;
}

export async function insertCustodian(
  trx: Knex.Transaction,
  c: {
    id: string;
    name: string;
    publicKeyJwk: string;
    keyThumbprint: string;
    acknowledgement: string;
    acknowledgedAt: Date;
    registeredBy: string;
    authorisedBy: string;
    createdAt: Date;
    seal: Buffer;
  },
): Promise<void> {
  await trx('key_custodians').insert({
    id: c.id,
    name: c.name,
    public_key_jwk: c.publicKeyJwk,
    key_thumbprint: c.keyThumbprint,
    acknowledgement: c.acknowledgement,
    acknowledged_at: c.acknowledgedAt,
    registered_by: c.registeredBy,
    authorised_by: c.authorisedBy,
    created_at: c.createdAt,
    seal: c.seal,
  });
}

/** Every custodian row, by name (sealed or not). */
export async function custodianRows(db: Db): Promise<CustodianRow[]> {
  return (await db('key_custodians').orderBy('name')) as CustodianRow[];
}

export async function custodianRowByThumbprint(db: Db, thumbprint: string): Promise<CustodianRow | undefined> {
  return (await db('key_custodians').where({ key_thumbprint: thumbprint }).first()) as CustodianRow | undefined;
}

/** The id of the custodian row holding this key (the caller knows one does). */
export async function custodianIdByThumbprint(trx: Knex.Transaction, thumbprint: string): Promise<string> {
  return ((await trx('key_custodians').where({ key_thumbprint: thumbprint }).first('id')) as { id: string }).id;
}

/** Whether any custodian row carries a seal (verified or not). */
export async function anySealedCustodianRow(trx: Knex.Transaction): Promise<boolean> {
  return ((await trx('key_custodians').whereNotNull('seal').first('id')) as unknown) !== undefined;
}

/** Whether any custodian row or master-key split record exists (sealed, verified or not). */
export async function anyCustodyRow(trx: Knex.Transaction): Promise<boolean> {
  const custodian = (await trx('key_custodians').first('id')) as unknown;
  return custodian !== undefined || ((await trx('master_key_splits').first('id')) as unknown) !== undefined;
}

/** How many custodian rows carry a seal (verified or not). */
export async function countSealedCustodianRows(trx: Knex.Transaction): Promise<number> {
  const existing = (await trx('key_custodians').whereNotNull('seal').count('* as n').first()) as {
    n: number | string;
  };
  return Number(existing.n);
}

/** The seals of every custodian row that has one (a master-key rotation rewraps them). */
export async function custodianSeals(trx: Knex.Transaction): Promise<{ id: string; seal: Buffer }[]> {
  return (await trx('key_custodians').whereNotNull('seal').select('id', 'seal')) as { id: string; seal: Buffer }[];
}

export async function writeCustodianSeal(trx: Knex.Transaction, id: string, seal: Buffer): Promise<void> {
  await trx('key_custodians').where({ id }).update({ seal });
}

// ---- master-key splits -------------------------------------------------------------------------

export async function activeSplitRow(db: Db): Promise<SplitRow | undefined> {
  return (await db('master_key_splits').where({ state: 'active' }).first()) as SplitRow | undefined;
}

/** The active split's id, locked (`for update`) by the split that supersedes it. */
export async function lockActiveSplitId(trx: Knex.Transaction): Promise<{ id: string } | undefined> {
  return (await trx('master_key_splits').where({ state: 'active' }).forUpdate().first('id')) as
    { id: string } | undefined;
}

export async function supersedeActiveSplit(trx: Knex.Transaction, at: Date): Promise<void> {
  await trx('master_key_splits').where({ state: 'active' }).update({ state: 'superseded', superseded_at: at });
}

/** Stores a new split as the active one (after {@link supersedeActiveSplit}, in its transaction). */
export async function insertActiveSplit(
  trx: Knex.Transaction,
  split: {
    id: string;
    threshold: number;
    total: number;
    kekId: string;
    holders: string;
    requestId: string | null;
    createdAt: Date;
    seal: Buffer;
  },
): Promise<void> {
  await trx('master_key_splits').insert({
    id: split.id,
    state: 'active',
    threshold: split.threshold,
    total: split.total,
    kek_id: split.kekId,
    holders: split.holders,
    request_id: split.requestId,
    created_at: split.createdAt,
    seal: split.seal,
  });
}
