/**
 * Migration 20261209300000_card_data_reference_cleanup: card numbers an old release stored in the
 * exempt reference columns (payments.external_id, webhook_inbox.event_key and its payload references,
 * payment_facts.fact_key) are re-keyed where no delivery can be matched against them again, the rest
 * (a 16-digit Adyen reference, audit actor/origin/resource under the entry MAC) is recorded in
 * card_data_legacy_findings, without its value, and warned about at start-up; exactly-once holds.
 */
import { expect } from 'chai';
import { legacyReferenceVerdict } from '../../src/card-data/legacy-references.js';
import { migrateToLatest, migrationConfig } from '../../src/db/migrations.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestService } from '../support/harness.js';
import { adyenItem, postAdyen, postPlatform, platformEvent } from '../support/webhooks.js';
import { panHits } from '../security/card-data-support.js';

const MIGRATION = '20261209300000_card_data_reference_cleanup';
const PANS = ['4111111111111111', '5555555555554444', '5105105105105100', '6011000990139424', '4012888888881881'];
const UUID_ID = 'msg_6a5f1cfa-72d7-4598-9933-056ea0e51f27';
const PLATFORM_UUID = '41111111-1111-1111-abcd-ef0123456789';
const REKEYED = /^\[PAN …\d{4}\][^~]*~[\w-]{22}$|^[^~]*\[PAN …\d{4}\][^~]*~[\w-]{22}$/;

