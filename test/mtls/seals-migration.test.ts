import { expect } from 'chai';
import { randomBytes, X509Certificate } from 'node:crypto';
import { migrateToLatest, migrationConfig } from '../../src/db/migrations.js';
import { ClientCertificateAuthority } from '../../src/mtls/client-certificates.js';
import { createClientCertificateVerifier } from '../../src/mtls/client-certificate-verifier.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { keysFixture, OPERATOR } from '../keys/keys-context.js';

const MIGRATION = '20261130000600_mtls_seals';

describe('migration 20261130000600_mtls_seals', function () {
  this.timeout(120_000);
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => {
    await db.close();
  });

  it('when applied over a CA and a certificate made before seals, then both stay unsealed and the certificate is refused until reissued; rolled back and applied again, then the columns come back', async () => {
    await migrateToLatest(db.knex);
    const fx = await keysFixture(db, { masterKeyBase64: randomBytes(32).toString('base64') });
    const ca = new ClientCertificateAuthority({
      knex: db.knex,
      masterKey: fx.masterKey,
      actor: OPERATOR,
      cryptoperiodDays: 730,
    });
    await ca.initCa();
    const issued = await ca.issue({
      client: 'till-old',
      scopes: ['tokens:write'],
      days: 30,
      password: 'a-long-enough-password',
    });
    // Rows as they stand after the migration when they were written before it: no seal (the code that
    // writes them without one is gone, so the columns are emptied to stand in for them).
    await db.knex('mtls_client_certificates').update({ seal: null });
    await db.knex('data_keys').where({ purpose: 'mtls-client-ca' }).update({ certificate_seal: null });
    const verifier = createClientCertificateVerifier(db.knex, { masterKey: fx.masterKey, revocationCheckMs: 0 });
    const refused = await verifier.verify(new X509Certificate(issued.certificatePem)).then(
      () => 'accepted',
      (error: { code?: string }) => error.code,
    );
    expect(refused).to.equal('CLIENT_CERTIFICATE_UNTRUSTED');

    await expectRefused(
      db
        .knex('data_keys')
        .where({ purpose: 'pan-encryption' })
        .update({ certificate_seal: Buffer.from('x') }),
    );
    const [, rolledBack] = (await db.knex.migrate.down({ ...migrationConfig(), name: MIGRATION })) as [
      number,
      string[],
    ];
    expect(rolledBack).to.deep.equal([MIGRATION]);
    expect(await db.knex.schema.hasColumn('data_keys', 'certificate_seal')).to.equal(false);
    expect(await migrateToLatest(db.knex)).to.deep.equal([MIGRATION]);
    expect(await db.knex.schema.hasColumn('mtls_client_certificates', 'seal')).to.equal(true);
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
