import { expect } from 'chai';
import { migrateToLatest, migrationConfig } from '../../src/db/migrations.js';
import { listCustodianRecords } from '../../src/keys/custodians.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { keysFixture } from './keys-context.js';

const MIGRATION = '20261206000400_dual_control_binding';

describe('migration 20261206000400_dual_control_binding', function () {
  this.timeout(120_000);
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => {
    await db.close();
  });

  it('when applied over custodians, requests and approvals made before it, then approvals are keyed by thumbprint, the old custodians are not trusted, and it rolls back and applies again', async () => {
    await migrateToLatest(db.knex);
    const fx = await keysFixture(db);
    const [, rolledBack] = (await db.knex.migrate.down({ ...migrationConfig(), name: MIGRATION })) as [
      number,
      string[],
    ];
    expect(rolledBack).to.deep.equal([MIGRATION]);
    expect(await db.knex.schema.hasTable('dual_control_ledger')).to.equal(false);
    // Rows as the earlier release wrote them: an unsealed custodian, a request, an approval keyed by custodian.
    const now = new Date();
    await db.knex('key_custodians').insert({
      id: 'cus_old',
      name: 'old-alice',
      public_key_jwk: JSON.stringify({ kty: 'OKP', crv: 'Ed25519', x: 'A'.repeat(43) }),
      key_thumbprint: 'thumb-old',
      acknowledgement: 'I accept',
      acknowledged_at: now,
      registered_by: 'someone',
      created_at: now,
    });
    await db.knex('key_requests').insert({
      id: 'krq_old',
      operation: 'rotate',
      params: JSON.stringify({ purpose: 'pan-encryption' }),
      payload: '{}',
      description: 'old',
      state: 'pending',
      requested_by: 'someone',
      origin: 'cli',
      created_at: now,
      expires_at: now,
    });
    await db
      .knex('key_approvals')
      .insert({ request_id: 'krq_old', custodian_id: 'cus_old', jws: 'a.b.c', approved_at: now });

    expect(await migrateToLatest(db.knex)).to.deep.equal([MIGRATION]);
    const approval = await db.knex('key_approvals').where({ request_id: 'krq_old' }).first();
    expect(approval.key_thumbprint).to.equal('thumb-old');
    expect((await listCustodianRecords(db.knex, fx.masterKey)).map((c) => [c.name, c.sealed])).to.deep.equal([
      ['old-alice', false],
    ]);
    expect(await db.knex('dual_control_ledger')).to.have.length(1);
    // The new actor types are accepted by the audit trail's check constraint.
    const res = await fx.run('request', 'rotate', '--purpose', 'pan-encryption');
    expect(res.stderr).to.contain('CUSTODIANS_TOO_FEW');
    const denied = await db.knex('audit_events').where({ action: 'key.request.created', outcome: 'denied' }).first();
    expect(denied.actor_type).to.equal('operator');

    await db.knex.migrate.down({ ...migrationConfig(), name: MIGRATION });
    expect(await db.knex('key_approvals').where({ request_id: 'krq_old' })).to.have.length(1);
    expect(await migrateToLatest(db.knex)).to.deep.equal([MIGRATION]);
  });
});
