/**
 * Migration 20261210000000_card_data_legacy_client_keys (issue 16, third review): client
 * `Idempotency-Key`s an earlier release stored as sent holding card data. A bare UUID key a retry still
 * matches is recorded in card_data_legacy_findings (table, column, row — never the value); any other
 * card-shaped key (refused at the edge today, so no retry can match it) is re-keyed; clean keys and
 * keyed digests are left alone.
 */
import { expect } from 'chai';
import { legacyReferenceVerdict } from '../../src/card-data/legacy-references.js';
import { findLegacyCardData } from '../../src/db/legacy-card-data.js';
import { migrateToLatest, migrationConfig } from '../../src/db/migrations.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

const MIGRATION = '20261210000000_card_data_legacy_client_keys';
const CARD_UUID = '41111111-1111-1111-abcd-ef0123456789'; // first groups: 4111111111111111
const ROTATION_UUID = '55555555-5555-4444-abcd-ef0123456789'; // 5555555555554444
const CLEAN_UUID = 'abcdef01-2345-6789-abcd-ef0123456789';
const NON_UUID = 'order-5105-1051-0510-5100';
const DIGEST = `~${'A'.repeat(43)}`;
const PURPOSE = 'subscription-secret';
const CREATED = new Date('2026-11-01T10:00:00.000Z');

async function plantAsOldRelease(db: TestDatabase): Promise<void> {
  const idem = (scope: string, key: string) => ({
    scope,
    key,
    request_hash: 'h',
    status: 201,
    response: JSON.stringify({ ok: true }),
    created_at: CREATED,
    expires_at: new Date(CREATED.getTime() + 30 * 86_400_000),
  });
  await db.knex.transaction(async (trx) => {
    await trx.raw('set local session_replication_role = replica');
    await trx('idempotency_keys').insert([
      idem('redemption:shp_legacy', CARD_UUID),
      idem('redemption:shp_legacy', NON_UUID),
      idem('redemption:shp_legacy', CLEAN_UUID),
      idem('redemption:shp_legacy', DIGEST),
    ]);
    const columns = Object.keys(await trx('event_subscription_secrets').columnInfo());
    const secret = (id: string, rotationKey: string | null): Record<string, unknown> => {
      const row: Record<string, unknown> = {
        id,
        subscription_id: 'sub_legacy',
        secret_ciphertext: Buffer.from('not a real ciphertext'),
        secret_key_version: 1,
        created_at: CREATED,
        rotation_key: rotationKey,
      };
      if (columns.includes('secret_key_purpose')) row['secret_key_purpose'] = PURPOSE;
      return row;
    };
    await trx('event_subscription_secrets').insert([
      secret('whs_legacyraw', ROTATION_UUID),
      secret('whs_legacyother', 'rot-4012-8888-8888-1881'),
      secret('whs_legacyclean', CLEAN_UUID),
    ]);
  });
}

describe(`migration ${MIGRATION}`, function () {
  this.timeout(180_000);
  let db: TestDatabase;
  beforeEach(async () => {
    db = await createTestDatabase();
    await migrateToLatest(db.knex);
    const [, rolledBack] = (await db.knex.migrate.down({ ...migrationConfig(), name: MIGRATION })) as [
      number,
      string[],
    ];
    expect(rolledBack).to.deep.equal([MIGRATION]);
  });
  afterEach(async () => db.close());

  it('when an old release stored card-shaped Idempotency-Keys raw, then the UUID ones a retry still matches are recorded by row (never by value), the others re-keyed, clean keys and digests untouched', async () => {
    await plantAsOldRelease(db);
    const before = (await db.knex('card_data_legacy_findings').count({ n: '*' }).first())?.n;
    await migrateToLatest(db.knex);

    const findings = (await db
      .knex('card_data_legacy_findings')
      .whereIn('table_name', ['idempotency_keys', 'event_subscription_secrets'])
      .select('table_name', 'column_name', 'row_key')
      .orderBy('table_name')) as { table_name: string; column_name: string; row_key: string }[];
    expect(findings).to.deep.equal([
      { table_name: 'event_subscription_secrets', column_name: 'rotation_key', row_key: 'whs_legacyraw' },
      {
        table_name: 'idempotency_keys',
        column_name: 'key',
        row_key: `redemption:shp_legacy@${CREATED.toISOString()}`,
      },
    ]);
    expect(Number((await db.knex('card_data_legacy_findings').count({ n: '*' }).first())?.n)).to.equal(
      Number(before) + 2,
    );
    const everything = JSON.stringify(await db.knex('card_data_legacy_findings').select());
    for (const digits of ['4111111111111111', '5555555555554444', '41111111-1111-1111', '55555555-5555-4444']) {
      expect(everything.replace(/\D/g, '')).to.not.contain(digits.replace(/\D/g, ''));
    }

    // Reported rows stay as they were (a retry replays them); the others are re-keyed, never kept raw.
    const keys = (await db.knex('idempotency_keys').where({ scope: 'redemption:shp_legacy' }).pluck('key')) as string[];
    expect(keys).to.include.members([CARD_UUID, CLEAN_UUID, DIGEST]);
    expect(keys).to.not.include(NON_UUID);
    const rekeyed = keys.filter((k) => ![CARD_UUID, CLEAN_UUID, DIGEST].includes(k));
    expect(rekeyed).to.have.length(1);
    expect(rekeyed[0]).to.match(/^order-\[PAN …5100\]~[\w-]{22}$/);
    const rotations = Object.fromEntries(
      (await db.knex('event_subscription_secrets').select('id', 'rotation_key')).map((r) => [r.id, r.rotation_key]),
    );
    expect(rotations['whs_legacyraw']).to.equal(ROTATION_UUID);
    expect(rotations['whs_legacyclean']).to.equal(CLEAN_UUID);
    expect(rotations['whs_legacyother']).to.match(/^rot-\[PAN …1881\]~[\w-]{22}$/);

    // What the start-up scan reads agrees, and re-running records nothing twice.
    const scanned = (await findLegacyCardData(db.knex)).filter((f) =>
      ['idempotency_keys', 'event_subscription_secrets'].includes(f.table),
    );
    expect(scanned).to.have.length(2);
    await db.knex.migrate.down({ ...migrationConfig(), name: MIGRATION });
    await migrateToLatest(db.knex);
    expect(
      await db
        .knex('card_data_legacy_findings')
        .whereIn('table_name', ['idempotency_keys', 'event_subscription_secrets']),
    ).to.have.length(2);
  });

  it('when the verdict is asked for a client key, then only a bare UUID holding card data is reported; other card-shaped keys are re-keyed', () => {
    expect(legacyReferenceVerdict('client', CARD_UUID, 'idempotency-key')).to.equal('report');
    expect(legacyReferenceVerdict('client', `msg_${CARD_UUID}`, 'idempotency-key')).to.equal('rekey');
    expect(legacyReferenceVerdict('client', NON_UUID, 'idempotency-key')).to.equal('rekey');
    expect(legacyReferenceVerdict('client', CLEAN_UUID, 'idempotency-key')).to.equal('clean');
  });
});
