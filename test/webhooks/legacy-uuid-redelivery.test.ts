/**
 * A UUID webhook-id that reads as a card number is stored as its keyed digest (issue 16). An earlier
 * release stored such ids as sent; a redelivery of one of those must still be a duplicate, never a
 * second event under the digest (webhook-handlers.ts asks PaymentService.holdsDelivery).
 */
import { expect } from 'chai';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { paymentId, platformEvent, postPlatform } from '../support/webhooks.js';
import { signToken } from '../support/auth.js';
import { generatePans } from '../support/pans.js';
import { balance, newShopper, payment } from '../loyalty/support.js';

const CRAFTED = '41111111-1111-1111-abcd-ef0123456789'; // its first groups read 4111111111111111
// A junk digit and the 15-digit Amex test number 378282246310005 fill the 16-digit run of its first
// groups; the run itself fails Luhn, so only the UUID rule (12+ digits in a row) catches it.
const CRAFTED_AMEX = '13782822-4631-0005-abcd-0123456789ab';
const DIGEST = /^~[A-Za-z0-9_-]{43}$/;

describe('platform webhook-id stored as sent by an earlier release', function () {
  this.timeout(180_000);
  let svc: TestService;
  before(async () => {
    svc = await startTestService({ env: await testEnv() });
  });
  after(async () => svc.close());

  const counts = async (): Promise<number[]> =>
    Promise.all(
      ['payments', 'webhook_inbox', 'payment_facts'].map(async (table) =>
        Number((await svc.db.knex(table).count({ n: '*' }).first())?.n),
      ),
    );

  it('when a delivery whose card-shaped UUID id was stored raw is redelivered, then it is a duplicate and nothing new is stored', async () => {
    const event = platformEvent({ paymentId: paymentId('legacy-uuid'), type: 'payment.authorisation_failed' });
    const first = await postPlatform(svc, event, { id: CRAFTED });
    expect(first.status, first.text).to.equal(200);
    const row = await svc.db.knex('webhook_inbox').where({ id: first.body.eventId }).first();
    // What an earlier release left: the id as sent (event_key and the fact keyed by it are exempt
    // reference columns, so the database guard lets this through, as it did then).
    await svc.db.knex('payment_facts').where({ fact_key: row.event_key }).update({ fact_key: CRAFTED });
    await svc.db.knex('webhook_inbox').where({ id: row.id }).update({ event_key: CRAFTED });
    const before = await counts();

    const again = await postPlatform(svc, event, { id: CRAFTED });
    expect(again.status, again.text).to.equal(200);
    expect(again.body).to.include({ duplicate: true, eventId: first.body.eventId });
    expect(await counts()).to.deep.equal(before);
  });

  it('when a UUID webhook-id hides a 15-digit Amex number behind a junk digit, then it is stored as its digest, never as sent', async () => {
    const event = platformEvent({ paymentId: paymentId('amex-uuid'), type: 'payment.authorisation_failed' });
    const res = await postPlatform(svc, event, { id: CRAFTED_AMEX });
    expect(res.status, res.text).to.equal(200);
    const row = await svc.db.knex('webhook_inbox').where({ id: res.body.eventId }).first();
    expect(row.event_key).to.match(DIGEST);
    const raw = await svc.db.knex('payment_facts').where({ fact_key: CRAFTED_AMEX });
    expect(raw).to.have.length(0);
  });

  it('when a redemption whose card-shaped UUID Idempotency-Key an earlier release stored as sent is retried, then it replays, never redeems twice', async () => {
    const shopper = await newShopper(svc, generatePans(1, '400000')[0] as string);
    const earned = payment(shopper, { amount: 1_000 });
    await earned.send(svc, { type: 'authorised' });
    await earned.send(svc, { type: 'captured' });
    const token = await signToken({ scope: 'loyalty:redeem', shopperRef: shopper.shopperRef });
    const redeem = () =>
      svc.request('POST', `/v1/shoppers/${shopper.shopperRef}/redemptions`, {
        token,
        headers: { 'idempotency-key': CRAFTED },
        json: { points: 4, reference: 'order-legacy-key' },
      });
    const first = await redeem();
    expect(first.status, first.text).to.equal(201);
    const scope = `redemption:${shopper.shopperRef}`;
    // What an earlier release left: the key as sent (an exempt reference column).
    await svc.db.knex('idempotency_keys').where({ scope }).update({ key: CRAFTED });
    const again = await redeem();
    expect(again.status, again.text).to.equal(201);
    expect(again.headers.get('idempotent-replayed')).to.equal('true');
    expect((await balance(svc, shopper.shopperRef)).available).to.equal(6);
    expect(await svc.db.knex('idempotency_keys').where({ scope })).to.have.length(1);
  });

  describe('when an admin replays a platform inbox row an earlier release keyed by a card-shaped UUID', () => {
    /**
     * A chargeback without its own id is keyed by its delivery. Delivered today under a card-shaped
     * UUID it is keyed by the digest; the row is then turned into what an earlier release left.
     */
    async function legacyChargeback(crafted: string): Promise<{ inboxId: string; paymentRowId: string }> {
      const id = paymentId('legacy-replay');
      expect((await postPlatform(svc, platformEvent({ paymentId: id }))).status).to.equal(200);
      const res = await postPlatform(svc, platformEvent({ paymentId: id, type: 'payment.chargeback' }), {
        id: crafted,
      });
      expect(res.status, res.text).to.equal(200);
      const row = await svc.db.knex('webhook_inbox').where({ id: res.body.eventId }).first();
      expect(row.event_key).to.match(DIGEST);
      await svc.db.knex('webhook_inbox').where({ id: row.id }).update({ event_key: crafted });
      return { inboxId: row.id as string, paymentRowId: row.payment_id as string };
    }
    const chargebacks = (paymentRowId: string) =>
      svc.db.knex('payment_facts').where({ payment_id: paymentRowId, kind: 'chargeback' }).pluck('fact_key');
    const replay = async (inboxId: string) =>
      svc.request('POST', `/v1/admin/webhooks/inbox/${inboxId}/replay`, {
        token: await signToken({ scope: 'loyalty:admin' }),
      });

    it('when the row was never applied, then the replayed fact is keyed by the digest, never by the raw id', async () => {
      const crafted = '51051051-0510-5100-abcd-ef0123456789'; // first groups: 5105105105105100
      const { inboxId, paymentRowId } = await legacyChargeback(crafted);
      // Never applied: no fact, the row failed.
      await svc.db.knex('payment_facts').where({ inbox_id: inboxId }).delete();
      await svc.db
        .knex('webhook_inbox')
        .where({ id: inboxId })
        .update({ state: 'failed', error_code: 'PAYMENT_UNKNOWN', applied_at: null });
      const res = await replay(inboxId);
      expect(res.status, res.text).to.equal(200);
      const keys = await chargebacks(paymentRowId);
      expect(keys).to.have.length(1);
      expect(keys[0]).to.match(DIGEST);
      expect(await svc.db.knex('payment_facts').where({ fact_key: crafted })).to.have.length(0);
    });

    it('when the row was applied (its fact keyed by the raw id), then the replay writes nothing: no second chargeback under the digest', async () => {
      const crafted = '55555555-5555-4444-abcd-ef0123456789'; // first groups: 5555555555554444
      const { inboxId, paymentRowId } = await legacyChargeback(crafted);
      await svc.db.knex('payment_facts').where({ inbox_id: inboxId }).update({ fact_key: crafted });
      const res = await replay(inboxId);
      expect(res.status, res.text).to.equal(200);
      expect(await chargebacks(paymentRowId)).to.deep.equal([crafted]);
    });
  });
});
