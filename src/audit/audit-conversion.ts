/**
 * The one-time conversion of the plain SHA-256 chain (written before the keyed chain) into the keyed
 * chain, run by the first audit append after migration 20261206000300, in that append's transaction.
 *
 * Why at the first append and not in the migration: the chain is keyed under the audit-chain key,
 * wrapped by the master key, and migrations run without keys (`npm run migrate`). The migration
 * only adds the columns, checks the plain chain while it still can, and redacts entries holding
 * card data (a salted digest keeps the commitment, the details go). The first process that appends
 * with a master key (the service at start, or any key CLI command) then, in one transaction under
 * the chain-head lock: creates audit-chain key v1, re-MACs every entry from the first, seals the
 * head, and records the conversion and every redaction the migration made as entries of their own.
 *
 * The conversion runs only in the transaction that creates the very first chain key, and only over
 * entries that have never been keyed and all predate the migration ({@link conversionRefusal}). A
 * database writer who rewrites a keyed chain as a plain one (edits, recomputed SHA-256 links, the
 * head's MAC cleared, the key demoted or deleted) gets no re-chaining, which would launder the
 * edits: the append records the invalid head instead and `audit verify` reports the unkeyed entries.
 * Every verification names the conversion entry and its date, so a reader sees where the plain chain
 * ended. See docs/key-management.md for what an insider who also forges the migration record can do.
 */
import type { Knex } from 'knex';
import type { ChainKey } from './audit-chain-keys.js';
import {
  detailsDigest,
  entryMac,
  GENESIS,
  isTombstone,
  LEGACY_GENESIS_HASH,
  legacyHash,
  newDetailsSalt,
  rowToEvent,
  writeEntry,
  type Tip,
} from './audit-chain.js';
import {
  anyKeyedEntry,
  auditEntriesAfter,
  firstChainKeyVersion,
  firstEntrySeqAfter,
  migrationTime,
  rechainEntry,
  replaceEntryDetails,
  type AuditRow,
  type HeadRow,
} from './audit-store.js';

const BATCH = 1000;

/** True when the head and entries look like a chain never keyed: the only state conversion accepts. */
export async function isUnconvertedLegacyChain(trx: Knex.Transaction, head: HeadRow): Promise<boolean> {
  if (head.mac !== null || head.key_version !== null || head.seq === 0) return false;
  return !(await anyKeyedEntry(trx));
}

/** The migration that introduced the keyed chain: no plain (unkeyed) entry can be younger than it. */
const KEYED_CHAIN_MIGRATION = '20261206000300_audit_keyed_chain';

/**
 * Why a chain that looks never keyed must not be converted, or undefined when it may be. Called
 * before the chain key is created. A plain chain found once an audit-chain key exists (active,
 * demoted or not), or holding an entry dated after the keyed chain's migration ran, was rewritten
 * by a database writer (entries edited, the MACs replaced by recomputed SHA-256 links): converting
 * it would key the rewrite. The append records `audit.chain-head-invalid` instead.
 */
export async function conversionRefusal(trx: Knex.Transaction): Promise<string | undefined> {
  const key = await firstChainKeyVersion(trx);
  if (key?.v !== null && key?.v !== undefined) {
    return `the plain chain was not converted: audit-chain key v${key.v} exists, so the trail was keyed before and has been rewritten`;
  }
  const migration = await migrationTime(trx, KEYED_CHAIN_MIGRATION);
  if (migration !== undefined) {
    const ranAt = new Date(migration.migration_time);
    const younger = await firstEntrySeqAfter(trx, ranAt);
    if (younger?.seq !== null && younger?.seq !== undefined) {
      return `the plain chain was not converted: entry ${younger.seq} is dated after the keyed chain was introduced (${ranAt.toISOString()}), so it was rewritten`;
    }
  }
  return undefined;
}

