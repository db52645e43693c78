/**
 * The keyed chain's primitives: how an entry, its details and the head are committed to.
 *
 * - details digest = SHA-256 over a domain label, a per-entry random 256-bit salt and the canonical
 *   details. The chain commits to the digest, not to the details, so an entry's details can be
 *   redacted (replaced by a tombstone, the salt discarded) while the chain still verifies. With the
 *   salt gone, a redacted low-entropy value (a PAN: a known BIN, its last four and Luhn leave ~10^6
 *   candidates) cannot be confirmed from the digest: the salt is 2^256 guesses on top.
 * - entry MAC = HMAC-SHA256(audit-chain key vN, every column except the details themselves, the
 *   digest and the previous entry's MAC). Without the key an edited entry's MAC cannot be recomputed.
 * - head MAC = HMAC-SHA256(same key, head seq and the last entry's MAC): the head names the end of
 *   the chain, so deleting the tail and re-pointing the head needs the key too.
 *
 * MACs, digests and salts are base64url, not hex: a hex digest holds a Luhn-valid 12–19 digit run
 * often enough for the card-data guard to trip on it.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import { newId } from '../ids/prefixed-id.js';
import { maskPans } from '../logging/pan-redactor.js';
import { chainKeysFor, type ChainKey } from './audit-chain-keys.js';
import {
  insertAuditEntry,
  writeAuditHead,
  type ActorType,
  type AuditOutcome,
  type AuditRow,
  type HeadRow,
} from './audit-store.js';

export type { ActorType, AuditOutcome } from './audit-store.js';

/** `prev_hash` of the first entry of the keyed chain. */
export const GENESIS = 'genesis';
/** `prev_hash` of the first entry of the plain SHA-256 chain written before the keyed chain. */
export const LEGACY_GENESIS_HASH = '0'.repeat(64);

const ENTRY_LABEL = 'loyalty-vault/audit-entry/v2';
const HEAD_LABEL = 'loyalty-vault/audit-head/v2';
const DETAILS_LABEL = 'loyalty-vault/audit-details/v1';

/**
 * The one card-data check of the audit trail (refusal at append, redaction at migration): true when
 * a value's JSON holds anything the card-data detector recognises. Switch the detector here.
 */
export function holdsCardData(value: unknown): boolean {
  const text = JSON.stringify(value);
  return maskPans(text) !== text;
}

/** `text` with everything the card-data detector recognises masked to its last four digits. */
export function maskCardData(text: string): string {
  return maskPans(text);
}

/** A JSON value with every string (and number) holding card data masked (refusals echo user input). */
export function maskCardDataDeep(value: unknown): unknown {
  if (typeof value === 'string') return maskCardData(value);
  if (typeof value === 'number') return holdsCardData(value) ? maskCardData(String(value)) : value;
  if (Array.isArray(value)) return value.map(maskCardDataDeep);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map(([k, v]) => [maskCardData(k), maskCardDataDeep(v)]),
    );
  }
  return value;
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

export function newDetailsSalt(): string {
  return randomBytes(32).toString('base64url');
}

export function detailsDigest(salt: string, details: unknown): string {
  return createHash('sha256')
    .update(JSON.stringify([DETAILS_LABEL, salt, canonicalJson(details)]))
    .digest('base64url');
}

/** What the entry MAC covers: every column but the details themselves (their digest instead). */
export interface ChainedFields {
  readonly seq: number;
  readonly id: string;
  readonly occurredAt: string;
  readonly actor: string;
  readonly actorType: ActorType;
  readonly action: string;
  readonly outcome: AuditOutcome;
  readonly origin: string;
  readonly resource: string;
  readonly detailsDigest: string;
  readonly prevHash: string;
  readonly keyVersion: number;
}

export function entryMac(key: ChainKey, f: ChainedFields): string {
  return key.mac(ENTRY_LABEL, [
    f.seq,
    f.id,
    f.occurredAt,
    f.actor,
    f.actorType,
    f.action,
    f.outcome,
    f.origin,
    f.resource,
    f.detailsDigest,
    f.prevHash,
    f.keyVersion,
  ]);
}

export function headMac(key: ChainKey, seq: number, hash: string): string {
  return key.mac(HEAD_LABEL, [seq, hash, key.version]);
}

/** The tombstone that replaces redacted details: which entry recorded the redaction. */
export interface Tombstone {
  readonly redacted: { readonly bySeq: number | null; readonly at: string; readonly reason: string };
}

export function isTombstone(details: unknown): details is Tombstone {
  if (details === null || typeof details !== 'object') return false;
  const r = (details as { redacted?: unknown }).redacted;
  return r !== null && typeof r === 'object' && Object.keys(details).length === 1;
}

export async function sealHead(trx: Knex.Transaction, key: ChainKey, seq: number, hash: string): Promise<void> {
  await writeAuditHead(trx, { seq, hash, keyVersion: key.version, mac: headMac(key, seq, hash) });
}

export async function headMacValid(db: Knex | Knex.Transaction, head: HeadRow): Promise<boolean> {
  if (head.mac === null || head.key_version === null) return false;
  const key = await chainKeysFor(db).key(db, head.key_version);
  return macEqual(headMac(key, head.seq, head.hash), head.mac);
}

/** Constant-time comparison of two base64url MACs. */
export function macEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The plain SHA-256 of the chain written before the keyed one (kept to check it once, at conversion). */
export function legacyHash(body: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson(body)).digest('hex');
}

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

export interface AuditEvent extends Required<AuditEventInput>, ChainedFields {
  /** The entry MAC (the chain link the next entry's `prevHash` names). */
  readonly hash: string;
  /** Null once the entry is redacted: without it the digest cannot be tested against guesses. */
  readonly detailsSalt: string | null;
}

/** The end of the chain as the writer holds it (under the head lock). */
export interface Tip {
  readonly seq: number;
  readonly hash: string;
}

/** Writes one keyed entry after `tip` (the caller holds the head lock and seals the head after). */
export async function writeEntry(
  trx: Knex.Transaction,
  key: ChainKey,
  tip: Tip,
  input: AuditEventInput,
  now: Date,
): Promise<AuditEvent> {
  const details = input.details ?? {};
  const salt = newDetailsSalt();
  const fields: ChainedFields = {
    seq: tip.seq + 1,
    id: newId('aud'),
    occurredAt: now.toISOString(),
    actor: input.actor,
    actorType: input.actorType,
    action: input.action,
    outcome: input.outcome,
    origin: input.origin,
    resource: input.resource,
    detailsDigest: detailsDigest(salt, details),
    prevHash: tip.hash,
    keyVersion: key.version,
  };
  const hash = entryMac(key, fields);
  await insertAuditEntry(trx, {
    seq: fields.seq,
    id: fields.id,
    occurred_at: now,
    actor: fields.actor,
    actor_type: fields.actorType,
    action: fields.action,
    outcome: fields.outcome,
    origin: fields.origin,
    resource: fields.resource,
    details: JSON.stringify(details),
    details_digest: fields.detailsDigest,
    details_salt: salt,
    key_version: key.version,
    prev_hash: fields.prevHash,
    hash,
  });
  return { ...fields, details, hash, detailsSalt: salt };
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
    detailsDigest: row.details_digest ?? '',
    detailsSalt: row.details_salt,
    keyVersion: row.key_version ?? 0,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}
