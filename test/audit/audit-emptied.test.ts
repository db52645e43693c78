/**
 * An insider with database write access (no master key) empties the audit trail and the dual-control
 * ledger to reopen single-operator mode (attacker review, issue 17). Before the fix, the next append
 * restarted the trail at genesis as if it were new, a lone KEYS_SINGLE_OPERATOR rotation ran, and
 * `keys audit verify` reported the trail intact.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { appendAuditEvent, ensureAuditChain, verifyAuditChain } from '../../src/audit/audit-log.js';
import { KeyRing } from '../../src/keys/key-ring.js';
import { LocalMasterKey } from '../../src/keys/master-key-source.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { ed25519, genesis, type Person } from '../keys/custodians-fixture.js';
import { keysFixture, type KeysFixture } from '../keys/keys-context.js';

describe('audit trail and ledger emptied by a database writer', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let lone: KeysFixture;
  let dir: string;
  let alice: Person;
  let bob: Person;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { propagationMs: 0 } });
    lone = await keysFixture(db, {
      policy: { propagationMs: 0, singleOperator: true },
      masterKeyBase64: fx.masterKeyBase64,
    });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-emptied-'));
    [alice, bob] = ['alice', 'bob'].map((n) => ed25519(dir, n)) as [Person, Person];
    await genesis(fx, alice, bob);
  });
  after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function wipeTrailAndLedger(): Promise<void> {
    await db.knex('key_request_executions').del();
    await db
      .knex('dual_control_ledger')
      .where({ id: 1 })
      .update({ seq: 0, chain: '0'.repeat(64), seal: null });
    await db.knex('audit_events').del();
    await db
      .knex('audit_chain_head')
      .where({ id: 1 })
      .update({ seq: 0, hash: 'genesis', mac: null, key_version: null });
  }

  it('when the trail and the ledger are emptied, then verify names the emptied trail, a lone rotation is still refused, and the append that records the refusal records the emptied trail as entry 1', async () => {
    const before = await lone.run('rotate', '--purpose', 'identifier-mac', '--apply');
    expect(before.code, before.stderr).to.equal(1);
    expect(before.stderr).to.contain('SINGLE_OPERATOR_REFUSED');

    await wipeTrailAndLedger();

    // Before any append: the chain key exists, the trail is empty.
    const emptied = await verifyAuditChain(db.knex);
    expect(emptied.ok, JSON.stringify(emptied)).to.equal(false);
    if (!emptied.ok) expect(emptied.reason).to.match(/the trail is empty while audit-chain key v1 exists/);
    const verify = await fx.run('audit', 'verify');
    expect(verify.code).to.equal(1);
    expect(verify.stdout).to.match(/audit chain BROKEN/);
    expect(verify.stdout).to.contain('the trail was emptied');

    const after = await lone.run('rotate', '--purpose', 'identifier-mac', '--apply');
    expect(after.code, after.stdout + after.stderr).to.equal(1);
    expect(after.stderr).to.contain('SINGLE_OPERATOR_REFUSED');

    const entries = await db.knex('audit_events').orderBy('seq').select('seq', 'action', 'details');
    expect(entries[0]).to.deep.include({ seq: 1, action: 'audit.chain-head-invalid' });
    const details = typeof entries[0].details === 'string' ? JSON.parse(entries[0].details) : entries[0].details;
    expect(details.reason).to.match(/the trail was emptied .* while audit-chain key v1 exists/);
    const verdict = await verifyAuditChain(db.knex);
    expect(verdict.ok, JSON.stringify(verdict)).to.equal(false);
    if (!verdict.ok) {
      expect(verdict.brokenAtSeq).to.equal(1);
      expect(verdict.reason).to.match(/entry 1 is audit.chain-head-invalid.*the trail was emptied/);
    }
    const again = await fx.run('audit', 'verify');
    expect(again.code).to.equal(1);
    expect(again.stdout).to.contain('the trail was emptied');
  });

  for (const table of ['key_custodians', 'key_requests', 'master_key_splits'] as const) {
    it(`when only ${table} holds a row (everything else wiped), then single-operator mode stays refused`, async () => {
      const other = await createTestDatabase({ migrated: true });
      try {
        const ofx = await keysFixture(other, { policy: { propagationMs: 0 } });
        const olone = await keysFixture(other, {
          policy: { propagationMs: 0, singleOperator: true },
          masterKeyBase64: ofx.masterKeyBase64,
        });
        const [carol, dave] = ['carol', 'dave'].map((n) => ed25519(dir, `${n}-${table}`)) as [Person, Person];
        await genesis(ofx, carol, dave);
        // The insider wipes the ledger, the trail with its chain keys, and every custody table but one.
        await other.knex('key_request_executions').del();
        await other
          .knex('dual_control_ledger')
          .where({ id: 1 })
          .update({ seq: 0, chain: '0'.repeat(64), seal: null });
        await other.knex('audit_events').del();
        await other.knex('audit_chain_keys').del();
        await other
          .knex('audit_chain_head')
          .where({ id: 1 })
          .update({ seq: 0, hash: 'genesis', mac: null, key_version: null });
        for (const t of ['key_approvals', 'key_requests', 'key_custodians', 'master_key_splits']) {
          if (t !== table && !(t === 'key_approvals' && table === 'key_requests')) await other.knex(t).del();
        }
        if (table === 'master_key_splits') {
          // A split record as `keys split` writes it (content irrelevant: only that a row exists).
          await other.knex('master_key_splits').insert({
            id: 'split_emptied',
            state: 'active',
            threshold: 2,
            total: 3,
            kek_id: 'test',
            holders: JSON.stringify(['carol', 'dave', 'erin']),
            request_id: null,
            created_at: new Date(),
            seal: Buffer.alloc(32),
          });
        }
        expect(Number((await other.knex(table).count({ n: '*' }).first())?.n)).to.be.greaterThan(0);
        const res = await olone.run('rotate', '--purpose', 'identifier-mac', '--apply');
        expect(res.code, res.stdout + res.stderr).to.equal(1);
        expect(res.stderr).to.contain('SINGLE_OPERATOR_REFUSED');
      } finally {
        await other.close();
      }
    });
  }

  it('when a database is new, then its first append creates key v1 as entry 1 and verifies, on the service’s first start and on a first append alike', async () => {
    for (const first of ['start', 'append'] as const) {
      const fresh = await createTestDatabase({ migrated: true });
      try {
        new KeyRing(fresh.knex, new LocalMasterKey(randomBytes(32), 'fresh'), 50);
        if (first === 'start') await ensureAuditChain(fresh.knex);
        await fresh.knex.transaction((trx) =>
          appendAuditEvent(trx, {
            actor: 'system',
            actorType: 'system',
            action: 'service.started',
            outcome: 'success',
            origin: 'test',
            resource: 'service',
          }),
        );
        const actions = (await fresh.knex('audit_events').orderBy('seq').select('action')).map((r) => r.action);
        expect(actions).to.deep.equal(['audit.chain-key.created', 'service.started']);
        expect(await verifyAuditChain(fresh.knex)).to.deep.include({ ok: true, checked: 2 });
      } finally {
        await fresh.close();
      }
    }
  });
});