export async function convertLegacyChain(trx: Knex.Transaction, key: ChainKey, head: HeadRow, now: Date): Promise<Tip> {
  let tip: Tip = { seq: 0, hash: GENESIS };
  let legacyPrev = LEGACY_GENESIS_HASH;
  let legacyProblem: string | undefined;
  let entries = 0;
  const pendingRedactions: { seq: number; id: string; reason: string }[] = [];
  for (let after = 0; ;) {
    const rows = await auditEntriesAfter(trx, after, BATCH);
    for (const row of rows) {
      const event = rowToEvent(row);
      legacyProblem ??= legacyCheck(row, event, tip.seq + 1, legacyPrev);
      legacyPrev = row.hash;
      let salt = row.details_salt;
      let digest = row.details_digest;
      if (digest === null) {
        salt = newDetailsSalt();
        digest = detailsDigest(salt, event.details);
      }
      if (isTombstone(event.details) && event.details.redacted.bySeq === null) {
        pendingRedactions.push({ seq: row.seq, id: row.id, reason: event.details.redacted.reason });
      }
      const hash = entryMac(key, { ...event, detailsDigest: digest, prevHash: tip.hash, keyVersion: key.version });
      await rechainEntry(trx, row.seq, {
        details_salt: salt,
        details_digest: digest,
        key_version: key.version,
        prev_hash: tip.hash,
        hash,
      });
      tip = { seq: row.seq, hash };
      entries += 1;
    }
    if (rows.length < BATCH) break;
    after = tip.seq;
  }
  if (legacyProblem === undefined && (head.seq !== tip.seq || head.hash !== legacyPrev)) {
    legacyProblem = `the plain chain head (entry ${head.seq}) did not name the last entry (${tip.seq})`;
  }
  const verdict = [head.legacy_verdict, legacyProblem ?? 'intact at conversion'].filter((v) => v !== null).join('; ');
  const converted = await writeEntry(
    trx,
    key,
    tip,
    {
      actor: 'system',
      actorType: 'system',
      action: 'audit.chain-converted',
      outcome: legacyProblem === undefined && head.legacy_verdict === null ? 'success' : 'failure',
      origin: 'audit-conversion',
      resource: 'audit:chain',
      details: {
        entries,
        keyVersion: key.version,
        // base64url of the plain chain's last SHA-256: the value a pre-conversion export ends with.
        plainHeadSha256: Buffer.from(legacyPrev, 'hex').toString('base64url'),
        plainChain: verdict,
        redactedByMigration: pendingRedactions.length,
      },
    },
    now,
  );
  tip = converted;
  for (const pending of pendingRedactions) {
    const entry = await writeEntry(
      trx,
      key,
      tip,
      {
        actor: 'system',
        actorType: 'system',
        action: 'audit.entry-redacted',
        outcome: 'success',
        origin: 'migration:20261206000300',
        resource: `audit:${pending.seq}`,
        details: { seq: pending.seq, entryId: pending.id, reason: pending.reason },
      },
      now,
    );
    await replaceEntryDetails(
      trx,
      pending.seq,
      JSON.stringify({ redacted: { bySeq: entry.seq, at: now.toISOString(), reason: pending.reason } }),
    );
    tip = entry;
  }
  return tip;
}

/** The plain chain's own check, where the migration left the details intact. */
function legacyCheck(
  row: AuditRow,
  event: ReturnType<typeof rowToEvent>,
  expectedSeq: number,
  expectedPrev: string,
): string | undefined {
  if (row.seq !== expectedSeq) return `plain chain: entry ${expectedSeq} was missing`;
  if (row.prev_hash !== expectedPrev) return `plain chain: entry ${row.seq} did not link to its predecessor`;
  if (isTombstone(event.details)) return undefined;
  const body = {
    seq: event.seq,
    id: event.id,
    occurredAt: event.occurredAt,
    actor: event.actor,
    actorType: event.actorType,
    action: event.action,
    outcome: event.outcome,
    origin: event.origin,
    resource: event.resource,
    details: event.details,
    prevHash: row.prev_hash,
  };
  return legacyHash(body) === row.hash ? undefined : `plain chain: entry ${row.seq} did not match its hash`;
}
