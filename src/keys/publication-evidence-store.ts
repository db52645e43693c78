/**
 * SQL of the evidence a resumed rotation is checked against (key-publication.ts): the audit entries
 * recorded for a key version, and the executed dual-control request its publication names. Read in
 * the caller's transaction.
 */
import type { Knex } from 'knex';

export interface AuditEntryRow {
  seq: number | string;
  action: string;
  details: unknown;
}

/** The successful audit entries of `resource` with one of `actions`, in chain order. */
export async function successfulKeyEntries(
  trx: Knex.Transaction,
  resource: string,
  actions: readonly string[],
): Promise<AuditEntryRow[]> {
  return (await trx('audit_events')
    .where({ resource, outcome: 'success' })
    .whereIn('action', actions as string[])
    .orderBy('seq')
    .select('seq', 'action', 'details')) as AuditEntryRow[];
}

/** The execution record of a dual-control request, if it ran. */
export async function requestExecution(
  trx: Knex.Transaction,
  requestId: string,
): Promise<{ operation: string; payload_sha256: string } | undefined> {
  return (await trx('key_request_executions').where({ request_id: requestId }).first()) as
    { operation: string; payload_sha256: string } | undefined;
}

/** The stored payload of a dual-control request, if it exists. */
export async function requestPayload(trx: Knex.Transaction, requestId: string): Promise<string | undefined> {
  const request = (await trx('key_requests').where({ id: requestId }).first('payload')) as
    { payload: string } | undefined;
  return request?.payload;
}

/** A key lifecycle entry of the trail: which entry, what it did, to which resource, when. */
export interface KeyLifecycleEntryRow extends AuditEntryRow {
  resource: string;
  occurred_at: Date | string;
}

/**
 * Every successful key lifecycle entry (`key.created`, `key.published`, … of a `key:<purpose>:v<n>`
 * resource) in chain order: what the key-state reconciliation replays. Measured on PostgreSQL with
 * 200,000 entries: a sequential scan, about 40 ms (fine for `keys audit verify` / `keys status`, not
 * yet for every key-ring reload).
 */
export async function keyLifecycleEntries(
  db: Knex | Knex.Transaction,
  actions: readonly string[],
): Promise<KeyLifecycleEntryRow[]> {
  return (await db('audit_events')
    .whereIn('action', actions as string[])
    .where('resource', 'like', 'key:%')
    .where({ outcome: 'success' })
    .orderBy('seq')
    .select('seq', 'action', 'resource', 'details', 'occurred_at')) as KeyLifecycleEntryRow[];
}
