/**
 * Migration 20261206000920_card_data_guard_json_escapes: the database guard reads JSON escapes as
 * separators (`card_data_in_json` no longer misses `4111\n1111…` inside a document) and finds a PAN
 * with up to three digits glued to it in a 17–19-digit run; timestamps and ordinary documents still
 * pass; `down` restores the earlier functions.
 */
import { expect } from 'chai';
import { migrateToLatest, migrationConfig } from '../../src/db/migrations.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

const MIGRATION = '20261206000920_card_data_guard_json_escapes';

const JSON_HITS: [string, unknown][] = [
  ['newlines in a string', { a: '4111\n1111\n1111\n1111' }],
  ['tabs in a nested array', { a: { b: ['4111\t1111\t1111\t1111'] } }],
  ['carriage returns and form feeds', ['5555\r5555\f5555\b4444']],
  ['escaped quotes and backslashes', { a: '4111"1111\\1111"1111' }],
  ['a control character written \\u0001', { a: '4111\u00011111\u00011111\u00011111' }],
  ['a key with newlines', { '4111\n1111\n1111\n1111': 1 }],
];

const TEXT_HITS: [string, string][] = [
  ['a PAN with a CVC glued to it', '4111111111111111123'],
  ['an Amex PAN with four digits glued to it', 'ref 3782822463100051234'],
  ['a PAN behind one glued digit', '14111111111111111'],
  ['serialised JSON with tabs kept as text', '{"v":"4111\\t1111\\t1111\\t1111"}'],
];

const CLEAN: [string, string][] = [
  ['a unix-ms timestamp', '1796000000000'],
  ['a migration name', '20261206000100_card_data_guard'],
  ['an ISO timestamp', '2026-12-06T10:54:26.123Z'],
  ['a 17-digit id without a Luhn-valid end', '12345678901234567'],
  ['an escaped backslash before a letter', '4111\\\\n1111\\\\n1111\\\\n1111'],
];

describe('migration 20261206000920: the database guard reads JSON escapes and glued PANs', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase({ migrated: true });
  });
  after(async () => db.close());

  const inJson = async (doc: unknown): Promise<boolean> => {
    const result = (await db.knex.raw('select card_data_in_json(?::jsonb) as hit', [JSON.stringify(doc)])) as {
      rows: { hit: boolean }[];
    };
    return result.rows[0]?.hit === true;
  };
  const inText = async (text: string): Promise<boolean> => {
    const result = (await db.knex.raw('select card_data_in_text(?) as hit', [text])) as { rows: { hit: boolean }[] };
    return result.rows[0]?.hit === true;
  };

  for (const [name, doc] of JSON_HITS) {
    it(`when a JSON document holds a PAN grouped by ${name}, then card_data_in_json finds it`, async () => {
      expect(await inJson(doc)).to.equal(true);
    });
  }
  for (const [name, text] of TEXT_HITS) {
    it(`when a text holds ${name}, then card_data_in_text finds it`, async () => {
      expect(await inText(text)).to.equal(true);
      expect(await inJson({ nested: [{ text }] })).to.equal(true);
    });
  }
  for (const [name, text] of CLEAN) {
    it(`when a text holds ${name}, then neither function flags it`, async () => {
      expect(await inText(text)).to.equal(false);
      expect(await inJson({ nested: [{ text }] })).to.equal(false);
    });
  }

  it('when a document has no backslash and no 12-digit run, then it passes', async () => {
    expect(await inJson({ amount: { value: 1000, currency: 'EUR' }, at: '2026-12-06T10:54:26Z', n: 8 / 9 })).to.equal(
      false,
    );
  });

  it('when rolled back, then the earlier functions (which miss escapes) are restored; re-applied, they are fixed', async () => {
    const [, rolledBack] = (await db.knex.migrate.down({ ...migrationConfig(), name: MIGRATION })) as [
      number,
      string[],
    ];
    expect(rolledBack).to.deep.equal([MIGRATION]);
    expect(await inJson({ a: '4111\n1111\n1111\n1111' })).to.equal(false);
    expect(await inText('4111111111111111123')).to.equal(false);
    await migrateToLatest(db.knex);
    expect(await inJson({ a: '4111\n1111\n1111\n1111' })).to.equal(true);
  });
});
