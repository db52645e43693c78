/** Helpers for the audit-trail tests: an empty trail on the test database, and n plain entries. */
import { chainKeysFor } from '../../src/audit/audit-chain-keys.js';
import { GENESIS, sealHead, writeEntry } from '../../src/audit/audit-chain.js';
import { lockAuditHead } from '../../src/audit/audit-store.js';
import { appendAuditEvent } from '../../src/audit/audit-log.js';
import type { TestDatabase } from '../support/database.js';

/**
 * A genuinely new trail: no entry, the head at genesis and no audit-chain key (a key left behind with
 * no entry is an emptied trail, which the next append records and verify reports). The next append
 * creates key v1 and records its creation as entry 1.
 */
export async function resetTrail(db: TestDatabase): Promise<void> {
  await db.knex('audit_events').delete();
  await db.knex('audit_chain_keys').delete();
  // The reference-digest key's creation is recorded in the trail (issue 16): a trail started afresh
  // has no key either, or reconciliation rightly reports a key no entry records.
  await db.knex('reference_digest_keys').delete();
  await db.knex('audit_chain_head').where({ id: 1 }).update({ seq: 0, hash: GENESIS, key_version: null, mac: null });
}

export async function appendN(db: TestDatabase, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await db.knex.transaction((trx) =>
      appendAuditEvent(trx, {
        actor: `custodian-${i}`,
        actorType: 'custodian',
        action: 'key.rotated',
        outcome: 'success',
        origin: 'cli:host-a',
        resource: `key:pan-encryption:v${i + 1}`,
        details: { rows: i * 10, nested: { b: 1, a: [1, 2] } },
      }),
    );
  }
}

/**
 * Appends an intact entry whose details hold a test PAN, as a detector that missed it would have let
 * through (the reason redaction exists): written with the chain primitives, under the active key.
 * Returns its seq.
 */
export async function appendMissedCardData(db: TestDatabase, action = 'card.detokenised'): Promise<number> {
  return db.knex.transaction(async (trx) => {
    // Written as a release before the database's card-data guard (migration 20261206000100) could:
    // the trigger would refuse it today, which is the point of the guard, not of this test.
    await trx.raw('set local session_replication_role = replica');
    const head = (await lockAuditHead(trx))!;
    const { key } = await chainKeysFor(trx).active(trx);
    const event = await writeEntry(
      trx,
      key,
      { seq: head.seq, hash: head.hash },
      {
        actor: 'test-operator',
        actorType: 'operator',
        action,
        outcome: 'success',
        origin: 'cli:host-a',
        resource: 'tok_missed',
        details: { reason: 'refund to 4111 1111 1111 1111' },
      },
      new Date(),
    );
    await sealHead(trx, key, event.seq, event.hash);
    return event.seq;
  });
}

/**
 * After {@link resetTrail} under existing keys: records each key version's creation again (now, its
 * row stamped to match), as a fresh database holds it, so that `keys audit verify` reconciles the key
 * states with the trail (src/keys/key-state-reconciliation.ts). Appended at the end of the trail.
 */
export async function recordKeyCreations(db: TestDatabase): Promise<void> {
  const keys = (await db.knex('data_keys').select('purpose', 'version', 'state')) as {
    purpose: string;
    version: number;
    state: string;
  }[];
  for (const k of keys) {
    await db.knex.transaction(async (trx) => {
      const entry = await appendAuditEvent(trx, {
        actor: 'system',
        actorType: 'system',
        action: 'key.created',
        outcome: 'success',
        origin: 'test',
        resource: `key:${k.purpose}:v${k.version}`,
        details: { state: k.state },
      });
      await trx('data_keys')
        .where({ purpose: k.purpose, version: k.version })
        .update({
          published_at: new Date(entry.occurredAt),
          activated_at: k.state === 'active' ? new Date(entry.occurredAt) : null,
        });
    });
  }
}
