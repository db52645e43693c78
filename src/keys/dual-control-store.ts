/**
 * SQL of dual control: the requests (`key_requests`), the custodians' approvals (`key_approvals`) and
 * the sealed ledger of executed requests (`dual_control_ledger`, `key_request_executions`). Functions
 * take a knex handle or a transaction: dual-control.ts, key-approvals.ts and dual-control-ledger.ts
 * decide the transaction, the lock order and every check (signatures, seals, the chain); this file
 * only reads and writes rows. A row read here is trusted for nothing until its caller verifies it.
 */
import type { Knex } from 'knex';
import type { RequestParams } from './request-payload.js';

type Db = Knex | Knex.Transaction;

export interface RequestRow {
  id: string;
  operation: string;
  params: RequestParams | string;
  payload: string;
  state: string;
  expires_at: Date;
  created_at: Date;
}

export interface ApprovalRow {
  request_id: string;
  key_thumbprint: string;
  jws: string;
  approved_at: Date;
}

/** The ledger head (`dual_control_ledger`, one row, id 1). */
export interface LedgerHeadRow {
  seq: number;
  chain: string;
  seal: Buffer | null;
}

export interface ExecutionRow {
  request_id: string;
  seq: number;
  operation: string;
  payload_sha256: string;
  chain: string;
}

// ---- requests ----------------------------------------------------------------------------------

/** Whether any dual-control request exists, in any state. */
export async function anyRequestRow(trx: Knex.Transaction): Promise<boolean> {
  return ((await trx('key_requests').first('id')) as unknown) !== undefined;
}

export async function insertRequest(
  trx: Knex.Transaction,
  request: {
    id: string;
    operation: string;
    params: string;
    payload: string;
    description: string;
    requestedBy: string;
    origin: string;
    createdAt: Date;
    expiresAt: Date;
  },
): Promise<void> {
  await trx('key_requests').insert({
    id: request.id,
    operation: request.operation,
    params: request.params,
    payload: request.payload,
    description: request.description,
    state: 'pending',
    requested_by: request.requestedBy,
    origin: request.origin,
    created_at: request.createdAt,
    expires_at: request.expiresAt,
  });
}

export async function findRequest(db: Db, id: string): Promise<RequestRow | undefined> {
  return (await db('key_requests').where({ id }).first()) as RequestRow | undefined;
}

/** The request row, locked (`for update`) by the transaction that may execute it. */
export async function lockRequest(trx: Knex.Transaction, id: string): Promise<RequestRow | undefined> {
  return (await trx('key_requests').where({ id }).forUpdate().first()) as RequestRow | undefined;
}

/** Locks the request row (`for update`) without reading it: approvals of one request run one at a time. */
export async function lockRequestId(trx: Knex.Transaction, id: string): Promise<void> {
  await trx('key_requests').where({ id }).forUpdate().first('id');
}

/** The parameters column of a request (an index only: what runs is decided from the signed payload). */
export async function requestParamsColumn(
  trx: Knex.Transaction,
  id: string,
): Promise<{ params: RequestParams | string } | undefined> {
  return (await trx('key_requests').where({ id }).first('params')) as { params: RequestParams | string } | undefined;
}

/** Sets the `state` index of an executed request (the ledger is what decides it ran). */
export async function markRequestExecuted(trx: Knex.Transaction, id: string, at: Date): Promise<void> {
  await trx('key_requests').where({ id }).update({ state: 'executed', executed_at: at });
}

/** The newest requests' ids and creation times, newest first. */
export async function recentRequests(db: Knex, limit: number): Promise<{ id: string; created_at: Date }[]> {
  return (await db('key_requests').orderBy('created_at', 'desc').limit(limit).select('id', 'created_at')) as {
    id: string;
    created_at: Date;
  }[];
}

// ---- approvals ---------------------------------------------------------------------------------

