import { expect } from 'chai';
import type { PaymentTransitionEvent } from '../../src/payments/payment-service.js';
import { signToken } from '../support/auth.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { TEST_PANS } from '../support/pans.js';
import { paymentId, platformEvent, postPlatform } from '../support/webhooks.js';

/**
 * Group commit through the real webhook path: concurrent deliveries share transactions, and that
 * changes nothing about what each delivery does.
 */
describe('payments: group commit of concurrent deliveries', function () {
  this.timeout(120_000);
  let svc: TestService;
  let admin: string;
  const transitions: PaymentTransitionEvent[] = [];
  const poisoned = new Set<string>();

  before(async () => {
    svc = await startTestService({
      env: await testEnv({ PAYMENT_BATCH_MAX: '16', PAYMENT_BATCH_CONCURRENCY: '2' }),
      paymentListeners: [
        async (trx, events) => {
          await trx.raw('select 1');
          // A listener failing for one payment (a bug, a constraint) must fail that delivery only.
          if (events.some((e) => e.cardToken !== null && poisoned.has(e.cardToken)))
            throw new Error('listener refused');
          transitions.push(...events);
        },
      ],
    });
    admin = await signToken({ scope: 'loyalty:admin metrics:read' });
  });
  after(async () => svc.close());

  const metric = async () => ({
    batches: await svc.service.metrics.value('payment_batches_total', {}),
    events: await svc.service.metrics.value('payment_batch_events_total', {}),
    // The histogram of batch sizes counts the same transactions and events.
    histogramCount: await svc.service.metrics.value('payment_batch_size_count', {}),
    histogramSum: await svc.service.metrics.value('payment_batch_size_sum', {}),
  });
  const tokenOf = async (pan: string) => {
    const res = await postPlatform(svc, platformEvent({ paymentId: paymentId('seed'), card: { pan } }));
    expect(res.status).to.equal(200);
    const row = (await svc.db.knex('webhook_inbox').where({ id: res.body.eventId }).first('payload')) as {
      payload: { card: { token: string } };
    };
    return row.payload.card.token;
  };

  it('when forty deliveries arrive at once, then they share transactions and each is applied exactly once', async () => {
    const token = await tokenOf(TEST_PANS.visa[0]);
    const before = await metric();
    const ids = Array.from({ length: 40 }, () => paymentId('batch'));
    const events = ids.map((id, i) => platformEvent({ paymentId: id, amount: 1_000 + i, card: { token } }));
    // Every delivery twice (same webhook-id), all at once: a redelivery lands in another batch.
    const signed = events.map((e, i) => ({ event: e, id: `msg_batch_${process.pid}_${ids[i]}` }));
    const responses = await Promise.all(
      [...signed, ...signed].map(({ event, id }) => postPlatform(svc, event, { id })),
    );
    expect(responses.map((r) => r.status)).to.deep.equal(responses.map(() => 200));
    expect(responses.filter((r) => r.body.duplicate === false)).to.have.length(40);
    expect(responses.filter((r) => r.body.duplicate === true)).to.have.length(40);

    const after = await metric();
    expect(after.events - before.events).to.equal(80);
    expect(after.histogramSum - before.histogramSum).to.equal(80);
    expect(after.histogramCount - before.histogramCount).to.equal(after.batches - before.batches);
    // Fewer transactions than deliveries: batching happened. (Embedded PGlite runs each query on
    // the event loop's thread, so requests reach the inbox one after another and never queue.)
    if (svc.db.kind === 'postgres') expect(after.batches - before.batches).to.be.below(80);

    const rows = (await svc.db.knex('payments').whereIn('external_id', ids).select('*')) as {
      id: string;
      state: string;
      authorised_amount: number;
      card_token: string;
    }[];
    expect(rows).to.have.length(40);
    expect(rows.every((r) => r.state === 'authorised' && r.card_token === token)).to.equal(true);
    const amounts = rows.map((r) => r.authorised_amount).sort((a, b) => a - b);
    expect(amounts).to.deep.equal(ids.map((_, i) => 1_000 + i));
    const inbox = await svc.db
      .knex('webhook_inbox')
      .whereIn(
        'payment_id',
        rows.map((r) => r.id),
      )
      .count({ n: '*' });
    expect(Number(inbox[0]?.n)).to.equal(40);
    const emitted = transitions.filter((t) => rows.some((r) => r.id === t.paymentId));
    expect(emitted).to.have.length(40);
  });

  it('when a stored delivery id comes back with another body among fresh deliveries, then it is a duplicate and changes nothing', async () => {
    const token = await tokenOf(TEST_PANS.visa[1]);
    const id = paymentId('gate');
    const deliveryId = `msg_gate_${process.pid}_${id}`;
    const first = await postPlatform(svc, platformEvent({ paymentId: id, amount: 5_000, card: { token } }), {
      id: deliveryId,
    });
    expect(first.body).to.include({ duplicate: false, state: 'applied' });
    const payment = await svc.db.knex('payments').where({ external_id: id }).first();
    const facts = await svc.db.knex('payment_facts').where({ payment_id: payment.id }).orderBy('kind');
    const before = transitions.length;
    // Same webhook-id, but a capture: were its effects not held back by the inbox conflict, the
    // payment would be captured and a fact added.
    const [replayed, ...others] = await Promise.all([
      postPlatform(svc, platformEvent({ type: 'payment.captured', paymentId: id }), { id: deliveryId }),
      ...Array.from({ length: 12 }, () =>
        postPlatform(svc, platformEvent({ paymentId: paymentId('gate-fresh'), card: { token } })),
      ),
    ]);
    expect(replayed?.body).to.deep.equal({ eventId: first.body.eventId, state: 'applied', duplicate: true });
    expect(others.map((r) => r.body.duplicate)).to.deep.equal(others.map(() => false));
    expect(await svc.db.knex('payments').where({ external_id: id }).first()).to.deep.equal(payment);
    expect(await svc.db.knex('payment_facts').where({ payment_id: payment.id }).orderBy('kind')).to.deep.equal(facts);
    expect(transitions.slice(before).filter((t) => t.paymentId === payment.id)).to.deep.equal([]);
  });

  it('when a batch mixes a new authorisation, a parked capture, its parent and another currency, then each gets its own outcome', async () => {
    const token = await tokenOf(TEST_PANS.mastercard[0]);
    const authorised = paymentId('mix-auth');
    await postPlatform(svc, platformEvent({ paymentId: authorised, card: { token } }));
    const parkedOnly = paymentId('mix-parked');
    const parent = paymentId('mix-parent');
    await postPlatform(svc, platformEvent({ type: 'payment.captured', paymentId: parent }));

    const [fresh, parked, wrongCurrency, parentAuth] = await Promise.all([
      postPlatform(svc, platformEvent({ paymentId: paymentId('mix-new'), card: { token } })),
      postPlatform(svc, platformEvent({ type: 'payment.captured', paymentId: parkedOnly })),
      postPlatform(
        svc,
        platformEvent({
          type: 'payment.refunded',
          paymentId: authorised,
          currency: 'EUR',
          refund: { id: `${authorised}-r`, amount: 100 },
        }),
      ),
      postPlatform(svc, platformEvent({ paymentId: parent, card: { token } })),
    ]);
    expect(fresh.body.state).to.equal('applied');
    expect(parked.body.state).to.equal('parked');
    expect(wrongCurrency.body.state).to.equal('failed');
    expect(parentAuth.body.state).to.equal('applied');

    const byExternal = async (id: string) =>
      (await svc.db.knex('payments').where({ external_id: id }).first('id', 'state', 'captured_amount')) as {
        id: string;
        state: string;
        captured_amount: number;
      };
    expect((await byExternal(parent)).state).to.equal('captured');
    const parentInbox = (await svc.db
      .knex('webhook_inbox')
      .where({ payment_id: (await byExternal(parent)).id })
      .select('state')) as { state: string }[];
    expect(parentInbox.map((r) => r.state)).to.deep.equal(['applied', 'applied']);
    expect((await byExternal(authorised)).state).to.equal('authorised');
    const failed = await svc.request('GET', '/v1/admin/webhooks/inbox?state=failed', { token: admin });
    expect(failed.body.items.map((i: { eventKey: string }) => i.eventKey)).to.include(
      (await svc.db.knex('webhook_inbox').where({ id: wrongCurrency.body.eventId }).first('event_key')).event_key,
    );
  });

  it('when one delivery of a batch fails, then only it fails: the others are committed, it left nothing behind', async () => {
    const good = await tokenOf(TEST_PANS.amex[0]);
    const bad = await tokenOf(TEST_PANS.discover[0]);
    poisoned.add(bad);
    try {
      const goodIds = Array.from({ length: 12 }, () => paymentId('iso-good'));
      const badId = paymentId('iso-bad');
      const responses = await Promise.all([
        ...goodIds.slice(0, 6).map((id) => postPlatform(svc, platformEvent({ paymentId: id, card: { token: good } }))),
        postPlatform(svc, platformEvent({ paymentId: badId, card: { token: bad } })),
        ...goodIds.slice(6).map((id) => postPlatform(svc, platformEvent({ paymentId: id, card: { token: good } }))),
      ]);
      const badResponse = responses[6];
      expect(badResponse?.status).to.equal(500);
      expect(responses.filter((r) => r.status === 200)).to.have.length(12);
      const badPayment = await svc.db.knex('payments').where({ external_id: badId }).first();
      expect(badPayment).to.equal(undefined);
      const goodRows = await svc.db.knex('payments').whereIn('external_id', goodIds).select('state');
      expect(goodRows.map((r: { state: string }) => r.state)).to.deep.equal(goodIds.map(() => 'authorised'));
    } finally {
      poisoned.delete(bad);
    }
  });
});
