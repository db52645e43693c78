import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { migrateToLatest, migrationConfig } from '../../src/db/migrations.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { keysFixture } from '../keys/keys-context.js';

const MIGRATION = '20261130000500_mtls';

describe('migration 20261130000500_mtls', function () {
  this.timeout(60_000);
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => {
    await db.close();
  });

  it('when applied, then the CA purpose needs its certificate and client certificate rows are constrained; rolled back and applied again, then it comes back the same', async () => {
    await migrateToLatest(db.knex);
    const fx = await keysFixture(db, { masterKeyBase64: randomBytes(32).toString('base64') });
    const row = {
      purpose: 'mtls-client-ca',
      version: 9,
      state: 'published',
      algorithm: 'RSA-3072',
      strength_bits: 128,
      wrapped_key: Buffer.from('x'),
      kek_id: fx.masterKey.keyId,
      cryptoperiod_days: 730,
      public_key_pem: 'pem',
      created_at: new Date(),
    };
    // A CA version without its certificate, or another purpose with one, is refused by the database.
    await expectRefused(db.knex('data_keys').insert(row));
    await expectRefused(
      db.knex('data_keys').insert({ ...row, purpose: 'pan-encryption', public_key_pem: null, certificate_pem: 'c' }),
    );
    const certificate = {
      serial: '01:02',
      client_name: 'till-1',
      scopes: JSON.stringify(['tokens:write']),
      not_before: new Date(),
      not_after: new Date(Date.now() + 86_400_000),
      fingerprint_sha256: 'f',
      ca_version: 1,
      key_source: 'generated',
      issued_by: 'op',
      issued_at: new Date(),
    };
    await expectRefused(db.knex('mtls_client_certificates').insert({ ...certificate, key_source: 'external' }));
    await expectRefused(db.knex('mtls_client_certificates').insert({ ...certificate, revoked_at: new Date() }));
    await expectRefused(
      db.knex('mtls_client_certificates').insert({ ...certificate, not_after: certificate.not_before }),
    );

    // Only this migration is rolled back, later ones stay: its down restores the purposes it knew, so the
    // key of a purpose added later (subscription-secret, created by the fixture) must go first.
    await db.knex('data_keys').where({ purpose: 'subscription-secret' }).delete();
    const [, rolledBack] = (await db.knex.migrate.down({ ...migrationConfig(), name: MIGRATION })) as [
      number,
      string[],
    ];
    expect(rolledBack).to.deep.equal([MIGRATION]);
    expect(await db.knex.schema.hasTable('mtls_client_certificates')).to.equal(false);
    expect(await db.knex.schema.hasColumn('data_keys', 'certificate_pem')).to.equal(false);
    await expectRefused(db.knex('data_keys').insert({ ...row, certificate_pem: undefined }));

    expect(await migrateToLatest(db.knex)).to.deep.equal([MIGRATION]);
    expect(await db.knex.schema.hasTable('mtls_revocation_generation')).to.equal(true);
    expect((await db.knex('mtls_revocation_generation').first()).id).to.equal(1);
  });
});

async function expectRefused(query: PromiseLike<unknown>): Promise<void> {
  let refused = false;
  try {
    await query;
  } catch {
    refused = true;
  }
  expect(refused, 'the database accepted a row its constraints should refuse').to.equal(true);
}
