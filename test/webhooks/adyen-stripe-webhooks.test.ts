import { expect } from 'chai';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import {
  WEBHOOK_SECRETS,
  adyenItem,
  postAdyen,
  postStripe,
  stripeChargeEvent,
  stripeHeader,
  webhookEnv,
} from '../support/webhooks.js';

let sequence = 0;
/** An Adyen PSP reference: 16 alphanumerics (the adapter rejects anything else). */
const psp = (): string =>
  `88${Date.now().toString(36).toUpperCase()}${String(++sequence).padStart(6, '0')}`.slice(0, 16);

describe('Adyen and Stripe webhooks', function () {
  this.timeout(60_000);
  let svc: TestService;

  before(async () => {
    svc = await startTestService({ env: await testEnv(webhookEnv('both')) });
  });
  after(async () => svc.close());

  const payment = (provider: string, externalId: string) =>
    svc.db.knex('payments').where({ provider, external_id: externalId }).first();
  const inboxCount = async (): Promise<number> => Number((await svc.db.knex('webhook_inbox').count({ n: '*' }))[0]?.n);

  describe('Adyen (HMAC per item, hex key)', () => {
    it('when an item is signed with the Adyen library, then 200 [accepted] and the payment is authorised online', async () => {
      const ref = psp();
      const res = await postAdyen(svc, [
        adyenItem({
          eventCode: 'AUTHORISATION',
          pspReference: ref,
          additionalData: { alias: 'A100000000000001', shopperInteraction: 'Ecommerce' },
        }),
      ]);
      expect(res.status).to.equal(200);
      expect(res.text).to.equal('[accepted]');
      expect(await payment('adyen', ref)).to.include({ state: 'authorised', channel: 'online', currency: 'EUR' });
    });

    it('when signed with the second (new) key during a rotation, then accepted', async () => {
      const ref = psp();
      const res = await postAdyen(svc, [
        adyenItem({ eventCode: 'AUTHORISATION', pspReference: ref }, WEBHOOK_SECRETS.adyen[1]),
      ]);
      expect(res.status).to.equal(200);
      const row = await svc.db
        .knex('webhook_inbox')
        .where({ provider: 'adyen', event_key: `${ref}:AUTHORISATION:true` })
        .first();
      expect(row.secret_index).to.equal(1);
    });

    it('when the key is used as text instead of hex-decoded, then 401 (the classic Adyen mistake, refused)', async () => {
      const ref = psp();
      const { createHmac } = await import('node:crypto');
      const item = adyenItem({ eventCode: 'AUTHORISATION', pspReference: ref });
      const data = [ref, '', 'TestMerchant', `order-${ref}`, '10000', 'EUR', 'AUTHORISATION', 'true'].join(':');
      const wrong = createHmac('sha256', WEBHOOK_SECRETS.adyen[0]).update(data).digest('base64');
      const res = await postAdyen(svc, [{ ...item, additionalData: { hmacSignature: wrong } }]);
      expect(res.status).to.equal(401);
      expect(res.body.code).to.equal('WEBHOOK_SIGNATURE_INVALID');
    });

    it('when one item of a batch is tampered with, then 401 and none of the batch is stored', async () => {
      const before = await inboxCount();
      const good = adyenItem({ eventCode: 'AUTHORISATION', pspReference: psp() });
      const bad = {
        ...adyenItem({ eventCode: 'AUTHORISATION', pspReference: psp() }),
        amount: { value: 1, currency: 'EUR' },
      };
      const res = await postAdyen(svc, [good, bad]);
      expect(res.status).to.equal(401);
      expect(await inboxCount()).to.equal(before);
    });

    it('when an item has no signature, then 401 WEBHOOK_SIGNATURE_MISSING', async () => {
      const item = adyenItem({ eventCode: 'AUTHORISATION', pspReference: psp() });
      const res = await postAdyen(svc, [{ ...item, additionalData: {} }]);
      expect(res.status).to.equal(401);
      expect(res.body.code).to.equal('WEBHOOK_SIGNATURE_MISSING');
    });

    it('when the event code is unknown, then it is stored, acknowledged and has no effect', async () => {
      const ref = psp();
      const res = await postAdyen(svc, [adyenItem({ eventCode: 'REPORT_AVAILABLE', pspReference: ref })]);
      expect(res.status).to.equal(200);
      const row = await svc.db
        .knex('webhook_inbox')
        .where({ provider: 'adyen', event_key: `${ref}:REPORT_AVAILABLE:true` })
        .first();
      expect(row).to.include({ state: 'ignored', event_type: 'REPORT_AVAILABLE' });
      expect(row.payload.additionalData).not.to.have.property('hmacSignature');
    });

    it('when the same notification is redelivered, then it is acknowledged again and applied once', async () => {
      const ref = psp();
      const item = adyenItem({ eventCode: 'AUTHORISATION', pspReference: ref });
      await postAdyen(svc, [item]);
      await postAdyen(svc, [item]);
      const rows = await svc.db
        .knex('webhook_inbox')
        .where({ provider: 'adyen', event_key: `${ref}:AUTHORISATION:true` });
      expect(rows).to.have.length(1);
    });

    it('when AUTHORISATION success=false follows success=true, then the payment stays authorised', async () => {
      const ref = psp();
      await postAdyen(svc, [adyenItem({ eventCode: 'AUTHORISATION', pspReference: ref })]);
      await postAdyen(svc, [adyenItem({ eventCode: 'AUTHORISATION', pspReference: ref, success: 'false' })]);
      expect((await payment('adyen', ref)).state).to.equal('authorised');
    });

    it('when CANCEL_OR_REFUND arrives for an uncaptured payment, then cancelled; for a captured one, then refunded', async () => {
      const a = psp();
      await postAdyen(svc, [adyenItem({ eventCode: 'AUTHORISATION', pspReference: a })]);
      await postAdyen(svc, [adyenItem({ eventCode: 'CANCEL_OR_REFUND', pspReference: psp(), originalReference: a })]);
      expect((await payment('adyen', a)).state).to.equal('cancelled');

      const b = psp();
      await postAdyen(svc, [adyenItem({ eventCode: 'AUTHORISATION', pspReference: b })]);
      await postAdyen(svc, [adyenItem({ eventCode: 'CAPTURE', pspReference: psp(), originalReference: b })]);
      await postAdyen(svc, [adyenItem({ eventCode: 'CANCEL_OR_REFUND', pspReference: psp(), originalReference: b })]);
      expect(await payment('adyen', b)).to.include({ state: 'refunded', refunded_amount: 10_000 });
    });

    it('when partial refunds (each with its own pspReference) and a failed one arrive before the capture, then they settle on it', async () => {
      const ref = psp();
      const r1 = psp();
      const r2 = psp();
      const items = [
        adyenItem({
          eventCode: 'REFUND',
          pspReference: r1,
          originalReference: ref,
          amount: { value: 2_000, currency: 'EUR' },
        }),
        adyenItem({
          eventCode: 'REFUND',
          pspReference: r2,
          originalReference: ref,
          amount: { value: 3_000, currency: 'EUR' },
        }),
        adyenItem({
          eventCode: 'REFUND_FAILED',
          pspReference: r2,
          originalReference: ref,
          amount: { value: 3_000, currency: 'EUR' },
        }),
        adyenItem({ eventCode: 'CAPTURE', pspReference: psp(), originalReference: ref }),
        adyenItem({ eventCode: 'AUTHORISATION', pspReference: ref }),
      ];
      for (const item of items) expect((await postAdyen(svc, [item])).status).to.equal(200);
      expect(await payment('adyen', ref)).to.include({ state: 'partially_refunded', refunded_amount: 2_000 });
    });

    it('when a POS terminal sends only AUTHORISATION, then the payment is captured in store', async () => {
      const ref = psp();
      await postAdyen(svc, [
        adyenItem({
          eventCode: 'AUTHORISATION',
          pspReference: ref,
          additionalData: { shopperInteraction: 'POS', store: 'ST-1', terminalId: 'V400m-1' },
        }),
      ]);
      expect(await payment('adyen', ref)).to.include({
        state: 'captured',
        channel: 'in_store',
        store_id: 'ST-1',
        terminal_id: 'V400m-1',
      });
    });

    it('when a chargeback and its reversal arrive, then charged back, then captured again', async () => {
      const ref = psp();
      await postAdyen(svc, [
        adyenItem({ eventCode: 'AUTHORISATION', pspReference: ref, additionalData: { shopperInteraction: 'POS' } }),
      ]);
      await postAdyen(svc, [adyenItem({ eventCode: 'CHARGEBACK', pspReference: psp(), originalReference: ref })]);
      expect((await payment('adyen', ref)).state).to.equal('charged_back');
      await postAdyen(svc, [
        adyenItem({ eventCode: 'CHARGEBACK_REVERSED', pspReference: psp(), originalReference: ref }),
      ]);
      expect(await payment('adyen', ref)).to.include({ state: 'captured', charged_back_amount: 0 });
    });
  });

  describe('Adyen with HTTP Basic auth configured', () => {
    let basic: TestService;
    before(async () => {
      basic = await startTestService({ env: await testEnv({ WEBHOOK_ADYEN_BASIC_AUTH: 'adyen:s3cret-pass' }) });
    });
    after(async () => basic.close());

    it('when the credentials are missing or wrong, then 401 with a Basic challenge; when right, then accepted', async () => {
      const item = adyenItem({ eventCode: 'AUTHORISATION', pspReference: psp() });
      const none = await postAdyen(basic, [item]);
      expect(none.status).to.equal(401);
      expect(none.body.code).to.equal('WEBHOOK_BASIC_AUTH_INVALID');
      expect(none.headers.get('www-authenticate')).to.match(/^Basic /);
      const wrong = await postAdyen(basic, [item], {
        authorization: `Basic ${Buffer.from('adyen:nope').toString('base64')}`,
      });
      expect(wrong.status).to.equal(401);
      const right = await postAdyen(basic, [item], {
        authorization: `Basic ${Buffer.from('adyen:s3cret-pass').toString('base64')}`,
      });
      expect(right.status).to.equal(200);
    });
  });

  describe('Stripe (Stripe-Signature, every v1)', () => {
    it('when signed by the stripe library, then 200 and a captured online payment', async () => {
      const event = stripeChargeEvent('charge.succeeded', { id: `ch_${psp()}` });
      const res = await postStripe(svc, event);
      expect(res.status).to.equal(200);
      const row = await payment('stripe', (event['data'] as { object: { id: string } }).object.id);
      expect(row).to.include({ state: 'captured', channel: 'online', currency: 'USD', card_last4: '4242' });
    });

    it('when the header carries a v1 per secret (rotation) and only the second is known, then accepted', async () => {
      const body = JSON.stringify(stripeChargeEvent('charge.succeeded', { id: `ch_${psp()}` }));
      const t = Math.floor(Date.now() / 1000);
      const unknown = stripeHeader(body, 'whsec_unknownunknownunknown00', t).split(',')[1];
      const known = stripeHeader(body, WEBHOOK_SECRETS.stripe[1], t).split(',')[1];
      const res = await postStripe(svc, JSON.parse(body), { header: `t=${t},${unknown},${known}` });
      expect(res.status).to.equal(200);
    });

    it('when the timestamp is older than the tolerance, then 401 WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE', async () => {
      const res = await postStripe(svc, stripeChargeEvent('charge.succeeded', { id: `ch_${psp()}` }), {
        timestamp: Math.floor(Date.now() / 1000) - 400,
      });
      expect(res.status).to.equal(401);
      expect(res.body.code).to.equal('WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE');
    });

    it('when signed with an unknown secret, then 401; without the header, then 401 WEBHOOK_SIGNATURE_MISSING', async () => {
      const event = stripeChargeEvent('charge.succeeded', { id: `ch_${psp()}` });
      expect((await postStripe(svc, event, { secret: 'whsec_notthesecretatall0000' })).status).to.equal(401);
      const missing = await svc.request('POST', '/v1/webhooks/stripe', {
        body: JSON.stringify(event),
        headers: { 'content-type': 'application/json' },
      });
      expect(missing.body.code).to.equal('WEBHOOK_SIGNATURE_MISSING');
    });

    it('when a card-present charge and an online charge share a fingerprint, then one card, one shopper, both channels', async () => {
      const fingerprint = `fp${psp()}`;
      const store = stripeChargeEvent('charge.succeeded', { id: `ch_${psp()}`, fingerprint, present: true });
      const online = stripeChargeEvent('charge.succeeded', { id: `ch_${psp()}`, fingerprint, captured: false });
      await postStripe(svc, store);
      await postStripe(svc, online);
      const a = await payment('stripe', (store['data'] as { object: { id: string } }).object.id);
      const b = await payment('stripe', (online['data'] as { object: { id: string } }).object.id);
      expect(a).to.include({ channel: 'in_store', state: 'captured' });
      expect(b).to.include({ channel: 'online', state: 'authorised' });
      expect(a.card_token).to.equal(b.card_token);
      expect(a.shopper_ref).to.equal(b.shopper_ref);
    });

    it('when refunds and a won dispute arrive, then the cumulative refund and the reversal are applied', async () => {
      const id = `ch_${psp()}`;
      await postStripe(svc, stripeChargeEvent('charge.succeeded', { id }));
      await postStripe(svc, stripeChargeEvent('charge.refunded', { id, refunded: 1_000 }));
      await postStripe(svc, stripeChargeEvent('charge.refunded', { id, refunded: 1_500 }));
      expect(await payment('stripe', id)).to.include({ state: 'partially_refunded', refunded_amount: 1_500 });
      const dispute = (status: string, type: string) => ({
        id: `evt_${psp()}`,
        type,
        created: Math.floor(Date.now() / 1000),
        data: { object: { id: `du_${id}`, object: 'dispute', charge: id, amount: 3_500, currency: 'usd', status } },
      });
      await postStripe(svc, dispute('needs_response', 'charge.dispute.created'));
      expect((await payment('stripe', id)).state).to.equal('charged_back');
      await postStripe(svc, dispute('won', 'charge.dispute.closed'));
      expect((await payment('stripe', id)).state).to.equal('partially_refunded');
    });

    it('when the event type is one the service does not use, then stored and acknowledged', async () => {
      const event = {
        id: `evt_${psp()}`,
        type: 'customer.created',
        created: Math.floor(Date.now() / 1000),
        data: { object: { id: 'cus_1' } },
      };
      const res = await postStripe(svc, event);
      expect(res.status).to.equal(200);
      expect(res.body.state).to.equal('ignored');
    });
  });
});
