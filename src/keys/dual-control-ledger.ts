/**
 * The ledger of executed dual-control requests: proof, against a database writer, that a request ran
 * at most once.
 *
 * `key_requests.state` is only an index: anyone who can write the database can set it back to
 * `pending`. What decides whether a request already ran is this ledger:
 *
 * - every execution is a row of `key_request_executions` linked into a hash chain,
 *   `chain_n = SHA-256(["loyalty-vault/dual-control-ledger/v1", chain_{n-1}, n, request id, operation,
 *   payload digest])`;
 * - the head (`dual_control_ledger`: seq and chain) carries a seal, `masterKey.wrap(SHA-256(label, seq,
 *   chain))` with a fixed AAD, which nobody without the master key can make;
 * - before any execution the whole chain (a few rows per key operation ever made) is recomputed and
 *   must end in the sealed head. Deleting an execution, editing one, copying one onto another request
 *   or re-pointing the head fails here (`DUAL_CONTROL_TAMPERED`) and nothing runs;
 * - an executed request also leaves a `key.request.executed` audit entry, written in the same
 *   transaction. Rolling the ledger back to an older sealed state (a snapshot taken before the
 *   execution) is caught by that entry; removing the entry as well breaks the keyed audit chain.
 *
 * The ledger's first entry is the genesis ceremony of the first two custodians. A genesis runs only at
 * position 0 with no genesis and no execution in the audit trail ({@link assertFirstGenesis}); the
 * custodian register trusts a genesis only when it is entry 1 here (custodian-provenance.ts). An
 * unsealed head while the audit trail records a genesis is tampering.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import { auditEntryExists } from '../audit/audit-store.js';
import { AppError, isMasterKeyUnavailable } from '../errors/app-error.js';
import {
  executions,
  firstExecution,
  insertExecution,
  lockLedgerHead,
  readLedgerHead,
  writeLedgerHead,
  writeLedgerSeal,
  type LedgerHeadRow,
} from './dual-control-store.js';
import type { MasterKeySource } from './master-key-types.js';

const LEDGER_LABEL = 'loyalty-vault/dual-control-ledger/v1';
const HEAD_AAD = `${LEDGER_LABEL}:head`;
const ZERO_CHAIN = '0'.repeat(64);

export interface LedgerState {
  readonly seq: number;
  readonly chain: string;
  /** Request ids that ran, in order. */
  readonly executed: ReadonlySet<string>;
}

function link(previous: string, seq: number, requestId: string, operation: string, payloadSha256: string): string {
  return createHash('sha256')
    .update(JSON.stringify([LEDGER_LABEL, previous, seq, requestId, operation, payloadSha256]))
    .digest('hex');
}

function headDigest(seq: number, chain: string): Buffer {
  return createHash('sha256')
    .update(JSON.stringify([LEDGER_LABEL, 'head', seq, chain]))
    .digest();
}

function tampered(detail: string): AppError {
  return new AppError('DUAL_CONTROL_TAMPERED', { detail });
}

/**
 * Locks the head, recomputes the chain from every execution and checks it against the sealed head.
 * Throws DUAL_CONTROL_TAMPERED when they disagree.
 */
export async function readLedger(trx: Knex.Transaction, masterKey: MasterKeySource): Promise<LedgerState> {
  const head = await lockLedgerHead(trx);
  return checkedLedger(trx, masterKey, head);
}

/**
 * The same verification without locking the head (for reads such as the custodian register's
 * provenance), with the first execution: the genesis ceremony, when the ledger is sound.
 */
export async function verifyLedger(
  db: Knex | Knex.Transaction,
  masterKey: MasterKeySource,
): Promise<LedgerState & { readonly first: { readonly requestId: string; readonly operation: string } | undefined }> {
  const head = await readLedgerHead(db);
  const ledger = await checkedLedger(db, masterKey, head);
  const first = await firstExecution(db);
  return {
    ...ledger,
    first: first === undefined ? undefined : { requestId: first.request_id, operation: first.operation },
  };
}

