import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { GENESIS } from '../../src/audit/audit-chain.js';
import { appendAuditEvent, canonicalJson, ensureAuditChain, verifyAuditChain } from '../../src/audit/audit-log.js';
import { migrateToLatest } from '../../src/db/migrations.js';
import { KeyRing } from '../../src/keys/key-ring.js';
import { LocalMasterKey, MasterKeySet } from '../../src/keys/master-key-source.js';
import { keysFixture } from '../keys/keys-context.js';
import { chainKeyAad } from '../../src/audit/audit-chain-keys.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { appendN, resetTrail } from './trail-support.js';

describe('keyed audit trail', () => {
  let db: TestDatabase;
  const kekBase64 = randomBytes(32).toString('base64');
  const kek = new LocalMasterKey(Buffer.from(kekBase64, 'base64'), 'test');
  before(async () => {
    db = await createTestDatabase({ migrated: true });
    new KeyRing(db.knex, kek, 50);
  });
  after(async () => db.close());
  beforeEach(() => resetTrail(db));

  it('when the first entry is appended on a database, then the audit-chain key is created, wrapped, and its creation is in the chain', async () => {
    await db.knex('audit_chain_keys').delete();
    await appendN(db, 1);
    const keys = await db.knex('audit_chain_keys');
    expect(keys.map((k) => [k.version, k.state])).to.deep.equal([[1, 'active']]);
    expect(keys[0].wrapped_key).to.have.length(1 + 12 + 16 + 32);
    const rows = await db.knex('audit_events').orderBy('seq');
    expect(rows.map((r) => r.action)).to.deep.equal(['audit.chain-key.created', 'key.rotated']);
    expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
  });

  it('when entries are appended, then each carries a MAC (not a plain hash), a salted digest of its details, and the head is sealed', async () => {
    await appendN(db, 5);
    const verdict = await verifyAuditChain(db.knex);
    expect(verdict).to.deep.include({ ok: true, checked: 6, headSeq: 6, redacted: 0 });
    const rows = await db.knex('audit_events').orderBy('seq');
    expect(rows[0].prev_hash).to.equal(GENESIS);
    expect(rows[1].prev_hash).to.equal(rows[0].hash);
    for (const row of rows) {
      expect(row.key_version).to.equal(1);
      expect(row.hash).to.match(/^[\w-]{43}$/);
      expect(row.details_salt).to.match(/^[\w-]{43}$/);
      expect(row.details_digest).to.match(/^[\w-]{43}$/);
    }
    const salts = new Set(rows.map((r) => r.details_salt));
    expect(salts.size).to.equal(6);
    const head = await db.knex('audit_chain_head').first();
    expect(head).to.deep.include({ seq: 6, hash: rows[5].hash, key_version: 1 });
    expect(head.mac).to.match(/^[\w-]{43}$/);
  });

  it('when the chain is verified in small batches, then the result is the same', async () => {
    await appendN(db, 7);
    expect(await verifyAuditChain(db.knex, 2)).to.deep.include({ ok: true, checked: 8, headSeq: 8 });
  });

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
    await Promise.all(Array.from({ length: 20 }, () => appendN(db, 1)));
    expect(await verifyAuditChain(db.knex)).to.deep.include({ ok: true, checked: 21, headSeq: 21 });
  });

  it('when ensureAuditChain runs on a sound chain, then it writes nothing', async () => {
    await appendN(db, 3);
    await ensureAuditChain(db.knex);
    expect(await verifyAuditChain(db.knex)).to.deep.include({ ok: true, checked: 4 });
  });

  it('when two databases in one process have different master keys, then each trail is keyed by its own and a handle with no key ring is refused', async () => {
    const other = await createTestDatabase();
    try {
      await migrateToLatest(other.knex);
      const unregistered = await other.knex
        .transaction((trx) =>
          appendAuditEvent(trx, {
            actor: 'a',
            actorType: 'system',
            action: 'x',
            outcome: 'success',
            origin: 'o',
            resource: 'r',
          }),
        )
        .then(
          () => 'written',
          (error: { code?: string }) => error.code,
        );
      expect(unregistered).to.equal('AUDIT_CHAIN_KEY_UNAVAILABLE');
      new KeyRing(other.knex, new LocalMasterKey(randomBytes(32), 'other'), 50);
      await appendN(other, 2);
      await appendN(db, 2);
      expect(await verifyAuditChain(other.knex)).to.deep.include({ ok: true });
      expect(await verifyAuditChain(db.knex)).to.deep.include({ ok: true });
      // The same rows under the other database's key do not verify: the MACs are keyed.
      const mine = await db.knex('audit_events').orderBy('seq');
      await other.knex('audit_events').delete();
      await other.knex('audit_events').insert(mine);
      const head = await db.knex('audit_chain_head').first();
      await other.knex('audit_chain_head').update(head);
      const verdict = await verifyAuditChain(other.knex);
      expect(verdict.ok).to.equal(false);
    } finally {
      await other.close();
    }
  });

  it('when the master key is rotated, then the audit-chain key is rewrapped by the new one with the data keys, and the chain still verifies', async () => {
    await keysFixture(db, { masterKeyBase64: kekBase64 });
    await appendN(db, 2);
    const newKek = new LocalMasterKey(randomBytes(32), 'new');
    const during = await keysFixture(db, { source: new MasterKeySet(newKek, [kek]), policy: { singleOperator: true } });
    const res = await during.run('rotate', '--purpose', 'master', '--apply');
    expect(res.code, res.stderr).to.equal(0);
    const [chainKey] = await db.knex('audit_chain_keys');
    expect(chainKey.kek_id).to.equal(newKek.keyId);
    expect(await newKek.unwrap(chainKey.wrapped_key, chainKeyAad(1))).to.have.length(32);
    // (LocalMasterKey.unwrap throws synchronously on a wrong key.)
    const oldOpens = await (async () => kek.unwrap(chainKey.wrapped_key, chainKeyAad(1)))().then(
      () => true,
      () => false,
    );
    expect(oldOpens).to.equal(false);
    const rotated = await db.knex('audit_events').where({ action: 'master-key.rotated' }).first();
    expect(rotated.details.auditChainKeys).to.deep.equal([1]);
    expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
  });

  it('canonical JSON sorts keys at every depth and omits undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: undefined } })).to.equal(
      '{"a":{"d":[3,{"y":2,"z":1}]},"b":1}',
    );
  });

  it('when the plain SHA-256 of an entry is recomputed, then it is not its MAC', async () => {
    await appendN(db, 1);
    const row = await db.knex('audit_events').first();
    expect(createHash('sha256').update(canonicalJson(row)).digest('base64url')).to.not.equal(row.hash);
  });
});
