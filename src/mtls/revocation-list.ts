/**
 * The sealed revocation list: what makes a revocation impossible to undo with database write access
 * alone (issue 17). `revoked_at` on a certificate record is only for display; what every instance
 * trusts is this list.
 *
 * - `mtls_revocations` is append-only: one row per revoked serial, at positions 1, 2, 3, …
 * - Its rows are hash-chained: `chain(n) = SHA-256(chain(n-1) ‖ SHA-256(canonical entry n))`,
 *   `chain(0)` = 32 zero bytes. The entry covers position, serial, fingerprint, time, operator, reason.
 * - The head (`mtls_revocation_list`, one row) holds the length and `chain(length)`, and a seal:
 *   `masterKey.wrap(SHA-256(label, length, chain))`, as the grants and CA rows are sealed
 *   (src/mtls/seals.ts). Only a holder of the master key (the key CLI revoking) can make a head that
 *   verifies.
 *
 * What an insider's edit does:
 * - clears `revoked_at` on the record → nothing: the serial is still in the sealed list;
 * - deletes or edits a revocation row, or inserts one → the chain no longer reaches the sealed head:
 *   the list is invalid, and every instance refuses every client certificate
 *   (`CLIENT_CERTIFICATE_REVOCATIONS_INVALID`, fail closed) and audits the detection;
 * - edits the head (length, chain, seal) → its seal does not verify: the same;
 * - puts back an older head with the rows that matched it (a rollback to a saved state) → every running
 *   instance remembers the longest list it verified and refuses a shorter or different one. Only an
 *   instance started after the rollback cannot tell by itself; the revocation is still in the keyed
 *   audit trail (`mtls.certificate.revoked`) whose checkpoints are kept outside the database.
 *
 * Appending is serialised on the head row (`for update`) and verifies the whole list first: a revoke
 * never seals over a tampered list.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import type { MasterKeySource } from '../keys/master-key-source.js';

type Db = Knex | Knex.Transaction;

const LABEL = 'loyalty-vault/mtls-revocations/v1';
export const REVOCATION_HEAD_AAD = `${LABEL}:head`;
export const GENESIS_CHAIN = Buffer.alloc(32);

export interface RevocationEntry {
  readonly position: number;
  readonly serial: string;
  readonly fingerprint: string;
  readonly revokedAt: Date;
  readonly revokedBy: string;
  readonly reason: string;
}

export interface RevocationHead {
  readonly length: number;
  readonly chain: Buffer;
  readonly seal: Buffer | null;
}

/** A list that verified: its length, its chain value and the serials it revokes. */
export interface VerifiedList {
  readonly length: number;
  readonly chain: Buffer;
  readonly serials: readonly string[];
}

export type Verification = ({ readonly ok: true } & VerifiedList) | { readonly ok: false; readonly problem: string };

interface EntryRow {
  position: string | number;
  serial: string;
  fingerprint_sha256: string;
  revoked_at: Date;
  revoked_by: string;
  reason: string;
}

export function nextChain(chain: Buffer, entry: RevocationEntry): Buffer {
  const digest = sha256(
    JSON.stringify([
      LABEL,
      entry.position,
      entry.serial,
      entry.fingerprint,
      entry.revokedAt.toISOString(),
      entry.revokedBy,
      entry.reason,
    ]),
  );
  return createHash('sha256').update(chain).update(digest).digest();
}

function headDigest(length: number, chain: Buffer): Buffer {
  return sha256(JSON.stringify([LABEL, length, chain.toString('hex')]));
}

export async function readHead(db: Db, forUpdate = false): Promise<RevocationHead> {
  const query = db('mtls_revocation_list').where({ id: 1 }).first('length', 'chain', 'seal');
  if (forUpdate) void query.forUpdate();
  const row = (await query) as { length: string | number; chain: Buffer; seal: Buffer | null };
  return {
    length: Number(row.length),
    chain: Buffer.from(row.chain),
    seal: row.seal === null ? null : Buffer.from(row.seal),
  };
}

/** The head as a string that changes whenever any of its columns does (to skip re-verifying it). */
export function headFingerprint(head: RevocationHead): string {
  return `${head.length}:${head.chain.toString('hex')}:${head.seal?.toString('hex') ?? '-'}`;
}

/** True when the head's seal verifies (the empty list may be unsealed: the state a migration leaves). */
export async function headSealValid(masterKey: MasterKeySource, head: RevocationHead): Promise<boolean> {
  if (head.seal === null || head.seal.length === 0) {
    return head.length === 0 && head.chain.equals(GENESIS_CHAIN);
  }
  let digest: Buffer;
  try {
    digest = await masterKey.unwrap(head.seal, REVOCATION_HEAD_AAD);
  } catch {
    return false;
  }
  const expected = headDigest(head.length, head.chain);
  return digest.length === expected.length && timingSafeEqual(digest, expected);
}

