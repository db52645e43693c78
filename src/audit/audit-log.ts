/**
 * The append-only, hash-chained audit trail (PCI DSS 10.2, 10.3).
 *
 * Each entry stores the SHA-256 of the previous entry and of its own canonical form, so editing,
 * deleting or reordering any entry breaks the chain at that point. Appends lock the single chain-head
 * row, which keeps the chain linear across any number of service instances; an entry is written in the
 * same transaction as the action it records, so there is never an action without its entry.
 *
 * Entries never contain a PAN: `details` is checked for PAN-like digit runs before it is written.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { isAppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import { maskPans } from '../logging/pan-redactor.js';

export type AuditOutcome = 'success' | 'failure' | 'denied';
export type ActorType = 'client' | 'custodian' | 'operator' | 'service' | 'system';

export interface AuditEventInput {
  /** Who: the JWT subject, the custodian name, or `system`. */
  readonly actor: string;
  readonly actorType: ActorType;
  /** What: a dotted verb, e.g. `card.detokenised`, `key.created`. */
  readonly action: string;
  readonly outcome: AuditOutcome;
  /** Where from: request id and client address, or CLI host and user. */
  readonly origin: string;
  /** What was affected: `tok_…`, `key:pan-encryption:v2`, … */
  readonly resource: string;
  readonly details?: Readonly<Record<string, unknown>>;
}

export interface AuditEvent extends Required<AuditEventInput> {
  readonly seq: number;
  readonly id: string;
  readonly occurredAt: string;
  readonly prevHash: string;
  readonly hash: string;
}

export const GENESIS_HASH = '0'.repeat(64);

export async function appendAuditEvent(
  trx: Knex.Transaction,
  input: AuditEventInput,
  now = new Date(),
): Promise<AuditEvent> {
  const details = input.details ?? {};
  const serialised = JSON.stringify(details);
  if (maskPans(serialised) !== serialised) throw new Error('refusing to write a PAN-like value into the audit trail');
  const head = (await trx('audit_chain_head').where({ id: 1 }).forUpdate().first()) as { seq: number; hash: string };
  const body = {
    seq: head.seq + 1,
    id: newId('aud'),
    occurredAt: now.toISOString(),
    actor: input.actor,
    actorType: input.actorType,
    action: input.action,
    outcome: input.outcome,
    origin: input.origin,
    resource: input.resource,
    details,
    prevHash: head.hash,
  };
  const hash = hashEntry(body);
  await trx('audit_events').insert({
    seq: body.seq,
    id: body.id,
    occurred_at: now,
    actor: body.actor,
    actor_type: body.actorType,
    action: body.action,
    outcome: body.outcome,
    origin: body.origin,
    resource: body.resource,
    details: JSON.stringify(details),
    prev_hash: body.prevHash,
    hash,
  });
  await trx('audit_chain_head').where({ id: 1 }).update({ seq: body.seq, hash });
  return { ...body, hash };
}

/**
 * Runs a write in a transaction of its own. When it is refused (an AppError), the refusal is recorded
 * (outcome `denied`, with the code and reason) in another transaction, since the write's own rolled
 * back, and the error is thrown on. The evidence of a refused key operation survives the refusal.
 */
export async function auditedWrite<T>(
  knex: Knex,
  who: Pick<AuditEventInput, 'actor' | 'actorType' | 'origin'>,
  what: { readonly action: string; readonly resource: string },
  write: (trx: Knex.Transaction) => Promise<T>,
  now: () => Date,
): Promise<T> {
  try {
    return await knex.transaction(write);
  } catch (error) {
    if (isAppError(error)) {
      const details = { code: error.code, reason: error.detail ?? error.title, ...error.extensions };
      await knex.transaction((trx) => appendAuditEvent(trx, { ...who, ...what, outcome: 'denied', details }, now()));
    }
    throw error;
  }
}

/** Deterministic JSON: object keys sorted at every depth, no whitespace. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** The SHA-256 of an entry's canonical form (everything but its own hash). */
export function hashEntry(body: Omit<AuditEvent, 'hash'>): string {
  return createHash('sha256').update(canonicalJson(body)).digest('hex');
}

interface AuditRow {
  seq: number;
  id: string;
  occurred_at: Date;
  actor: string;
  actor_type: ActorType;
  action: string;
  outcome: AuditOutcome;
  origin: string;
  resource: string;
  details: Record<string, unknown> | string;
  prev_hash: string;
  hash: string;
}

export function rowToEvent(row: AuditRow): AuditEvent {
  return {
    seq: row.seq,
    id: row.id,
    occurredAt: row.occurred_at.toISOString(),
    actor: row.actor,
    actorType: row.actor_type,
    action: row.action,
    outcome: row.outcome,
    origin: row.origin,
    resource: row.resource,
    details: typeof row.details === 'string' ? (JSON.parse(row.details) as Record<string, unknown>) : row.details,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

export type ChainVerdict =
  | { readonly ok: true; readonly checked: number; readonly headSeq: number }
  | { readonly ok: false; readonly checked: number; readonly brokenAtSeq: number; readonly reason: string };

/**
 * Walks the chain in order and reports the first broken link: a recomputed hash that differs (an
 * edited entry), a `prevHash` that does not match its predecessor (a deleted or reordered entry), a
 * gap in `seq`, or a chain head that does not match the last entry (a truncated tail).
 */
export async function verifyAuditChain(knex: Knex, batchSize = 1000): Promise<ChainVerdict> {
  let expectedPrev = GENESIS_HASH;
  let expectedSeq = 1;
  let checked = 0;
  for (;;) {
    const rows = (await knex('audit_events')
      .where('seq', '>=', expectedSeq)
      .orderBy('seq')
      .limit(batchSize)) as AuditRow[];
    for (const row of rows) {
      const event = rowToEvent(row);
      if (event.seq !== expectedSeq) return broken(checked, expectedSeq, `entry ${expectedSeq} is missing`);
      if (event.prevHash !== expectedPrev) return broken(checked, event.seq, 'does not link to the previous entry');
      const { hash, ...body } = event;
      if (hashEntry(body) !== hash) return broken(checked, event.seq, 'content does not match its hash');
      expectedPrev = hash;
      expectedSeq += 1;
      checked += 1;
    }
    if (rows.length < batchSize) break;
  }
  const head = (await knex('audit_chain_head').where({ id: 1 }).first()) as { seq: number; hash: string };
  if (head.seq !== checked || head.hash !== expectedPrev) {
    return broken(checked, checked + 1, 'the chain head does not match the last entry (entries removed from the end?)');
  }
  return { ok: true, checked, headSeq: head.seq };
}

function broken(checked: number, seq: number, reason: string): ChainVerdict {
  return { ok: false, checked, brokenAtSeq: seq, reason };
}
