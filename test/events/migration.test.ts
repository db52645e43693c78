/** The outbound-events migration applies, rolls back leaving nothing behind, and applies again. */
import { expect } from 'chai';
import { migrateToLatest, migrationConfig } from '../../src/db/migrations.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

const TABLES = [
  'event_subscriptions',
  'event_subscription_secrets',
  'outbound_events',
  'outbound_deliveries',
  'outbound_delivery_attempts',
];

describe('migration 20261130000400_outbound_events', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => db.close());

  const present = async (): Promise<string[]> =>
    (await db
      .knex('information_schema.tables')
      .where({ table_schema: 'public' })
      .whereIn('table_name', TABLES)
      .pluck('table_name')) as string[];

  it('when migrated, rolled back and migrated again, then its tables come, go and come back', async () => {
    await migrateToLatest(db.knex);
    expect((await present()).sort()).to.deep.equal([...TABLES].sort());
    await db.knex.migrate.down({ ...migrationConfig(), name: '20261130000400_outbound_events' });
    expect(await present()).to.deep.equal([]);
    await migrateToLatest(db.knex);
    expect((await present()).sort()).to.deep.equal([...TABLES].sort());
    // The state checks hold: an unknown state is refused by the database itself.
    const now = new Date();
    const subscription = {
      url: 'https://x.example',
      event_types: '[]',
      created_by: 't',
      created_at: now,
      updated_at: now,
    };
    await db.knex('event_subscriptions').insert({ id: 'sub_a', state: 'active', ...subscription });
    let refused: unknown;
    await db
      .knex('event_subscriptions')
      .insert({ id: 'sub_b', state: 'paused', ...subscription, url: 'https://y.example' })
      .catch((error: unknown) => (refused = error));
    expect(refused).to.not.equal(undefined);
  });
});