export async function entriesAfter(db: Db, position: number): Promise<RevocationEntry[]> {
  const rows = (await db('mtls_revocations').where('position', '>', position).orderBy('position')) as EntryRow[];
  return rows.map((r) => ({
    position: Number(r.position),
    serial: r.serial,
    fingerprint: r.fingerprint_sha256,
    revokedAt: r.revoked_at,
    revokedBy: r.revoked_by,
    reason: r.reason,
  }));
}

/**
 * Verifies the list against its sealed head. With `from` (a list this process verified before), only
 * the rows after it are read, and the head must extend it: a shorter head, or one that does not pass
 * through `from`'s chain, is a rollback.
 */
export async function verifyRevocationList(
  db: Db,
  masterKey: MasterKeySource,
  from: VerifiedList = { length: 0, chain: GENESIS_CHAIN, serials: [] },
  head?: RevocationHead,
  /** The head is locked by the caller: no revoke is in flight, so a row past the head is tampering. */
  headLocked = false,
): Promise<Verification> {
  const current = head ?? (await readHead(db));
  if (!(await headSealValid(masterKey, current))) {
    return { ok: false, problem: 'the seal of the revocation list head does not verify under the master key' };
  }
  if (current.length < from.length) {
    return {
      ok: false,
      problem: `the revocation list is shorter (${current.length}) than this process has seen (${from.length})`,
    };
  }
  let chain = from.chain;
  let position = from.length;
  const serials = [...from.serials];
  for (const entry of await entriesAfter(db, from.length)) {
    if (entry.position > current.length) {
      // A revoke writes its row and the head in one transaction: if it committed after the head was
      // read, the head read again covers the row. If not, the row lies past the sealed head.
      const again = headLocked ? current : await readHead(db);
      if (again.length > current.length) return verifyRevocationList(db, masterKey, from, again, headLocked);
      return { ok: false, problem: `revocation ${entry.position} lies past the sealed head` };
    }
    if (entry.position !== position + 1) {
      return { ok: false, problem: `revocation ${position + 1} is missing` };
    }
    chain = nextChain(chain, entry);
    position = entry.position;
    serials.push(entry.serial);
  }
  if (position !== current.length) {
    return { ok: false, problem: `revocations ${position + 1}..${current.length} are missing` };
  }
  if (!chain.equals(current.chain)) {
    return {
      ok: false,
      problem: 'the revocations do not hash to the sealed head (one was altered, removed or replaced)',
    };
  }
  return { ok: true, length: position, chain, serials };
}

/**
 * Appends revocations in the caller's transaction and seals the new head. Refused (returns the problem)
 * when the list as it stands does not verify: sealing over it would bless the tampering.
 */
export async function appendRevocations(
  trx: Knex.Transaction,
  masterKey: MasterKeySource,
  entries: readonly Omit<RevocationEntry, 'position'>[],
): Promise<{ ok: true; positions: number[] } | { ok: false; problem: string }> {
  const head = await readHead(trx, true);
  const verified = await verifyRevocationList(trx, masterKey, undefined, head, true);
  if (!verified.ok) return verified;
  let chain = verified.chain;
  let position = verified.length;
  const positions: number[] = [];
  for (const e of entries) {
    position += 1;
    const entry: RevocationEntry = { ...e, position };
    await trx('mtls_revocations').insert({
      position,
      serial: entry.serial,
      fingerprint_sha256: entry.fingerprint,
      revoked_at: entry.revokedAt,
      revoked_by: entry.revokedBy,
      reason: entry.reason,
    });
    chain = nextChain(chain, entry);
    positions.push(position);
  }
  const seal = await masterKey.wrap(headDigest(position, chain), REVOCATION_HEAD_AAD);
  await trx('mtls_revocation_list').where({ id: 1 }).update({ length: position, chain, seal });
  return { ok: true, positions };
}

/** For a master-key rotation, in its transaction: rewraps the head's seal under the current master key. */
export async function rewrapRevocationHead(trx: Knex.Transaction, masterKey: MasterKeySource): Promise<number> {
  const head = await readHead(trx, true);
  if (head.seal === null) return 0;
  let digest: Buffer;
  try {
    digest = await masterKey.unwrap(head.seal, REVOCATION_HEAD_AAD);
  } catch {
    return 0; // no configured master key opens it: it stays refused
  }
  await trx('mtls_revocation_list')
    .where({ id: 1 })
    .update({ seal: await masterKey.wrap(digest, REVOCATION_HEAD_AAD) });
  return 1;
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