/** A request's approvals, oldest first. */
export async function approvalsOf(db: Db, requestId: string): Promise<ApprovalRow[]> {
  return (await db('key_approvals').where({ request_id: requestId }).orderBy('approved_at')) as ApprovalRow[];
}

/** The approvals of these requests (the custodians' registrations), in no particular order. */
export async function approvalsOfRequests(
  db: Db,
  requestIds: readonly string[],
): Promise<Pick<ApprovalRow, 'request_id' | 'key_thumbprint' | 'jws'>[]> {
  return (await db('key_approvals')
    .whereIn('request_id', requestIds)
    .select('request_id', 'key_thumbprint', 'jws')) as Pick<ApprovalRow, 'request_id' | 'key_thumbprint' | 'jws'>[];
}

/** Records an approval; false when this key already approved this request (nothing written). */
export async function insertApproval(
  trx: Knex.Transaction,
  approval: { requestId: string; custodianId: string | null; keyThumbprint: string; jws: string; approvedAt: Date },
): Promise<boolean> {
  const inserted = (await trx('key_approvals')
    .insert({
      request_id: approval.requestId,
      custodian_id: approval.custodianId,
      key_thumbprint: approval.keyThumbprint,
      jws: approval.jws,
      approved_at: approval.approvedAt,
    })
    .onConflict(['request_id', 'key_thumbprint'])
    .ignore()
    .returning('key_thumbprint')) as unknown[];
  return inserted.length > 0;
}

export async function countApprovals(trx: Knex.Transaction, requestId: string): Promise<number> {
  const count = (await trx('key_approvals').where({ request_id: requestId }).count('* as n').first()) as {
    n: number | string;
  };
  return Number(count.n);
}

// ---- the executed-request ledger ---------------------------------------------------------------

/** The ledger head, locked (`for update`): executions are appended one at a time. */
export async function lockLedgerHead(trx: Knex.Transaction): Promise<LedgerHeadRow | undefined> {
  return (await trx('dual_control_ledger').where({ id: 1 }).forUpdate().first()) as LedgerHeadRow | undefined;
}

/** The ledger head, not locked. */
export async function readLedgerHead(db: Db): Promise<LedgerHeadRow | undefined> {
  return (await db('dual_control_ledger').where({ id: 1 }).first()) as LedgerHeadRow | undefined;
}

export async function writeLedgerHead(
  trx: Knex.Transaction,
  head: { seq: number; chain: string; seal: Buffer },
): Promise<void> {
  await trx('dual_control_ledger').where({ id: 1 }).update({ seq: head.seq, chain: head.chain, seal: head.seal });
}

export async function writeLedgerSeal(trx: Knex.Transaction, seal: Buffer): Promise<void> {
  await trx('dual_control_ledger').where({ id: 1 }).update({ seal });
}

/** Every execution, in ledger order. */
export async function executions(db: Db): Promise<ExecutionRow[]> {
  return (await db('key_request_executions').orderBy('seq')) as ExecutionRow[];
}

/** The ledger's first execution (the genesis, in a sound ledger). */
export async function firstExecution(db: Db): Promise<{ request_id: string; operation: string } | undefined> {
  return (await db('key_request_executions').where({ seq: 1 }).first('request_id', 'operation')) as
    { request_id: string; operation: string } | undefined;
}

/** Whether an execution of this request is recorded (for display: execution verifies the ledger). */
export async function executionRecorded(db: Db, requestId: string): Promise<boolean> {
  return ((await db('key_request_executions').where({ request_id: requestId }).first('seq')) as unknown) !== undefined;
}

export async function insertExecution(
  trx: Knex.Transaction,
  execution: ExecutionRow & { executed_at: Date },
): Promise<void> {
  await trx('key_request_executions').insert({
    request_id: execution.request_id,
    seq: execution.seq,
    operation: execution.operation,
    payload_sha256: execution.payload_sha256,
    chain: execution.chain,
    executed_at: execution.executed_at,
  });
}
