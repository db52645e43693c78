/**
 * A UUID webhook-id that reads as a card number is stored as its keyed digest (issue 16). An earlier
 * release stored such ids as sent; a redelivery of one of those must still be a duplicate, never a
 * second event under the digest (webhook-handlers.ts asks PaymentService.holdsDelivery).
 */
import { expect } from 'chai';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { paymentId, platformEvent, postPlatform } from '../support/webhooks.js';

const CRAFTED = '41111111-1111-1111-abcd-ef0123456789'; // its first groups read 4111111111111111

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
});
