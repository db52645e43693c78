/**
 * The append-only audit trail (PCI DSS 10.2, 10.3), chained under a key an insider does not hold.
 *
 * Each entry carries the HMAC-SHA256 (audit-chain key, src/audit/audit-chain-keys.ts) of its columns,
 * a salted digest of its details and the previous entry's MAC; the head row names the last entry and
 * is MAC'd the same way (src/audit/audit-chain.ts). Editing, deleting or reordering entries, or
 * re-pointing the head, cannot be made to verify without the key. Appends lock the single head row,
 * which keeps the chain linear across any number of service instances; an entry is written in the
 * same transaction as the action it records, so there is never an action without its entry.
 *
 * `appendAuditEvent(trx, input)` finds the key through the transaction's database handle (registered
 * by the handle's KeyRing). Before it extends the chain it checks the head's MAC: a head that does
 * not verify (re-pointed, reset, replaced) is not silently sealed over; an `audit.chain-head-invalid`
 * entry recording what was found goes first, and every later verification reports it.
 *
 * Entries never contain a PAN: card data in actor, action, origin and resource (and in a refusal's
 * details, which echo what was typed) is masked to its last four; other details holding card data
 * are refused (a programming error). An entry whose details must go anyway is redacted ({@link redactAuditEntry}): the details
 * are replaced by a tombstone, the digest stays, and the redaction is an entry of its own.
 */
import type { Knex } from 'knex';
import { AppError, isAppError } from '../errors/app-error.js';
import { chainKeysFor, type ChainKey } from './audit-chain-keys.js';
import {
  detailsDigest,
  entryMac,
  GENESIS,
  headMacValid,
  holdsCardData,
  isTombstone,
  macEqual,
  maskCardData,
  maskCardDataDeep,
  rowToEvent,
  sealHead,
  writeEntry,
  type AuditEvent,
  type AuditEventInput,
  type Tip,
} from './audit-chain.js';
import {
  findEntry,
  headKeyVersion,
  lastEntrySeq,
  lockEntry,
  lockAuditHead,
  successfulEntriesOn,
  tombstoneEntry,
  type AuditRow,
  type HeadRow,
} from './audit-store.js';
import { conversionRefusal, convertLegacyChain, isUnconvertedLegacyChain } from './audit-conversion.js';
import { verifyAuditChain } from './audit-verify.js';

export {
  canonicalJson,
  GENESIS,
  rowToEvent,
  type ActorType,
  type AuditEvent,
  type AuditEventInput,
  type AuditOutcome,
} from './audit-chain.js';
export { verifyAuditChain, type ChainVerdict } from './audit-verify.js';

/**
 * Actions that are the evidence of the trail's own maintenance and of dual control: never redactable,
 * even if card data were found in them (a redaction there would erase who approved or refused what).
 */
const PROTECTED_ACTIONS = new Set([
  'audit.entry-redacted',
  'audit.chain-converted',
  'audit.chain-head-invalid',
  'audit.chain-key.created',
  'reference-key.created',
  'reference-key.recorded',
  'audit.verified',
  'audit.checkpointed',
  'audit.exported',
]);
const PROTECTED_PREFIXES = ['key.custodian.', 'key.request.', 'mtls.revocation', 'mtls.certificate.revoked'];

function protectedAction(action: string): boolean {
  return PROTECTED_ACTIONS.has(action) || PROTECTED_PREFIXES.some((p) => action.startsWith(p));
}

export async function appendAuditEvent(
  trx: Knex.Transaction,
  input: AuditEventInput,
  now = new Date(),
): Promise<AuditEvent> {
  const safe = cardDataMasked(input);
  const { key, tip } = await openChain(trx, now);
  const event = await writeEntry(trx, key, tip, safe, now);
  await sealHead(trx, key, event.seq, event.hash);
  return event;
}

/**
 * The entry as it may be written. The columns the MAC covers (actor, origin, resource, action) can
 * never be redacted, so card data in them (a PAN typed where a request id belongs, echoed into a
 * resource) is masked to its last four, never refused: the entry still records what happened.
 * Details written by the code itself (outcome success or failure) holding card data are a bug and
 * refused; a refusal's details (outcome denied) echo what was typed, so they are masked instead and
 * the refusal is still recorded.
 */
