/**
 * Migration 20261130000700: subscriptions unique by the SHA-256 of their URL, not by a btree over the
 * text; secrets remember the Idempotency-Key of the rotation that made them.
 */
import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { migrateToLatest, migrationConfig } from '../../src/db/migrations.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

const MIGRATION = '20261130000700_subscription_hardening';

describe('migration 20261130000700_subscription_hardening', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => db.close());

  it('when applied over existing subscriptions, then each is hashed and the hash is unique among live ones; rolled back, the URL index is back', async () => {
    await migrateToLatest(db.knex);
    const [, rolledBack] = (await db.knex.migrate.down({ ...migrationConfig(), name: MIGRATION })) as [
      number,
      string[],
    ];
    expect(rolledBack).to.deep.equal([MIGRATION]);
    expect(await db.knex.schema.hasColumn('event_subscriptions', 'url_sha256')).to.equal(false);
    expect(await db.knex.schema.hasColumn('event_subscription_secrets', 'rotation_key')).to.equal(false);
    const now = new Date();
    const row = { event_types: '[]', created_by: 't', created_at: now, updated_at: now };
    await db.knex('event_subscriptions').insert([
      { id: 'sub_live', url: 'https://x.example/é', state: 'active', ...row },
      { id: 'sub_gone', url: 'https://y.example/', state: 'deleted', ...row },
    ]);

    expect(await migrateToLatest(db.knex)).to.deep.equal([MIGRATION]);
    expect(await db.knex.schema.hasColumn('event_subscription_secrets', 'rotation_key')).to.equal(true);
    const hashed = (await db.knex('event_subscriptions').orderBy('id').select('id', 'url_sha256')) as {
      id: string;
      url_sha256: Buffer;
    }[];
    const sha = (url: string): string => createHash('sha256').update(url, 'utf8').digest('hex');
    expect(hashed.map((r) => [r.id, Buffer.from(r.url_sha256).toString('hex')])).to.deep.equal([
      ['sub_gone', sha('https://y.example/')],
      ['sub_live', sha('https://x.example/é')],
    ]);
    let refused: unknown;
    await db
      .knex('event_subscriptions')
      .insert({
        id: 'sub_twin',
        url: 'https://x.example/é',
        url_sha256: hashed[1]?.url_sha256,
        state: 'active',
        ...row,
      })
      .catch((error: unknown) => (refused = error));
    expect((refused as { code?: string } | undefined)?.code).to.equal('23505');
    // A deleted subscription's URL may be subscribed again.
    await db.knex('event_subscriptions').insert({
      id: 'sub_again',
      url: 'https://y.example/',
      url_sha256: hashed[0]?.url_sha256,
      state: 'active',
      ...row,
    });
  });
});
