/**
 * Verification of the keyed audit trail: walks every entry in order with the audit-chain key and
 * reports the first finding, in words an auditor can act on.
 *
 * Detected (see docs/key-management.md for the full list and what is not):
 * - an edited column of any entry (its MAC no longer matches; recomputing it needs the key);
 * - edited details (they no longer match their salted digest, which the MAC covers);
 * - a deleted, inserted or reordered entry (a gap in `seq`, or a broken link to the previous MAC);
 * - a deleted tail with the head re-pointed or reset (the head names another entry, or its MAC
 *   does not verify); an append that found such a head recorded `audit.chain-head-invalid`;
 * - details removed by hand (a tombstone with no `audit.entry-redacted` entry naming it).
 * - an emptied trail: every entry deleted and the head reset to genesis while an audit-chain key
 *   exists (a key's creation is always an entry, so every key must have its `audit.chain-key.created`
 *   entry), or a trail whose entry 1 is neither a key's creation nor the start of a converted plain
 *   chain (an append that found it emptied recorded `audit.chain-head-invalid` as entry 1).
 * Not detected without a checkpoint: the tail deleted and an older, genuinely sealed head row put
 * back; the whole trail deleted together with the chain keys (a genuinely new trail then starts). {@link verifyAgainstCheckpoint} in audit-checkpoint.ts closes that window up to the last
 * checkpoint kept outside the database.
 */
import type { Knex } from 'knex';
import { isAppError } from '../errors/app-error.js';
import { chainKeysFor, type ChainKey } from './audit-chain-keys.js';
import { detailsDigest, entryMac, GENESIS, headMacValid, isTombstone, macEqual, rowToEvent } from './audit-chain.js';
import { chainKeyVersions, entriesFrom, readAuditHead } from './audit-store.js';

export type ChainVerdict =
  | {
      readonly ok: true;
      readonly checked: number;
      readonly headSeq: number;
      readonly headHash: string;
      readonly redacted: number;
      /** The `audit.chain-converted` entry: entries before it were protected by a plain SHA-256 chain only. */
      readonly converted?: { readonly seq: number; readonly at: string; readonly entries: number };
    }
  | { readonly ok: false; readonly checked: number; readonly brokenAtSeq: number; readonly reason: string };

export interface VerifyOptions {
  /** A chain key version being created in the caller's transaction: its creation entry is not written yet. */
  readonly creating?: number;
}

/** The version an `audit.chain-key.created` entry records (its resource `audit-chain-key:vN`). */
const createdVersion = (resource: string): number | undefined => {
  const match = /^audit-chain-key:v(\d+)$/.exec(resource);
  return match === null ? undefined : Number(match[1]);
};