function cardDataMasked(input: AuditEventInput): AuditEventInput {
  const details = input.details ?? {};
  if (holdsCardData(details) && input.outcome !== 'denied') {
    throw new Error('refusing to write a PAN-like value into the audit trail');
  }
  return {
    ...input,
    actor: maskCardData(input.actor),
    action: maskCardData(input.action),
    origin: maskCardData(input.origin),
    resource: maskCardData(input.resource),
    details: maskCardDataDeep(details) as Record<string, unknown>,
  };
}

/**
 * A head reset to an empty chain (seq 0, no MAC) over existing entries: extending it would collide
 * with entry 1, so it is a finding, recorded after the last entry and linked to it.
 */
async function resetOverEntries(
  trx: Knex.Transaction,
  head: HeadRow,
): Promise<{ problem: string; tip: Tip } | undefined> {
  if (head.seq !== 0 || head.mac !== null || head.key_version !== null) return undefined;
  const entries = Number((await lastEntrySeq(trx)).seq ?? 0);
  if (entries === 0) return undefined;
  const last = await findEntry(trx, entries);
  return {
    problem: `the head was reset to an empty chain over ${entries} entries`,
    tip: { seq: entries, hash: last?.hash ?? head.hash },
  };
}

/**
 * Locks the head and returns the key and the end of the chain to extend. Creates the chain key on
 * first use, converts a never-keyed chain in the same transaction, and records an invalid head.
 */
async function openChain(trx: Knex.Transaction, now: Date): Promise<{ key: ChainKey; tip: Tip; wrote: boolean }> {
  const head = await lockAuditHead(trx);
  if (head === undefined) {
    throw new AppError('AUDIT_CHAIN_BROKEN', { detail: 'the audit chain head row is missing' });
  }
  // Decided before a key exists: a plain chain is converted only when no key was ever created.
  const legacy = await isUnconvertedLegacyChain(trx, head);
  const refusal = legacy ? await conversionRefusal(trx) : undefined;
  const { key, created, kekId, previousVersion } = await chainKeysFor(trx).active(trx);
  const reset = await resetOverEntries(trx, head);
  const fresh = head.seq === 0 && head.mac === null && head.key_version === null && reset === undefined;
  let tip: Tip = fresh ? { seq: 0, hash: GENESIS } : (reset?.tip ?? { seq: head.seq, hash: head.hash });
  let problem: string | undefined = reset?.problem;
  // An empty trail is new only when its first chain key is being created in this transaction: a key's
  // creation is always an entry, so a key that existed before with no entry left means the trail was
  // emptied (entries deleted, head reset to genesis). Recorded as entry 1, and the trail goes on.
  const existingKey = created ? previousVersion : key.version;
  if (reset !== undefined) {
    // recorded below, after the last entry
  } else if (fresh && existingKey !== null) {
    problem = `the trail was emptied (no entry, the head reset to genesis) while audit-chain key v${existingKey} exists`;
  } else if (legacy && refusal === undefined && created && previousVersion === null) {
    tip = await convertLegacyChain(trx, key, head, now);
  } else if (refusal !== undefined) {
    problem = refusal;
  } else if (!fresh && !(await headMacValid(trx, head).catch(() => false))) {
    problem = head.mac === null ? 'the head is not sealed' : 'the head seal does not verify';
  } else if (created && previousVersion !== null) {
    // The active key was demoted or removed: the next version extends the keyed chain, which must
    // verify first (under the older versions), or the new key would seal over an edit.
    const verdict = await verifyAuditChain(trx, undefined, { creating: key.version });
    if (!verdict.ok) problem = `the active audit-chain key was gone and the chain does not verify: ${verdict.reason}`;
  }
  if (problem !== undefined) {
    const last = await lastEntrySeq(trx);
    tip = await writeEntry(
      trx,
      key,
      fresh ? tip : { seq: Math.max(head.seq, last.seq ?? 0), hash: reset?.tip.hash ?? head.hash },
      {
        actor: 'system',
        actorType: 'system',
        action: 'audit.chain-head-invalid',
        outcome: 'failure',
        origin: 'audit-append',
        resource: 'audit:chain',
        details: { headSeq: head.seq, lastEntrySeq: last.seq, reason: problem },
      },
      now,
    );
  }
  if (created) {
    tip = await writeEntry(
      trx,
      key,
      tip,
      {
        actor: 'system',
        actorType: 'system',
        action: 'audit.chain-key.created',
        outcome: 'success',
        origin: 'audit-append',
        resource: `audit-chain-key:v${key.version}`,
        details: { algorithm: 'HMAC-SHA256', strengthBits: 256, kekId },
      },
      now,
    );
  }
  return { key, tip, wrote: tip.seq !== head.seq || tip.hash !== head.hash };
}

