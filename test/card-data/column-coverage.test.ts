/**
 * The database choke point covers every text-like column of the schema (docs/card-data.md): after all
 * migrations, each text / varchar / char / json / jsonb / array column of the public schema is either
 * read by its table's `card_data_guard` trigger or listed, with a reason, in
 * `card_data_exempt_columns` (the one allow-list). A migration that adds a table or a text column
 * without calling `card_data_guard_attach` fails here.
 */
import { expect } from 'chai';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

interface Column {
  table_name: string;
  column_name: string;
  data_type: string;
}

export async function uncoveredColumns(db: TestDatabase['knex']): Promise<string[]> {
  const columns = (
    (await db.raw(
      `select c.table_name, c.column_name, c.data_type
         from information_schema.columns c
         join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
        where c.table_schema = current_schema() and t.table_type = 'BASE TABLE'
          and (c.data_type in ('text', 'character varying', 'character', 'json', 'jsonb') or c.data_type = 'ARRAY')
        order by 1, 2`,
    )) as { rows: Column[] }
  ).rows;
  const exempt = new Set(
    (
      (await db('card_data_exempt_columns').where('reason', '<>', '').select('table_name', 'column_name')) as {
        table_name: string;
        column_name: string;
      }[]
    ).map((r) => `${r.table_name}.${r.column_name}`),
  );
  const triggers = (
    (await db.raw(
      `select c.relname as table_name, t.tgargs, t.tgenabled
         from pg_trigger t join pg_class c on c.oid = t.tgrelid
        where t.tgname = 'card_data_guard' and not t.tgisinternal`,
    )) as { rows: { table_name: string; tgargs: Uint8Array; tgenabled: string }[] }
  ).rows;
  const guarded = new Set(
    triggers
      .filter((t) => t.tgenabled === 'O' || t.tgenabled === 'A')
      .flatMap((t) =>
        Buffer.from(t.tgargs)
          .toString('utf8')
          .split('\0')
          .filter((a) => a.length > 0)
          .map((column) => `${t.table_name}.${column}`),
      ),
  );
  return columns
    .map((c) => `${c.table_name}.${c.column_name}`)
    .filter((name) => !exempt.has(name) && !guarded.has(name));
}

describe('card-data guard: every text column of the schema is covered', function () {
  this.timeout(120_000);
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
  });
  after(async () => db.close());

  it('when all migrations have run, then every text/varchar/json/jsonb column is guarded or exempt with a reason', async () => {
    expect(await uncoveredColumns(db.knex)).to.deep.equal([]);
  });

  it('when the guarded tables are listed, then the tables that take outside text are among them', async () => {
    const rows = (await db.knex.raw(
      `select c.relname from pg_trigger t join pg_class c on c.oid = t.tgrelid where t.tgname = 'card_data_guard'`,
    )) as { rows: { relname: string }[] };
    expect(rows.rows.map((r) => r.relname)).to.include.members([
      'webhook_inbox',
      'payments',
      'payment_facts',
      'outbound_events',
      'outbound_deliveries',
      'outbound_delivery_attempts',
      'audit_events',
      'idempotency_keys',
      'loyalty_redemptions',
      'loyalty_accounts',
      'event_subscriptions',
    ]);
  });

  it('when a table gains a text column, then it is uncovered until the guard is attached again', async () => {
    await db.knex.raw('alter table payments add column scratch_note text');
    try {
      expect(await uncoveredColumns(db.knex)).to.deep.equal(['payments.scratch_note']);
      await db.knex.raw(`select card_data_guard_attach('payments')`);
      expect(await uncoveredColumns(db.knex)).to.deep.equal([]);
    } finally {
      await db.knex.raw('alter table payments drop column scratch_note');
      await db.knex.raw(`select card_data_guard_attach('payments')`);
    }
  });

  it('when a new table with a text column is created without the guard, then it is reported', async () => {
    await db.knex.raw('create table scratch_notes (id text primary key, note text)');
    try {
      expect(await uncoveredColumns(db.knex)).to.deep.equal(['scratch_notes.id', 'scratch_notes.note']);
    } finally {
      await db.knex.raw('drop table scratch_notes');
    }
  });

  describe('when card data is written by any writer, then the database refuses it (SQLSTATE 23514)', () => {
    const forms: [string, string][] = [
      ['plain', '4111111111111111'],
      ['spaces', '4111 1111 1111 1111'],
      ['dashes', '5555-5555-5555-4444'],
      ['dots', '5105.1051.0510.5100'],
      ['slashes', '6011/0009/9013/9424'],
      ['underscores', '4111_1111_1111_1111'],
      ['mixed, behind a short number', 'ref 12 4111.1111-1111 1111'],
      ['12 digits', '411111111117'],
      ['19 digits', '4111111111111111110'],
      ['track 2', ';4111111111111111=25121010000000000000?'],
    ];
    for (const [name, text] of forms) {
      it(`when a redemption description holds a PAN (${name}), then 23514`, async () => {
        const error = await db
          .knex('payments')
          .insert({
            id: `pay_${name.replace(/\W/g, '')}`,
            provider: 'platform',
            external_id: `ext-${name}`,
            state: 'authorised',
            merchant_reference: `order ${text}`,
            created_at: new Date(),
            updated_at: new Date(),
          })
          .then(
            () => undefined,
            (e: unknown) => e as { code?: string; message: string },
          );
        expect(error?.code, name).to.equal('23514');
        expect(error?.message).to.contain('payments.merchant_reference').and.not.contain(text);
      });
    }

    it('when a JSON payload holds a PAN deep inside, or a cvc key, then 23514; the exempt reference path is not read', async () => {
      const insert = (payload: unknown, key: string) =>
        db
          .knex('webhook_inbox')
          .insert({
            id: `evt_${key}`,
            provider: 'adyen',
            event_key: key,
            event_type: 'AUTHORISATION',
            state: 'applied',
            secret_index: 0,
            payload: JSON.stringify(payload),
            received_at: new Date(),
          })
          .then(
            () => 'stored',
            (e: { code?: string }) => e.code,
          );
      expect(await insert({ a: [{ b: 'x 4111 1111 1111 1111' }] }, 'k1')).to.equal('23514');
      expect(await insert({ additionalData: { 'Card-CVC': '737' } }, 'k2')).to.equal('23514');
      expect(await insert({ n: 5555555555554444 }, 'k3')).to.equal('23514');
      // A real Adyen reference is 16 digits and may pass Luhn: its path is exempt, nothing else is.
      expect(await insert({ pspReference: '4111111111111111', merchantReference: 'ok' }, 'k4')).to.equal('stored');
      expect(await insert({ pspReference: 'x', merchantReference: '4111111111111111' }, 'k5')).to.equal('23514');
    });

    it('when an update changes only clean columns of a row, then it passes; a dirty change is refused', async () => {
      await db.knex('payments').insert({
        id: 'pay_update',
        provider: 'platform',
        external_id: 'ext-update',
        state: 'authorised',
        merchant_reference: 'order-1',
        created_at: new Date(),
        updated_at: new Date(),
      });
      await db.knex('payments').where({ id: 'pay_update' }).update({ store_id: 'LDN-1' });
      const refused = await db
        .knex('payments')
        .where({ id: 'pay_update' })
        .update({ terminal_id: '4111-1111-1111-1111' })
        .then(
          () => 'updated',
          (e: { code?: string }) => e.code,
        );
      expect(refused).to.equal('23514');
    });
  });
});
