/** Helpers for the audit-trail tests: an empty trail on the test database, and n plain entries. */
import { GENESIS } from '../../src/audit/audit-chain.js';
import { appendAuditEvent } from '../../src/audit/audit-log.js';
import type { TestDatabase } from '../support/database.js';

export async function resetTrail(db: TestDatabase): Promise<void> {
  await db.knex('audit_events').delete();
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