/**
 * At service or CLI start (and before `keys audit` commands): creates the chain key on a database
 * that has none, converts a never-keyed chain, and records a head found invalid, sealing what it
 * wrote. Idempotent: on a sound chain it only checks the head.
 */
export async function ensureAuditChain(knex: Knex, now = new Date()): Promise<void> {
  await knex.transaction(async (trx) => {
    const { key, tip, wrote } = await openChain(trx, now);
    if (wrote) await sealHead(trx, key, tip.seq, tip.hash);
  });
}

/**
 * Runs a write in a transaction of its own. When it is refused (an AppError), the refusal is recorded
 * (outcome `denied`, with the code and reason) in another transaction, since the write's own rolled
 * back, and the error is thrown on. The evidence of a refused key operation survives the refusal.
 */
/** Errors whose refusal is already in the trail (auditedWrite): a command's catch-all skips them. */
const auditedRefusals = new WeakSet<object>();

/** True when this error's refusal was written to the audit trail already (by {@link auditedWrite}). */
export const refusalAudited = (error: unknown): boolean =>
  typeof error === 'object' && error !== null && auditedRefusals.has(error);

/** Records that this error's refusal is in the trail (written by other means than auditedWrite). */
export function markRefusalAudited(error: unknown): void {
  if (typeof error === 'object' && error !== null) auditedRefusals.add(error);
}

export async function auditedWrite<T>(
  knex: Knex,
  who: Pick<AuditEventInput, 'actor' | 'actorType' | 'origin'>,
  what: { readonly action: string; readonly resource: string },
  write: (trx: Knex.Transaction) => Promise<T>,
  /** The refusal's time, read in the transaction that records it (the database's clock, or a service's). */
  now: (trx: Knex.Transaction) => Date | Promise<Date>,
): Promise<T> {
  try {
    return await knex.transaction(write);
  } catch (error) {
    if (isAppError(error)) {
      const details = { code: error.code, reason: error.detail ?? error.title, ...error.extensions };
      await knex.transaction(async (trx) =>
        appendAuditEvent(trx, { ...who, ...what, outcome: 'denied', details }, await now(trx)),
      );
      markRefusalAudited(error);
    }
    throw error;
  }
}

/** {@link ensureAuditChain} only when the chain has never been keyed (the key CLI's `audit` commands). */
export async function convertAuditChainIfNeeded(knex: Knex): Promise<void> {
  const head = await headKeyVersion(knex);
  if (head !== undefined && head.key_version === null) await ensureAuditChain(knex);
}

export interface Redaction {
  readonly seq: number;
  /** Why (recorded in the redaction entry and the tombstone): checked for card data like any detail. */
  readonly reason: string;
}

/**
 * Redacts one entry's details (PCI DSS 3.3 / 3.4: card data that should never have been written),
 * and only that: refused (AUDIT_REDACTION_INVALID) unless the card-data detector finds card data in
 * the stored details, and for entries of the trail itself and of dual control whatever they hold.
 * In one transaction, checks the entry is intact (a redaction must not launder an edit), appends
 * an `audit.entry-redacted` entry (who, why, which entry), replaces the details with a tombstone
 * naming that entry, and discards the salt. The chain still verifies: it commits to the digest.
 * A refusal is audited like every key-management refusal.
 */