/** Rows as a release before the guard wrote them: straight into the tables, past today's triggers. */
async function plantAsOldRelease(db: TestDatabase): Promise<void> {
  const now = new Date();
  const inbox = (id: string, provider: string, eventKey: string, payload: unknown) => ({
    id,
    provider,
    event_key: eventKey,
    event_type: 'AUTHORISATION',
    state: 'applied',
    secret_index: 0,
    payload: JSON.stringify(payload),
    received_at: now,
  });
  const payment = (id: string, provider: string, externalId: string) => ({
    id,
    provider,
    external_id: externalId,
    state: 'authorised',
    created_at: now,
    updated_at: now,
  });
  await db.knex.transaction(async (trx) => {
    await trx.raw('set local session_replication_role = replica');
    await trx('webhook_inbox').insert([
      // A platform webhook-id and payment id that were card numbers (refused at the edge today).
      inbox('evt_platform', 'platform', 'msg-4111.1111.1111.1111', {
        type: 'payment.refunded',
        payment: { id: '5105-1051-0510-5100', amount: { value: 1, currency: 'GBP' } },
        refund: { id: '6011/0009/9013/9424', amount: { value: 1, currency: 'GBP' } },
      }),
      // A Stripe event id holding one.
      inbox('evt_stripe', 'stripe', 'evt_5555555555554444', {
        // (the payload's `id` is not a reference path: 20261206000150 masked it)
        id: 'evt_[PAN …4444]',
        type: 'charge.succeeded',
      }),
      // An Adyen reference that is not 16 alphanumerics (stored rejected today, keyed by its signature).
      inbox('evt_adyen_bad', 'adyen', '4012-8888-8888-1881:AUTHORISATION:true', {
        pspReference: '4012-8888-8888-1881',
        eventCode: 'AUTHORISATION',
      }),
      // A 16-digit Luhn-valid Adyen reference: cannot be told from a real one.
      inbox('evt_adyen_ref', 'adyen', '4111111111111111:AUTHORISATION:true', {
        pspReference: '4111111111111111',
        eventCode: 'AUTHORISATION',
        success: 'true',
      }),
      // A UUID message id whose groups chain into digits: accepted by the handler, reported.
      inbox('evt_uuid', 'platform', UUID_ID, { type: 'payment.authorisation_failed' }),
    ]);
    await trx('payments').insert([
      payment('pay_platform', 'platform', '5105-1051-0510-5100'),
      payment('pay_stripe', 'stripe', 'ch_5555_5555_5555_4444'),
      payment('pay_adyen_bad', 'adyen', '4012-8888-8888-1881'),
      payment('pay_adyen_ref', 'adyen', '4111111111111111'),
      // UUID-shaped ids holding card numbers where the handlers accept no UUID exception: re-keyed.
      payment('pay_platform_uuid', 'platform', PLATFORM_UUID),
      payment('pay_stripe_uuid', 'stripe', '41111111-1111-1111-abcd-ef0123456789'),
      payment('pay_uuid', 'platform', 'pay-uuid-delivery'),
    ]);
    await trx('payment_facts').insert([
      {
        payment_id: 'pay_platform',
        kind: 'refunded',
        fact_key: '6011/0009/9013/9424',
        amount: 1,
        currency: 'GBP',
        occurred_at: now,
        inbox_id: 'evt_platform',
      },
      {
        // A Stripe refund total whose amount reads as a card number: an amount, recomputed by a redelivery.
        payment_id: 'pay_stripe',
        kind: 'refund_total',
        fact_key: 'total:411111111117',
        amount: 1,
        currency: 'EUR',
        occurred_at: now,
        inbox_id: 'evt_stripe',
      },
      {
        // A platform fact keyed by its delivery (no refund id): the UUID webhook-id itself, reported.
        payment_id: 'pay_uuid',
        kind: 'authorisation_failed',
        fact_key: UUID_ID,
        amount: null,
        currency: null,
        occurred_at: now,
        inbox_id: 'evt_uuid',
      },
      {
        payment_id: 'pay_adyen_ref',
        kind: 'authorised',
        fact_key: 'auth',
        amount: 10_000,
        currency: 'EUR',
        occurred_at: now,
        inbox_id: 'evt_adyen_ref',
      },
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

  it('when references an old release stored hold card numbers, then those no delivery can match are re-keyed consistently, the 16-digit Adyen one is recorded without its value, and a redelivery of its item is still a duplicate', async () => {
    await plantAsOldRelease(db);
    const bindings: string[] = [];
    db.knex.on('query', (q: { bindings?: unknown[] }) => bindings.push(JSON.stringify(q.bindings ?? [])));
    expect(await migrateToLatest(db.knex)).to.deep.equal([MIGRATION]);

    const platform = await db.knex('webhook_inbox').where({ id: 'evt_platform' }).first();
    const payPlatform = await db.knex('payments').where({ id: 'pay_platform' }).first();
    const refund = await db.knex('payment_facts').where({ payment_id: 'pay_platform' }).first();
    expect(platform.event_key).to.match(/^msg-\[PAN …1111\]~[\w-]{22}$/);
    expect(payPlatform.external_id).to.match(/^\[PAN …5100\]~[\w-]{22}$/);
    // One original, one replacement in every table: the payment, its inbox event and its fact stay joined.
    expect(platform.payload.payment.id).to.equal(payPlatform.external_id);
    expect(refund.fact_key).to.match(/^\[PAN …9424\]~[\w-]{22}$/);
    expect(platform.payload.refund.id).to.equal(refund.fact_key);
    // A redelivery computes `total:null` from the masked projection, never this key: re-keyed.
    expect(
      (await db.knex('payment_facts').where({ payment_id: 'pay_stripe', kind: 'refund_total' }).first()).fact_key,
    ).to.match(/^total:\[PAN …1117\]~[\w-]{22}$/);
    // A UUID shape is an exception for the platform webhook-id only.
    expect((await db.knex('payments').where({ id: 'pay_platform_uuid' }).first()).external_id).to.match(
      /^\[PAN …\d{4}\].*~[\w-]{22}$/,
    );
    expect((await db.knex('payments').where({ id: 'pay_stripe_uuid' }).first()).external_id).to.match(
      /^\[PAN …\d{4}\].*~[\w-]{22}$/,
    );
    const stripe = await db.knex('webhook_inbox').where({ id: 'evt_stripe' }).first();
    expect(stripe.event_key).to.match(REKEYED);
    expect((await db.knex('payments').where({ id: 'pay_stripe' }).first()).external_id).to.match(REKEYED);
    const adyenBad = await db.knex('webhook_inbox').where({ id: 'evt_adyen_bad' }).first();
    expect(adyenBad.event_key).to.match(/^\[PAN …1881\]:AUTHORISATION:true~[\w-]{22}$/);
    expect(adyenBad.payload.pspReference).to.equal(
      (await db.knex('payments').where({ id: 'pay_adyen_bad' }).first()).external_id,
    );
    // Left as they were: the Adyen reference a redelivery is matched by, and the UUID message id.
    expect((await db.knex('webhook_inbox').where({ id: 'evt_adyen_ref' }).first()).event_key).to.equal(
      '4111111111111111:AUTHORISATION:true',
    );
    expect((await db.knex('webhook_inbox').where({ id: 'evt_uuid' }).first()).event_key).to.equal(UUID_ID);

    const findings = await db
      .knex('card_data_legacy_findings')
      .select('table_name', 'column_name', 'row_key')
      .orderBy(['table_name', 'column_name', 'row_key']);
    expect(findings).to.deep.equal([
      { table_name: 'payment_facts', column_name: 'fact_key', row_key: 'pay_uuid/authorisation_failed/evt_uuid' },
      { table_name: 'payments', column_name: 'external_id', row_key: 'pay_adyen_ref' },
      { table_name: 'webhook_inbox', column_name: 'event_key', row_key: 'evt_adyen_ref' },
      { table_name: 'webhook_inbox', column_name: 'event_key', row_key: 'evt_uuid' },
      { table_name: 'webhook_inbox', column_name: 'payload', row_key: 'evt_adyen_ref' },
    ]);
    // No statement of the migration bound a card number it re-keyed (the facts are updated by row).
    expect(panHits(bindings.join('\n'), PANS.slice(1))).to.deep.equal([]);
    const everything = await Promise.all(
      ['webhook_inbox', 'payments', 'payment_facts', 'card_data_legacy_findings'].map((t) =>
        db.knex.raw(`select t::text as row from ?? t`, [t]),
      ),
    );
    const text = everything
      .flatMap((r: { rows: { row: string }[] }) => r.rows.map((x) => x.row))
      .join('\n')
      .replaceAll(UUID_ID, '');
    // Only the reported Adyen reference is left (it is the gateway's id of a payment a redelivery matches).
    expect(panHits(text.replaceAll('4111111111111111', ''), PANS)).to.deep.equal([]);

    const countAdyen = async (table: string): Promise<number> =>
      Number((await db.knex(table).where({ provider: 'adyen' }).count({ n: '*' }))[0]?.n);
    const svc = await startTestService({ db });
    try {
      const logs = svc.logs();
      expect(logs).to.contain('cardDataFindings');
      expect(panHits(logs.replaceAll('20261209300000', ''), PANS)).to.deep.equal([]);
      // Exactly-once: Adyen redelivers the item whose reference was left: a duplicate, nothing new.
      const item = adyenItem({
        eventCode: 'AUTHORISATION',
        pspReference: '4111111111111111',
        merchantReference: 'o-a',
      });
      const redelivered = await postAdyen(svc, [item]);
      expect(redelivered.status).to.equal(200);
      expect(await countAdyen('webhook_inbox')).to.equal(2);
      expect(await countAdyen('payments')).to.equal(2);
      // The platform's re-keyed id can never be matched again: its redelivery is refused at the edge.
      const event = platformEvent({ paymentId: '5105-1051-0510-5100' });
      const refused = await postPlatform(svc, event, { id: 'msg-4111.1111.1111.1111' });
      expect(refused.status).to.equal(422);
      expect(refused.body.code).to.equal('CARD_NUMBER_NOT_ALLOWED');
    } finally {
      await svc.close();
    }
  });

  it('when legacy audit entries hold card numbers in actor, origin or resource, then each is recorded by sequence and column, never by value', async () => {
    await db.knex.transaction(async (trx) => {
      await trx.raw('set local session_replication_role = replica');
      await trx('audit_events').insert({
        seq: 1,
        id: 'aud_legacyaaaaaaaaaaaaaaaaaaaa',
        occurred_at: new Date(),
        actor: 'client-a',
        actor_type: 'client',
        action: 'card.detokenise',
        outcome: 'success',
        // The old request-id filter let this through from X-Request-Id.
        origin: 'req:4111..1111..1111..1111 ip:127.0.0.1',
        resource: 'tok_5555_5555_5555_4444',
        details: JSON.stringify({}),
        prev_hash: 'genesis',
        hash: 'legacy',
      });
    });
    await migrateToLatest(db.knex);
    const findings = await db
      .knex('card_data_legacy_findings')
      .select('table_name', 'column_name', 'row_key')
      .orderBy(['column_name']);
    expect(findings).to.deep.equal([
      { table_name: 'audit_events', column_name: 'origin', row_key: '1' },
      { table_name: 'audit_events', column_name: 'resource', row_key: '1' },
    ]);
  });

  it('when anyone updates, deletes or truncates a finding, then the database refuses it (M3: no silent clearing)', async () => {
    await plantAsOldRelease(db);
    await migrateToLatest(db.knex);
    const before = await db.knex('card_data_legacy_findings').count({ n: '*' }).first();
    expect(Number(before?.n)).to.be.greaterThan(0);
    for (const attempt of [
      () => db.knex('card_data_legacy_findings').del(),
      () => db.knex('card_data_legacy_findings').update({ row_key: 'x' }),
      () => db.knex.raw('truncate card_data_legacy_findings'),
    ]) {
      const error = await attempt().then(
        () => undefined,
        (e: Error) => e,
      );
      expect(error?.message).to.match(/card_data_legacy_findings is append-only: (DELETE|UPDATE|TRUNCATE) refused/);
    }
    expect(await db.knex('card_data_legacy_findings').count({ n: '*' }).first()).to.deep.equal(before);
  });

  it('when rolled back, then the findings table goes and the re-keyed values stay re-keyed', async () => {
    await plantAsOldRelease(db);
    await migrateToLatest(db.knex);
    await db.knex.migrate.down({ ...migrationConfig(), name: MIGRATION });
    expect(await db.knex.schema.hasTable('card_data_legacy_findings')).to.equal(false);
    expect((await db.knex('payments').where({ id: 'pay_platform' }).first()).external_id).to.match(/~[\w-]{22}$/);
  });
});

describe('legacyReferenceVerdict (M1: exceptions no wider than what the handlers accept)', () => {
  it('when a UUID-shaped value holds a card number, then only the platform webhook-id is reported; every other id is re-keyed', () => {
    expect(legacyReferenceVerdict('platform', PLATFORM_UUID, 'webhook-id')).to.equal('report');
    expect(legacyReferenceVerdict('platform', UUID_ID, 'webhook-id')).to.equal('report');
    expect(legacyReferenceVerdict('platform', PLATFORM_UUID)).to.equal('rekey');
    expect(legacyReferenceVerdict('stripe', PLATFORM_UUID)).to.equal('rekey');
    expect(legacyReferenceVerdict('stripe', PLATFORM_UUID, 'webhook-id')).to.equal('rekey');
    expect(legacyReferenceVerdict('platform', '0b5e6c1a-aaaa-bbbb-cccc-aabbccddeeff', 'webhook-id')).to.equal('clean');
  });

  it('when a fact key is total:<card number>, then it is re-keyed for every provider', () => {
    for (const provider of ['stripe', 'platform', 'adyen']) {
      expect(legacyReferenceVerdict(provider, 'total:411111111117'), provider).to.equal('rekey');
    }
    expect(legacyReferenceVerdict('stripe', 'total:1500')).to.equal('clean');
  });
});
