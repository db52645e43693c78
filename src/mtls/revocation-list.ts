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
 * - puts back an older head with the rows that matched it (a rollback to a saved state), or resets the
 *   list to the empty unsealed state a migration leaves (no saved state needed) → every running
 *   instance remembers the longest list it verified and refuses a shorter or different one; an
 *   instance starting, `mtls revocations verify` and every revoke also compare the list with the keyed
 *   audit trail ({@link auditedRevocationsProblem}): every intact `mtls.certificate.revoked` /
 *   `mtls.certificate.revocation-sealed` entry must name a serial in the list, and once one such entry
 *   (or the `mtls.revocations.sealed` entry of the empty head's sealing) exists the head must be
 *   sealed. Rolling that back too means deleting keyed audit entries, which `audit verify` reports.
 *
 * Appending is serialised on the head row (`for update`) and verifies the whole list first: a revoke
 * never seals over a tampered list.
 */
import { isMasterKeyUnavailable } from '../errors/app-error.js';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import { auditEntryIntact } from '../audit/audit-log.js';
import type { MasterKeySource } from '../keys/master-key-types.js';
import {
  auditEntriesOf,
  revocationEntriesAfter,
  insertRevocationEntry,
  readRevocationHead,
  writeRevocationHead,
  writeRevocationHeadSeal,
  type RevocationEntry,
  type RevocationHead,
} from './revocation-store.js';

// The head and entries are read through the store; these were exported from here before it existed.
export {
  revocationEntriesAfter,
  readRevocationHead,
  type RevocationEntry,
  type RevocationHead,
} from './revocation-store.js';

type Db = Knex | Knex.Transaction;

const LABEL = 'loyalty-vault/mtls-revocations/v1';
export const REVOCATION_HEAD_AAD = `${LABEL}:head`;
export const GENESIS_CHAIN = Buffer.alloc(32);

/** A list that verified: its length, its chain value and the serials it revokes. */
export interface VerifiedList {
  readonly length: number;
  readonly chain: Buffer;
  readonly serials: readonly string[];
}

export type Verification = ({ readonly ok: true } & VerifiedList) | { readonly ok: false; readonly problem: string };

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

/** The head as a string that changes whenever any of its columns does (to skip re-verifying it). */
export function headFingerprint(head: RevocationHead): string {
  return `${head.length}:${head.chain.toString('hex')}:${head.seal?.toString('hex') ?? '-'}`;
}

/**
 * True when the head's seal verifies. The empty list may be unsealed (the state a migration leaves)
 * here; {@link auditedRevocationsProblem} refuses that once the audit trail shows it was sealed.
 */
export async function headSealValid(masterKey: MasterKeySource, head: RevocationHead): Promise<boolean> {
  if (head.seal === null || head.seal.length === 0) {
    return head.length === 0 && head.chain.equals(GENESIS_CHAIN);
  }
  let digest: Buffer;
  try {
    digest = await masterKey.unwrap(head.seal, REVOCATION_HEAD_AAD);
  } catch (error) {
    // A source that cannot answer now is not "another key": skipping would half-write a rotation.
    if (isMasterKeyUnavailable(error)) throw error;
    return false;
  }
  const expected = headDigest(head.length, head.chain);
  return digest.length === expected.length && timingSafeEqual(digest, expected);
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
  const current = head ?? (await readRevocationHead(db));
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
  for (const entry of await revocationEntriesAfter(db, from.length)) {
    if (entry.position > current.length) {
      // A revoke writes its row and the head in one transaction: if it committed after the head was
      // read, the head read again covers the row. If not, the row lies past the sealed head.
      const again = headLocked ? current : await readRevocationHead(db);
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

/** Audit actions whose intact entries name a serial that must be in the sealed list. */
const REVOKED_ACTIONS = ['mtls.certificate.revoked', 'mtls.certificate.revocation-sealed'];
/** The audit action recording that the empty head was sealed: after it, an unsealed head is a reset. */
export const REVOCATIONS_SEALED_ACTION = 'mtls.revocations.sealed';

/**
 * The list against the keyed audit trail (which a database writer cannot forge or shorten without
 * `audit verify` reporting it): a problem when an intact revocation entry names a serial that is not
 * in `serials`, or when the head is unsealed although an intact entry shows the list was sealed or
 * held a revocation. Only entries whose MAC verifies count: planting one needs the audit-chain key.
 * Fails closed when the audit-chain key is unavailable (the entries cannot be told from forgeries).
 */
export async function auditedRevocationsProblem(
  db: Db,
  head: RevocationHead,
  serials: readonly string[],
): Promise<string | undefined> {
  const rows = await auditEntriesOf(db, [...REVOKED_ACTIONS, REVOCATIONS_SEALED_ACTION]);
  const listed = new Set(serials);
  for (const row of rows) {
    let intact: boolean;
    try {
      intact = await auditEntryIntact(db, row.seq);
    } catch {
      return 'the audit-chain key is unavailable: the revocations the audit trail records cannot be checked';
    }
    if (!intact) continue; // an edited entry is `audit verify`'s finding; it proves nothing here
    if (head.seal === null || head.seal.length === 0) {
      return `the revocation list head is unsealed, but audit entry ${row.seq} (${row.action}) shows it was sealed (the list was reset)`;
    }
    if (row.action === REVOCATIONS_SEALED_ACTION) continue;
    const details = (typeof row.details === 'string' ? JSON.parse(row.details) : row.details) as { serial?: unknown };
    if (typeof details.serial === 'string' && !listed.has(details.serial)) {
      return `certificate ${details.serial} was revoked (audit entry ${row.seq}) but is not in the sealed revocation list (a revocation was undone)`;
    }
  }
  return undefined;
}

/**
 * Seals the empty head a migration leaves (in the caller's transaction; the caller records
 * {@link REVOCATIONS_SEALED_ACTION}). Returns false when the head is already sealed.
 */
export async function sealEmptyHead(trx: Knex.Transaction, masterKey: MasterKeySource): Promise<boolean> {
  const head = await readRevocationHead(trx, true);
  if (head.seal !== null && head.seal.length > 0) return false;
  if (head.length !== 0 || !head.chain.equals(GENESIS_CHAIN)) return false; // invalid: left to the verifier
  // Never seal over a reset: an unsealed empty head after the trail shows it sealed stays refused.
  if ((await auditedRevocationsProblem(trx, head, [])) !== undefined) return false;
  const seal = await masterKey.wrap(headDigest(0, GENESIS_CHAIN), REVOCATION_HEAD_AAD);
  await writeRevocationHeadSeal(trx, seal);
  return true;
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
  const head = await readRevocationHead(trx, true);
  const verified = await verifyRevocationList(trx, masterKey, undefined, head, true);
  if (!verified.ok) return verified;
  const audited = await auditedRevocationsProblem(trx, head, [...verified.serials, ...entries.map((e) => e.serial)]);
  if (audited !== undefined) return { ok: false, problem: audited };
  let chain = verified.chain;
  let position = verified.length;
  const positions: number[] = [];
  for (const e of entries) {
    position += 1;
    const entry: RevocationEntry = { ...e, position };
    await insertRevocationEntry(trx, entry);
    chain = nextChain(chain, entry);
    positions.push(position);
  }
  const seal = await masterKey.wrap(headDigest(position, chain), REVOCATION_HEAD_AAD);
  await writeRevocationHead(trx, { length: position, chain, seal });
  return { ok: true, positions };
}

/** For a master-key rotation, in its transaction: rewraps the head's seal under the current master key. */
export async function rewrapRevocationHead(trx: Knex.Transaction, masterKey: MasterKeySource): Promise<number> {
  const head = await readRevocationHead(trx, true);
  if (head.seal === null) return 0;
  let digest: Buffer;
  try {
    digest = await masterKey.unwrap(head.seal, REVOCATION_HEAD_AAD);
  } catch (error) {
    // A source that cannot answer now is not "another key": skipping would half-write a rotation.
    if (isMasterKeyUnavailable(error)) throw error;
    return 0; // no configured master key opens it: it stays refused
  }
  await writeRevocationHeadSeal(trx, await masterKey.wrap(digest, REVOCATION_HEAD_AAD));
  return 1;
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
