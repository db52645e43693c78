import { expect } from 'chai';
import { canonicalJson, LEGACY_GENESIS_HASH, legacyHash } from '../../src/audit/audit-chain.js';
import { verifyAuditChain } from '../../src/audit/audit-log.js';
import { migrateToLatest, migrationConfig } from '../../src/db/migrations.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { keysFixture } from '../keys/keys-context.js';

const MIGRATION = '20261206000300_audit_keyed_chain';

/** An entry as the release before the keyed chain wrote it: plain SHA-256 over its canonical form. */
async function appendPlain(
  db: TestDatabase,
  seq: number,
  prev: string,
  fields: { action: string; details: Record<string, unknown> },
): Promise<string> {
  const body = {
    seq,
    id: `aud_plain${String(seq).padStart(20, 'a')}`,
    occurredAt: new Date(Date.UTC(2026, 10, seq)).toISOString(),
    actor: 'client-1',
    actorType: 'client',
    action: fields.action,
    outcome: 'success',
    origin: 'req:1',
    resource: `tok_${seq}`,
    details: fields.details,
    prevHash: prev,
  };
  const hash = legacyHash(body);
  // The release before had no database card-data guard (20261206000100, applied before this
  // migration): its entries are written as it wrote them, past today's trigger.
  await db.knex.transaction(async (trx) => {
    await trx.raw('set local session_replication_role = replica');
    await trx('audit_events').insert({
      seq,
      id: body.id,
      occurred_at: new Date(body.occurredAt),
      actor: body.actor,
      actor_type: body.actorType,
      action: body.action,
      outcome: body.outcome,
      origin: body.origin,
      resource: body.resource,
      details: JSON.stringify(body.details),
      prev_hash: prev,
      hash,
    });
  });
  await db.knex('audit_chain_head').where({ id: 1 }).update({ seq, hash });
  return hash;
}

/** The plain chain's own check, as the release before verified it. */
async function plainChainVerifies(db: TestDatabase): Promise<boolean> {
  let prev = LEGACY_GENESIS_HASH;
  const rows = await db.knex('audit_events').orderBy('seq');
  for (const row of rows) {
    const { hash, prev_hash: prevHash, occurred_at: at, actor_type: actorType, ...rest } = row;
    const body = {
      seq: rest.seq,
      id: rest.id,
      occurredAt: at.toISOString(),
      actor: rest.actor,
      actorType,
      action: rest.action,
      outcome: rest.outcome,
      origin: rest.origin,
      resource: rest.resource,
      details: rest.details,
      prevHash,
    };
    if (prevHash !== prev || legacyHash(body) !== hash) return false;
    prev = hash;
  }
  const head = await db.knex('audit_chain_head').first();
  return head.seq === rows.length && head.hash === prev;
}

