import { expect } from 'chai';
import { appendAuditEvent, canonicalJson, GENESIS_HASH, verifyAuditChain } from '../../src/audit/audit-log.js';
import { migrateToLatest } from '../../src/db/migrations.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

describe('audit trail', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
    await migrateToLatest(db.knex);
  });
  after(async () => db.close());

  beforeEach(async () => {
    await db.knex('audit_events').delete();
    await db.knex('audit_chain_head').where({ id: 1 }).update({ seq: 0, hash: GENESIS_HASH });
  });

  async function append(n: number): Promise<void> {
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

  it('when entries are appended, then the chain verifies and links each entry to the previous one', async () => {
    await append(5);
    expect(await verifyAuditChain(db.knex)).to.deep.equal({ ok: true, checked: 5, headSeq: 5 });
    const rows = await db.knex('audit_events').orderBy('seq');
    expect(rows[0].prev_hash).to.equal(GENESIS_HASH);
    expect(rows[1].prev_hash).to.equal(rows[0].hash);
  });

  it('when the chain is verified in small batches, then the result is the same', async () => {
    await append(7);
    expect(await verifyAuditChain(db.knex, 2)).to.deep.equal({ ok: true, checked: 7, headSeq: 7 });
  });

  const tamperings: [string, (t: TestDatabase) => Promise<unknown>, number][] = [
    ['an entry is edited', (t) => t.knex('audit_events').where({ seq: 3 }).update({ outcome: 'failure' }), 3],
    [
      'details are edited',
      (t) =>
        t
          .knex('audit_events')
          .where({ seq: 2 })
          .update({ details: JSON.stringify({ rows: 0 }) }),
      2,
    ],
    ['an actor is rewritten', (t) => t.knex('audit_events').where({ seq: 4 }).update({ actor: 'someone-else' }), 4],
    ['an entry is deleted', (t) => t.knex('audit_events').where({ seq: 3 }).delete(), 3],
    ['the first entry is deleted', (t) => t.knex('audit_events').where({ seq: 1 }).delete(), 1],
    [
      'two entries are swapped',
      async (t) => {
        await t.knex('audit_events').where({ seq: 2 }).update({ seq: -2 });
        await t.knex('audit_events').where({ seq: 3 }).update({ seq: 2 });
        await t.knex('audit_events').where({ seq: -2 }).update({ seq: 3 });
      },
      2,
    ],
    ['the newest entry is deleted', (t) => t.knex('audit_events').where({ seq: 5 }).delete(), 5],
    [
      'an entry is edited and its own hash recomputed by hand',
      async (t) => {
        await t
          .knex('audit_events')
          .where({ seq: 3 })
          .update({ actor: 'forger', hash: 'f'.repeat(64) });
      },
      3,
    ],
  ];
  for (const [name, tamper, seq] of tamperings) {
    it(`when ${name}, then verification reports the first broken link at entry ${seq}`, async () => {
      await append(5);
      await tamper(db);
      const verdict = await verifyAuditChain(db.knex);
      expect(verdict.ok).to.equal(false);
      if (!verdict.ok) expect(verdict.brokenAtSeq).to.equal(seq);
    });
  }

  it('when details hold a PAN-like number, then the entry is refused and nothing is written', async () => {
    let failure: unknown;
    try {
      await db.knex.transaction((trx) =>
        appendAuditEvent(trx, {
          actor: 'a',
          actorType: 'client',
          action: 'card.detokenise',
          outcome: 'success',
          origin: 'o',
          resource: 'tok_x',
          details: { note: '4111 1111 1111 1111' },
        }),
      );
    } catch (error) {
      failure = error;
    }
    expect(String(failure)).to.contain('PAN-like');
    const [row] = await db.knex('audit_events').count<{ count: number }[]>('* as count');
    expect(row!.count).to.equal(0);
  });

  it('when many appends run concurrently, then the chain stays linear and verifies', async () => {
    await Promise.all(Array.from({ length: 20 }, () => append(1)));
    expect(await verifyAuditChain(db.knex)).to.deep.equal({ ok: true, checked: 20, headSeq: 20 });
  });

  it('canonical JSON sorts keys at every depth and omits undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: undefined } })).to.equal(
      '{"a":{"d":[3,{"y":2,"z":1}]},"b":1}',
    );
  });
});