async function checkedLedger(
  db: Knex | Knex.Transaction,
  masterKey: MasterKeySource,
  head: LedgerHeadRow | undefined,
): Promise<LedgerState> {
  if (head === undefined) throw tampered('The dual-control ledger head is missing.');
  const rows = await executions(db);
  let chain = ZERO_CHAIN;
  const executed = new Set<string>();
  for (const [index, row] of rows.entries()) {
    const expected = link(chain, index + 1, row.request_id, row.operation, row.payload_sha256);
    if (row.seq !== index + 1 || row.chain !== expected) {
      throw tampered(`The executed-request ledger is broken at entry ${index + 1}.`);
    }
    chain = expected;
    executed.add(row.request_id);
  }
  if (head.seq === 0 && head.seal === null) {
    if (rows.length > 0) throw tampered('Executions are recorded but the ledger head is not sealed.');
    if (await auditRecordsGenesis(db)) {
      throw tampered('The audit trail records a custodian genesis but the executed-request ledger is empty.');
    }
    return { seq: 0, chain: ZERO_CHAIN, executed };
  }
  if (!(await sealMatches(masterKey, head.seal, headDigest(head.seq, head.chain)))) {
    throw tampered('The seal of the executed-request ledger does not verify under the master key.');
  }
  if (head.seq !== rows.length || head.chain !== chain) {
    throw tampered('The executed-request ledger does not end where its sealed head says: an execution was removed.');
  }
  return { seq: head.seq, chain, executed };
}

/**
 * A genesis runs only as the very first dual-control execution: the sealed ledger is at position 0
 * and the audit trail records no genesis and no executed request at all. Anything else means the
 * register was wiped or replaced after a genesis (a database writer deleting the sealed custodian
 * rows to stage a genesis of their own), and is refused as tampering.
 */
export async function assertFirstGenesis(trx: Knex.Transaction, ledger: LedgerState): Promise<void> {
  if (ledger.seq !== 0) {
    throw tampered(
      `A genesis is on record: the executed-request ledger holds ${ledger.seq} execution(s), the first of them the ` +
        'genesis. There is no second genesis; a register without its custodians was emptied in the database.',
    );
  }
  if ((await auditRecordsGenesis(trx)) || (await auditRecordsAnyExecution(trx))) {
    throw tampered(
      'The audit trail records a genesis or an executed request, but the ledger is empty: no new genesis.',
    );
  }
}

/** Records an execution and reseals the head, in the operation's transaction (after readLedger). */
export async function appendExecution(
  trx: Knex.Transaction,
  masterKey: MasterKeySource,
  ledger: LedgerState,
  execution: { requestId: string; operation: string; payloadSha256: string },
  now: Date,
): Promise<void> {
  const seq = ledger.seq + 1;
  const chain = link(ledger.chain, seq, execution.requestId, execution.operation, execution.payloadSha256);
  await insertExecution(trx, {
    request_id: execution.requestId,
    seq,
    operation: execution.operation,
    payload_sha256: execution.payloadSha256,
    chain,
    executed_at: now,
  });
  const seal = await masterKey.wrap(headDigest(seq, chain), HEAD_AAD);
  await writeLedgerHead(trx, { seq, chain, seal });
}

/**
 * True when the audit trail records that this request ran (or, for `genesis`, that a genesis ran):
 * the second witness, which a rollback of the ledger to an older sealed state does not remove.
 */
export async function auditRecordsExecution(db: Knex | Knex.Transaction, requestId: string): Promise<boolean> {
  return auditEntryExists(db, { action: 'key.request.executed', resource: `request:${requestId}`, outcome: 'success' });
}

export async function auditRecordsAnyExecution(db: Knex | Knex.Transaction): Promise<boolean> {
  return auditEntryExists(db, { action: 'key.request.executed', outcome: 'success' });
}

export async function auditRecordsGenesis(db: Knex | Knex.Transaction): Promise<boolean> {
  return auditEntryExists(db, { action: 'key.custodian.genesis', outcome: 'success' });
}

/** For a master-key rotation: reseals the head under the current master key. */
export async function rewrapLedgerSeal(trx: Knex.Transaction, masterKey: MasterKeySource): Promise<void> {
  const head = await readLedgerHead(trx);
  if (head?.seal === null || head === undefined) return;
  let digest: Buffer;
  try {
    digest = await masterKey.unwrap(head.seal, HEAD_AAD);
  } catch (error) {
    // A source that cannot answer now is not "another key": skipping would half-write a rotation.
    if (isMasterKeyUnavailable(error)) throw error;
    return; // a seal no configured master key opens stays as it is: still refused
  }
  await writeLedgerSeal(trx, await masterKey.wrap(digest, HEAD_AAD));
}

export async function sealMatches(
  masterKey: MasterKeySource,
  seal: Buffer | null,
  expected: Buffer,
  aad = HEAD_AAD,
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