describe(`migration ${MIGRATION}`, function () {
  this.timeout(120_000);
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
  });
  after(() => db.close());

  it('when applied over a plain chain with a PAN in a detokenise reason, then the PAN is gone at once, the first keyed start re-chains and records it, verify passes; rolled back, the plain chain verifies again without the PAN', async () => {
    await migrateToLatest(db.knex);
    await db.knex.migrate.down({ ...migrationConfig(), name: MIGRATION });
    expect(await db.knex.schema.hasColumn('audit_events', 'details_digest')).to.equal(false);

    let prev = LEGACY_GENESIS_HASH;
    prev = await appendPlain(db, 1, prev, { action: 'card.tokenised', details: { brand: 'visa' } });
    prev = await appendPlain(db, 2, prev, {
      action: 'card.detokenise',
      details: { reason: 'refund to card 4111 1111 1111 1111 per ticket', keyVersion: 1 },
    });
    prev = await appendPlain(db, 3, prev, {
      action: 'card.detokenise',
      details: { reason: 'chargeback 5555-5555-5555-4444' },
    });
    await appendPlain(db, 4, prev, { action: 'shopper.merged', details: { into: 'shp_x' } });
    expect(await plainChainVerifies(db)).to.equal(true);

    await db.knex.migrate.up({ ...migrationConfig(), name: MIGRATION });
    const afterMigration = JSON.stringify(await db.knex('audit_events'));
    for (const digits of ['4111111111111111', '4111 1111 1111 1111', '5555-5555-5555-4444', '5555555555554444'])
      expect(afterMigration).to.not.contain(digits);
    const redacted = await db.knex('audit_events').whereIn('seq', [2, 3]).orderBy('seq');
    for (const row of redacted) {
      expect(row.details_salt).to.equal(null);
      expect(row.details_digest).to.match(/^[\w-]{43}$/);
      expect(row.details.redacted).to.include({ bySeq: null, reason: 'card data found by migration 20261206000300' });
    }
    expect((await db.knex('audit_chain_head').first()).legacy_verdict).to.equal(null);

    // The first start with a master key: the key ring's first append converts the chain.
    const fx = await keysFixture(db);
    const verdict = await verifyAuditChain(db.knex);
    expect(verdict).to.deep.include({ ok: true, redacted: 2 });
    const actions = (await db.knex('audit_events').where('seq', '>', 4).orderBy('seq')).map((r) => [
      r.action,
      r.action === 'audit.entry-redacted' ? r.details.seq : r.details.entries,
    ]);
    expect(actions.slice(0, 4)).to.deep.equal([
      ['audit.chain-converted', 4],
      ['audit.entry-redacted', 2],
      ['audit.entry-redacted', 3],
      ['audit.chain-key.created', undefined],
    ]);
    const converted = await db.knex('audit_events').where({ action: 'audit.chain-converted' }).first();
    expect(converted.outcome).to.equal('success');
    expect(converted.details.plainChain).to.equal('intact at conversion');
    const said = await fx.run('audit', 'verify');
    expect(said.code, said.stdout).to.equal(0);
    expect(said.stdout).to.contain(
      `converted from the plain chain at entry 5 on ${new Date(converted.occurred_at).toISOString()}: entries 1..4`,
    );
    const tombstone = (await db.knex('audit_events').where({ seq: 2 }).first()).details;
    expect(tombstone.redacted.bySeq).to.equal(6);
    expect((await fx.run('audit', 'verify')).code).to.equal(0);
    const everything = JSON.stringify(await db.knex('audit_events'));
    expect(everything.replace(/\D/g, ' ')).to.not.match(/4111111111111111|5555555555554444/);

    await db.knex.migrate.down({ ...migrationConfig(), name: MIGRATION });
    expect(await db.knex.schema.hasTable('audit_chain_keys')).to.equal(false);
    expect(await plainChainVerifies(db)).to.equal(true);
    expect(JSON.stringify(await db.knex('audit_events'))).to.not.contain('4111 1111');
    expect(canonicalJson((await db.knex('audit_events').where({ seq: 1 }).first()).details)).to.equal(
      '{"brand":"visa"}',
    );
    await migrateToLatest(db.knex);
  });

  it('when the plain chain was already broken before the migration, then the conversion records that finding in the chain', async () => {
    const other = await createTestDatabase();
    try {
      await migrateToLatest(other.knex);
      await other.knex.migrate.down({ ...migrationConfig(), name: MIGRATION });
      let prev = LEGACY_GENESIS_HASH;
      prev = await appendPlain(other, 1, prev, { action: 'a', details: {} });
      await appendPlain(other, 2, prev, { action: 'b', details: {} });
      await other.knex('audit_events').where({ seq: 1 }).update({ actor: 'rewritten' });
      await other.knex.migrate.up({ ...migrationConfig(), name: MIGRATION });
      await keysFixture(other);
      const converted = await other.knex('audit_events').where({ action: 'audit.chain-converted' }).first();
      expect(converted.outcome).to.equal('failure');
      expect(converted.details.plainChain).to.contain('plain chain: entry 1 did not match its hash');
    } finally {
      await other.close();
    }
  });

  it('when rolled back and applied again over a database whose keys already exist, then the first keys audit command converts the chain and it verifies', async () => {
    const other = await createTestDatabase();
    try {
      await migrateToLatest(other.knex);
      const first = await keysFixture(other);
      await other.knex.migrate.down({ ...migrationConfig(), name: MIGRATION });
      expect(await plainChainVerifies(other)).to.equal(true);
      await other.knex.migrate.up({ ...migrationConfig(), name: MIGRATION });
      // A start with the same master key: the keys exist, nothing is appended, the chain is still plain.
      const fx = await keysFixture(other, { masterKeyBase64: first.masterKeyBase64 });
      expect((await other.knex('audit_chain_head').first()).key_version).to.equal(null);
      const res = await fx.run('audit', 'verify');
      expect(res.code, res.stdout).to.equal(0);
      expect(await other.knex('audit_events').where({ action: 'audit.chain-converted' })).to.have.length(1);
      expect((await verifyAuditChain(other.knex)).ok).to.equal(true);
    } finally {
      await other.close();
    }
  });
});