export async function verifyAuditChain(
  knex: Knex | Knex.Transaction,
  batchSize = 1000,
  options: VerifyOptions = {},
): Promise<ChainVerdict> {
  const keys = chainKeysFor(knex);
  let expectedPrev = GENESIS;
  let expectedSeq = 1;
  let checked = 0;
  let redacted = 0;
  /** Redaction entry seq → the entries whose tombstones name it (it must record each). */
  const redactions = new Map<number, number[]>();
  let headAnomaly: { seq: number; reason: string } | undefined;
  let converted: { seq: number; at: string; entries: number } | undefined;
  /** Entry 1, and whether the trail starts as only a genuine trail can (a key's creation, or a conversion). */
  let first: { action: string; reason: unknown } | undefined;
  let convertedFromStart = false;
  const created = new Set<number>();
  for (;;) {
    const rows = await entriesFrom(knex, expectedSeq, batchSize);
    for (const row of rows) {
      const event = rowToEvent(row);
      const fail = (reason: string) => broken(checked, event.seq, reason);
      if (event.seq !== expectedSeq) return broken(checked, expectedSeq, 'is missing (deleted)');
      if (row.key_version === null) {
        return fail('is not keyed: written outside the service, or the chain was never converted');
      }
      if (row.prev_hash !== expectedPrev) {
        return fail('does not link to the previous entry (an entry was deleted, inserted or rewritten before it)');
      }
      let key: ChainKey;
      try {
        key = await keys.key(knex, row.key_version);
      } catch (error) {
        return fail(`names audit-chain key v${row.key_version}: ${isAppError(error) ? error.detail : 'unavailable'}`);
      }
      if (row.details_salt === null) {
        if (!isTombstone(event.details) || !Number.isSafeInteger(event.details.redacted.bySeq)) {
          return fail('has no details salt and no redaction tombstone (details removed by hand)');
        }
        const bySeq = event.details.redacted.bySeq as number;
        if (bySeq <= event.seq) return fail('names a redaction entry that precedes it (redacted by hand)');
        // Two tombstones may name one redaction entry (one by hand): all are checked against it.
        redactions.set(bySeq, [...(redactions.get(bySeq) ?? []), event.seq]);
        redacted += 1;
      } else if (row.details_digest === null || detailsDigest(row.details_salt, event.details) !== row.details_digest) {
        return fail('has details that do not match their digest (edited)');
      }
      if (!macEqual(entryMac(key, event), row.hash)) {
        return fail('does not match its MAC (edited, or written without the audit-chain key)');
      }
      const targets = redactions.get(event.seq);
      if (targets !== undefined) {
        redactions.delete(event.seq);
        const wrong = targets.find((t) => event.action !== 'audit.entry-redacted' || event.details['seq'] !== t);
        if (wrong !== undefined) {
          return broken(
            checked,
            wrong,
            `is redacted, but entry ${event.seq} is not the redaction of it (redacted by hand)`,
          );
        }
      }
      if (event.action === 'audit.chain-head-invalid' && headAnomaly === undefined) {
        headAnomaly = {
          seq: event.seq,
          reason: typeof event.details['reason'] === 'string' ? event.details['reason'] : 'invalid head',
        };
      }
      if (event.action === 'audit.chain-converted' && converted === undefined) {
        const entries = event.details['entries'];
        converted = { seq: event.seq, at: event.occurredAt, entries: typeof entries === 'number' ? entries : 0 };
        // A migrated trail starts with the plain chain's entries, re-keyed, then the conversion entry.
        convertedFromStart = event.seq === converted.entries + 1;
      }
      if (event.action === 'audit.chain-key.created') {
        const version = createdVersion(event.resource);
        if (version !== undefined) created.add(version);
      }
      first ??= { action: event.action, reason: event.details['reason'] };
      expectedPrev = row.hash;
      expectedSeq += 1;
      checked += 1;
    }
    if (rows.length < batchSize) break;
  }
  for (const [target] of redactions.values()) {
    return broken(checked, target!, 'is redacted, but no redaction entry records it (redacted by hand)');
  }
  const head = await readAuditHead(knex);
  if (head === undefined) return broken(checked, checked + 1, 'the chain head row is missing');
  if (head.seq !== checked || head.hash !== expectedPrev) {
    return broken(
      checked,
      Math.min(head.seq, checked) + 1,
      `the chain head names entry ${head.seq}, the last entry is ${checked} (entries removed from the end, or the head re-pointed)`,
    );
  }
  if (checked > 0 && !(await headMacValid(knex, head).catch(() => false))) {
    return broken(checked, head.seq, 'the chain head seal does not verify (the head was rewritten without the key)');
  }
  const emptied = await emptiedTrail(knex, checked, first, convertedFromStart, created, options);
  if (emptied !== undefined) return broken(checked, 1, emptied);
  if (headAnomaly !== undefined) {
    return broken(
      checked,
      headAnomaly.seq,
      `was written by an append that found the chain head tampered with (${headAnomaly.reason}) and recorded it here`,
    );
  }
  return { ok: true, checked, headSeq: head.seq, headHash: head.hash, redacted, ...(converted && { converted }) };
}

/**
 * Whether the trail was emptied, or its beginning replaced: every audit-chain key's creation is an
 * entry written with the key (in the same transaction), so a key without one means entries were
 * deleted; and a genuine trail's entry 1 is a key's creation, or the first re-keyed entry of a
 * converted plain chain (the conversion entry then follows them, naming how many).
 */
async function emptiedTrail(
  knex: Knex | Knex.Transaction,
  checked: number,
  first: { action: string; reason: unknown } | undefined,
  convertedFromStart: boolean,
  created: ReadonlySet<number>,
  options: VerifyOptions,
): Promise<string | undefined> {
  const versions = (await chainKeyVersions(knex)).filter((v) => v !== options.creating);
  if (checked === 0) {
    return versions.length === 0
      ? undefined
      : `the trail is empty while audit-chain key ${versions.map((v) => `v${v}`).join(', ')} exists: the trail was emptied (every entry deleted, the head reset to genesis)`;
  }
  if (first !== undefined && first.action !== 'audit.chain-key.created' && !convertedFromStart) {
    const found = typeof first.reason === 'string' ? `: ${first.reason}` : '';
    return `is ${first.action}, where a trail starts with its audit-chain key's creation or a converted plain chain: the trail was emptied or its beginning replaced${found}`;
  }
  const missing = versions.filter((v) => !created.has(v));
  if (missing.length > 0) {
    return `the trail holds no creation entry for audit-chain key ${missing.map((v) => `v${v}`).join(', ')}: entries were deleted (the trail was emptied and restarted)`;
  }
  return undefined;
}

function broken(checked: number, seq: number, reason: string): ChainVerdict {
  return {
    ok: false,
    checked,
    brokenAtSeq: seq,
    reason: reason.startsWith('the ') ? reason : `entry ${seq} ${reason}`,
  };
}