export function redactAuditEntry(
  knex: Knex,
  redaction: Redaction,
  who: Pick<AuditEventInput, 'actor' | 'actorType' | 'origin'>,
  now: () => Date = () => new Date(),
): Promise<AuditEvent> {
  return auditedWrite(
    knex,
    who,
    { action: 'audit.entry-redacted', resource: `audit:${redaction.seq}` },
    async (trx) => {
      const reason = redaction.reason.trim();
      if (reason.length < 3 || reason.length > 500 || holdsCardData(reason)) {
        throw new AppError('AUDIT_REDACTION_INVALID', {
          detail: 'a reason of 3 to 500 characters without card data is required',
        });
      }
      const { key, tip } = await openChain(trx, now());
      const row = await lockEntry(trx, redaction.seq);
      if (row === undefined) throw new AppError('AUDIT_REDACTION_INVALID', { detail: `no entry ${redaction.seq}` });
      const target = rowToEvent(row);
      if (protectedAction(target.action)) {
        throw new AppError('AUDIT_REDACTION_INVALID', { detail: `entry ${redaction.seq} records the trail itself` });
      }
      if (isTombstone(target.details) || row.details_salt === null) {
        throw new AppError('AUDIT_REDACTION_INVALID', { detail: `entry ${redaction.seq} is already redacted` });
      }
      // Redaction exists to remove card data that got in (a detector that missed it when written). Any
      // other entry is evidence one operator must not be able to erase: refused.
      if (!holdsCardData(target.details)) {
        throw new AppError('AUDIT_REDACTION_INVALID', {
          detail: `entry ${redaction.seq} holds no card data: only card data is redacted, the rest is evidence`,
        });
      }
      if (!(await entryIntact(trx, row))) {
        throw new AppError('AUDIT_CHAIN_BROKEN', {
          detail: `entry ${redaction.seq} does not verify: redacting it would hide the change`,
        });
      }
      const at = now();
      const entry = await writeEntry(
        trx,
        key,
        tip,
        {
          ...who,
          action: 'audit.entry-redacted',
          outcome: 'success',
          resource: `audit:${redaction.seq}`,
          details: { seq: redaction.seq, entryId: target.id, reason },
        },
        at,
      );
      await sealHead(trx, key, entry.seq, entry.hash);
      await tombstoneEntry(
        trx,
        redaction.seq,
        JSON.stringify({ redacted: { bySeq: entry.seq, at: at.toISOString(), reason } }),
      );
      return entry;
    },
    now,
  );
}

/**
 * True when entry `seq` exists and its details and MAC verify (one entry, not the chain): for a
 * capability that must trust what one entry says before acting on it (e.g. that a request ran).
 * Whether entries were deleted around it is `verifyAuditChain`'s question.
 */
export async function auditEntryIntact(db: Knex | Knex.Transaction, seq: number): Promise<boolean> {
  const row = await findEntry(db, seq);
  return row !== undefined && (await entryIntact(db, row));
}

async function entryIntact(trx: Knex | Knex.Transaction, row: AuditRow): Promise<boolean> {
  const event = rowToEvent(row);
  if (row.key_version === null || row.details_salt === null || row.details_digest === null) return false;
  if (detailsDigest(row.details_salt, event.details) !== row.details_digest) return false;
  const key = await chainKeysFor(trx).key(trx, row.key_version);
  return macEqual(entryMac(key, event), row.hash);
}

/**
 * The successful entries of `action` on `resource` whose details and MAC verify, in order: what a
 * capability may trust (an entry inserted or edited without the audit-chain key is left out).
 */
export async function intactEntriesOn(
  db: Knex | Knex.Transaction,
  action: string,
  resource: string,
): Promise<AuditEvent[]> {
  const intact: AuditEvent[] = [];
  for (const row of await successfulEntriesOn(db, action, resource)) {
    if (await entryIntact(db, row)) intact.push(rowToEvent(row));
  }
  return intact;
}
