/**
 * Migrations 20261206000100_card_data_guard and 20261206000150_card_data_cleanup: rows stored before
 * the guard, holding PANs in free text and raw gateway payloads, are re-projected and masked; the
 * guard is in force afterwards; both roll back.
 */
import { expect } from 'chai';
import { migrateToLatest, migrationConfig } from '../../src/db/migrations.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { panHits } from '../security/card-data-support.js';

const GUARD = '20261206000100_card_data_guard';
const CLEANUP = '20261206000150_card_data_cleanup';
const PANS = ['4111111111111111', '5555555555554444', '5105105105105100', '6011000990139424'];

describe('migrations 20261206000100/000150: card-data guard and cleanup', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => db.close());

  const down = async (name: string): Promise<void> => {
    const [, rolledBack] = (await db.knex.migrate.down({ ...migrationConfig(), name })) as [number, string[]];
    expect(rolledBack).to.deep.equal([name]);
  };

  it('when applied over rows holding PANs, then inbox, payments and outbox are clean, the guard refuses new ones, and both roll back', async () => {
    await migrateToLatest(db.knex);
    await down(CLEANUP);
    await down(GUARD);
    expect(await db.knex.schema.hasTable('card_data_exempt_columns')).to.equal(false);

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
    await db.knex('webhook_inbox').insert([
      inbox('evt_adyen', 'adyen', '8815000000000001:AUTHORISATION:true', {
        pspReference: '4111111111111111',
        eventCode: 'AUTHORISATION',
        success: 'true',
        merchantAccountCode: 'TestMerchant',
        merchantReference: 'order 5105.1051.0510.5100',
        amount: { value: 1000, currency: 'EUR' },
        additionalData: {
          alias: 'A100000000000001',
          cardHolderName: '6011/0009/9013/9424',
          cardBin: '411111',
          cvc: '737',
          track2: ';5555555555554444=2512101?',
          shopperInteraction: 'Ecommerce',
          cardSummary: '1111',
        },
      }),
      inbox('evt_stripe', 'stripe', 'evt_1', {
        id: 'evt_1',
        type: 'charge.succeeded',
        created: 1,
        data: {
          object: {
            id: 'ch_1',
            amount: 500,
            description: 'card 4111_1111_1111_1111',
            metadata: { order_id: 'o-1', secret_note: '5555 5555 5555 4444' },
            billing_details: { name: '5555555555554444' },
            payment_method_details: {
              type: 'card',
              card: { last4: '4242', fingerprint: 'fp1', number: '4111111111111111' },
            },
          },
        },
      }),
      inbox('evt_platform', 'platform', 'msg_1', {
        type: 'payment.authorised',
        occurredAt: now.toISOString(),
        payment: {
          id: 'p-1',
          merchantReference: '4111-1111-1111-1111',
          amount: { value: 1, currency: 'GBP' },
          channel: 'online',
        },
      }),
    ]);
    await db.knex('payments').insert({
      id: 'pay_dirty',
      provider: 'platform',
      external_id: 'p-1',
      state: 'authorised',
      merchant_reference: 'order 5105.1051.0510.5100',
      store_id: '6011/0009/9013/9424',
      created_at: now,
      updated_at: now,
    });
    await db.knex('outbound_events').insert({
      id: 'oev_dirty',
      type: 'points.available',
      shopper_ref: 'shp_x',
      body: JSON.stringify({ id: 'oev_dirty', data: { note: 'card 4111 1111 1111 1111', points: 5 } }),
      created_at: now,
    });
    await db.knex('idempotency_keys').insert({
      scope: 'redemption:shp_x',
      key: '4111.1111.1111.1111',
      request_hash: 'a',
      status: 201,
      response: JSON.stringify({ reference: '5555-5555-5555-4444' }),
      created_at: now,
      expires_at: now,
    });

    expect(await migrateToLatest(db.knex)).to.deep.equal([GUARD, CLEANUP]);

    const adyen = await db.knex('webhook_inbox').where({ id: 'evt_adyen' }).first();
    expect(adyen.payload).to.deep.equal({
      pspReference: '4111111111111111',
      eventCode: 'AUTHORISATION',
      success: 'true',
      merchantAccountCode: 'TestMerchant',
      merchantReference: 'order [PAN …5100]',
      amount: { value: 1000, currency: 'EUR' },
      additionalData: { shopperInteraction: 'Ecommerce', cardSummary: '1111' },
    });
    expect(adyen.masked).to.include.members([
      '/merchantReference',
      '/additionalData/cardHolderName',
      '/additionalData/cvc',
      '/additionalData/track2',
      '/additionalData/alias',
      '/additionalData/cardBin',
    ]);
    const stripe = await db.knex('webhook_inbox').where({ id: 'evt_stripe' }).first();
    expect(stripe.payload.data.object).to.deep.equal({
      id: 'ch_1',
      amount: 500,
      description: 'card [PAN …1111]',
      metadata: { order_id: 'o-1' },
      payment_method_details: { type: 'card', card: { last4: '4242' } },
    });
    const platform = await db.knex('webhook_inbox').where({ id: 'evt_platform' }).first();
    expect(platform.payload.payment.merchantReference).to.equal('[PAN …1111]');
    expect(await db.knex('payments').where({ id: 'pay_dirty' }).first()).to.include({
      merchant_reference: 'order [PAN …5100]',
      store_id: '[PAN …9424]',
    });
    expect(await db.knex('idempotency_keys').where({ scope: 'redemption:shp_x' })).to.deep.equal([]);

    const rows = await Promise.all(
      ['webhook_inbox', 'payments', 'outbound_events', 'idempotency_keys'].map((t) =>
        db.knex.raw(`select t::text as row from ?? t`, [t]),
      ),
    );
    const text = rows.flatMap((r: { rows: { row: string }[] }) => r.rows.map((x) => x.row)).join('\n');
    // The Adyen reference is exempt by path (a real one is 16 digits): everything else is clean.
    expect(panHits(text.replace(/pspReference\W+4111111111111111/g, ''), PANS)).to.deep.equal([]);

    const refused = await db
      .knex('payments')
      .where({ id: 'pay_dirty' })
      .update({ terminal_id: '4111 1111 1111 1111' })
      .then(
        () => 'updated',
        (e: { code?: string }) => e.code,
      );
    expect(refused).to.equal('23514');

    await down(CLEANUP);
    await down(GUARD);
    await db.knex('payments').where({ id: 'pay_dirty' }).update({ terminal_id: 'T-1' });
    expect(await db.knex.schema.hasColumn('webhook_inbox', 'masked')).to.equal(false);
    expect(await migrateToLatest(db.knex)).to.deep.equal([GUARD, CLEANUP]);
  });
});
