import { expect } from 'chai';
import type { PaymentTransitionEvent } from '../../src/payments/payment-service.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { ALL_TEST_PANS, TEST_PANS } from '../support/pans.js';
import { exportAllTables, findPans } from '../cards/leak.test.js';
import { adyenItem, paymentId, platformEvent, postAdyen, postPlatform } from '../support/webhooks.js';

const PAR = 'V0010013816180398947592732139';

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [[...items]];
  return items.flatMap((item, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]),
  );
}

describe('payments from webhooks', function () {
  this.timeout(120_000);
  let svc: TestService;
  let admin: string;
  const transitions: PaymentTransitionEvent[] = [];

  before(async () => {
    svc = await startTestService({
      paymentListeners: [
        async (trx, events) => {
          // Inside the payment's transaction: what a listener writes commits or rolls back with it.
          await trx.raw('select 1');
          transitions.push(...events);
        },
      ],
    });
    admin = await signToken({ scope: 'loyalty:admin' });
  });
  after(async () => svc.close());

  const paymentRow = (externalId: string) =>
    svc.db.knex('payments').where({ provider: 'platform', external_id: externalId }).first();
  const purchases = (shopper: string, token: string, query = '') =>
    svc.request('GET', `/v1/shoppers/${shopper}/purchases${query}`, { token });

  it('every arrival order of authorise, capture, partial refund, refund and chargeback ends in the same state', async () => {
    const finals = new Set<string>();
    const orders = permutations(['auth', 'capture', 'refund1', 'refund2', 'chargeback'] as const);
    for (const order of orders) {
      const id = paymentId('perm');
      const events = {
        auth: platformEvent({ paymentId: id, card: { pan: TEST_PANS.visa[1] } }),
        capture: platformEvent({ type: 'payment.captured', paymentId: id }),
        refund1: platformEvent({ type: 'payment.refunded', paymentId: id, refund: { id: `${id}-r1`, amount: 3_000 } }),
        refund2: platformEvent({ type: 'payment.refunded', paymentId: id, refund: { id: `${id}-r2`, amount: 2_000 } }),
        chargeback: platformEvent({
          type: 'payment.chargeback',
          paymentId: id,
          chargeback: { id: `${id}-cb`, amount: 5_000 },
        }),
      };
      for (const step of order) {
        const res = await postPlatform(svc, events[step]);
        expect(res.status, step).to.equal(200);
      }
      const row = await paymentRow(id);
      finals.add(
        JSON.stringify([
          row.state,
          row.authorised_amount,
          row.captured_amount,
          row.refunded_amount,
          row.charged_back_amount,
        ]),
      );
      // Whatever was parked waiting for the authorisation is applied once it arrived.
      const parked = await svc.db.knex('webhook_inbox').where({ payment_id: row.id, state: 'parked' });
      expect(parked).to.have.length(0);
    }
    expect([...finals]).to.deep.equal([JSON.stringify(['charged_back', 10_000, 10_000, 5_000, 5_000])]);
  });

  it('when a capture arrives before its authorisation, then it is parked, listed, and applied when the parent arrives', async () => {
    const id = paymentId('parked');
    const capture = await postPlatform(svc, platformEvent({ type: 'payment.captured', paymentId: id }));
    expect(capture.body.state).to.equal('parked');
    const listed = await svc.request('GET', '/v1/admin/webhooks/inbox?state=parked', { token: admin });
    expect(listed.status).to.equal(200);
    expect(listed.body.items.map((i: { id: string }) => i.id)).to.include(capture.body.eventId);
    await postPlatform(svc, platformEvent({ paymentId: id, card: { pan: TEST_PANS.visa[2] } }));
    expect((await paymentRow(id)).state).to.equal('captured');
    const after = await svc.db.knex('webhook_inbox').where({ id: capture.body.eventId }).first('state');
    expect(after.state).to.equal('applied');
  });

  it('when a failed authorisation arrives after a successful one, then the payment stays authorised', async () => {
    const id = paymentId('fail-after');
    await postPlatform(svc, platformEvent({ paymentId: id, card: { pan: TEST_PANS.mastercard[1] } }));
    const res = await postPlatform(svc, platformEvent({ type: 'payment.authorisation_failed', paymentId: id }));
    expect(res.status).to.equal(200);
    expect((await paymentRow(id)).state).to.equal('authorised');
  });

  it('when an in-store (POS) payment sends only its authorisation, then it is captured (auto-capture)', async () => {
    const id = paymentId('pos');
    await postPlatform(
      svc,
      platformEvent({ paymentId: id, channel: 'in_store', storeId: 'S-9', card: { pan: TEST_PANS.amex[0] } }),
    );
    expect(await paymentRow(id)).to.include({ state: 'captured', captured_amount: 10_000, store_id: 'S-9' });
  });

  it('when partial refunds add up beyond the capture, then the refunded amount never exceeds it', async () => {
    const id = paymentId('over');
    await postPlatform(
      svc,
      platformEvent({ paymentId: id, channel: 'in_store', card: { pan: TEST_PANS.discover[0] } }),
    );
    for (const n of [1, 2, 3]) {
      await postPlatform(
        svc,
        platformEvent({ type: 'payment.refunded', paymentId: id, refund: { id: `${id}-${n}`, amount: 4_000 } }),
      );
    }
    expect(await paymentRow(id)).to.include({ state: 'refunded', refunded_amount: 10_000 });
  });

  it('when a refund is in another currency, then the event is stored as failed with its code and acknowledged', async () => {
    const id = paymentId('ccy');
    await postPlatform(svc, platformEvent({ paymentId: id, channel: 'in_store', card: { pan: TEST_PANS.jcb[0] } }));
    const res = await postPlatform(
      svc,
      platformEvent({
        type: 'payment.refunded',
        paymentId: id,
        currency: 'USD',
        refund: { id: `${id}-r`, amount: 100 },
      }),
    );
    expect(res.status).to.equal(200);
    expect(res.body.state).to.equal('failed');
    const listed = await svc.request('GET', '/v1/admin/webhooks/inbox?state=failed', { token: admin });
    const item = listed.body.items.find((i: { id: string }) => i.id === res.body.eventId);
    expect(item).to.include({ errorCode: 'PAYMENT_CURRENCY_MISMATCH', state: 'failed' });
    // A replay is audited and idempotent: still failed, nothing applied twice.
    const replay = await svc.request('POST', `/v1/admin/webhooks/inbox/${res.body.eventId}/replay`, { token: admin });
    expect(replay.status).to.equal(200);
    expect(replay.body).to.include({ state: 'failed', replays: 1 });
    expect((await paymentRow(id)).refunded_amount).to.equal(0);
  });

  it('when an applied event is replayed, then nothing changes and no transition is emitted again', async () => {
    const id = paymentId('replay');
    const res = await postPlatform(svc, platformEvent({ paymentId: id, card: { pan: TEST_PANS.visa[3] } }));
    const before = transitions.length;
    const replay = await svc.request('POST', `/v1/admin/webhooks/inbox/${res.body.eventId}/replay`, { token: admin });
    expect(replay.body).to.include({ state: 'applied', replays: 1 });
    expect(transitions.length).to.equal(before);
  });

  it('when the effect of a stored event is missing (a restore that lost it, say), then its replay applies it again', async () => {
    const id = paymentId('replay-missing');
    await postPlatform(svc, platformEvent({ paymentId: id, card: { pan: TEST_PANS.jcb[0] } }));
    const capture = await postPlatform(svc, platformEvent({ type: 'payment.captured', paymentId: id }));
    const { id: paymentRef } = await paymentRow(id);
    await svc.db.knex('payment_facts').where({ payment_id: paymentRef, kind: 'captured' }).delete();
    await svc.db.knex('payments').where({ id: paymentRef }).update({ state: 'authorised', captured_amount: 0 });
    const replay = await svc.request('POST', `/v1/admin/webhooks/inbox/${capture.body.eventId}/replay`, {
      token: admin,
    });
    expect(replay.body).to.include({ state: 'applied', replays: 1 });
    expect(await paymentRow(id)).to.include({ state: 'captured', captured_amount: 10_000 });
    expect(
      await svc.db.knex('payment_facts').where({ payment_id: paymentRef, kind: 'captured' }).select('inbox_id'),
    ).to.deep.equal([{ inbox_id: capture.body.eventId }]);
  });

  it('when the same payment gets concurrent events, then each transition is emitted exactly once', async () => {
    const id = paymentId('concurrent');
    const events = [
      platformEvent({ paymentId: id, card: { pan: TEST_PANS.mastercard[2] } }),
      platformEvent({ type: 'payment.captured', paymentId: id }),
      platformEvent({ type: 'payment.refunded', paymentId: id, refund: { id: `${id}-r`, amount: 1_000 } }),
    ];
    const deliveries = events.flatMap((e) => [e, e, e]);
    await Promise.all(deliveries.map((e) => postPlatform(svc, e)));
    const row = await paymentRow(id);
    const forPayment = transitions.filter((t) => t.paymentId === row.id);
    const sum = (k: 'authorised' | 'captured' | 'refunded') => forPayment.reduce((n, t) => n + t.delta[k], 0);
    expect({ authorised: sum('authorised'), captured: sum('captured'), refunded: sum('refunded') }).to.deep.equal({
      authorised: 10_000,
      captured: 10_000,
      refunded: 1_000,
    });
    expect(row.state).to.equal('partially_refunded');
  });

  describe('one shopper across channels', () => {
    it('when an online payment has the PAN and an in-store one the same card by PAR, then both are one shopper', async () => {
      const pan = TEST_PANS.mastercard[0];
      // The card is known online by PAN; its PAR gets attached (as a checkout would after a network lookup).
      const tokenised = await svc.request('POST', '/v1/tokens', {
        token: await signToken({ scope: 'tokens:write' }),
        json: { pan },
      });
      const card = tokenised.body.token as string;
      const attach = await svc.request('POST', `/v1/tokens/${card}/identifiers`, {
        token: await signToken({ scope: 'tokens:write' }),
        json: { par: PAR },
      });
      expect(attach.status).to.be.oneOf([200, 201]);
      const online = paymentId('online');
      const store = paymentId('store');
      await postPlatform(svc, platformEvent({ paymentId: online, card: { pan }, amount: 2_500 }));
      await postPlatform(
        svc,
        platformEvent({ paymentId: store, channel: 'in_store', storeId: 'LDN-1', card: { par: PAR }, amount: 4_200 }),
      );
      const shopper = tokenised.body.shopperReference as string;
      const mine = await signToken({ scope: 'loyalty:read', shopperRef: shopper });
      const res = await purchases(shopper, mine);
      expect(res.status).to.equal(200);
      const byRef = new Map(res.body.items.map((p: { gatewayReference: string }) => [p.gatewayReference, p]));
      expect(byRef.get(online)).to.include({
        channel: 'online',
        state: 'authorised',
        cardToken: card,
        last4: pan.slice(-4),
      });
      expect(byRef.get(store)).to.include({
        channel: 'in_store',
        state: 'captured',
        storeId: 'LDN-1',
        cardToken: card,
      });
      expect(res.text).not.to.contain(pan);
    });

    it('when an Adyen POS payment carries a PAR and an alias, then it lands on the PAR’s shopper and links the alias', async () => {
      const psp = `PSP${Date.now()}`;
      const res = await postAdyen(svc, [
        adyenItem({
          eventCode: 'AUTHORISATION',
          pspReference: psp,
          additionalData: {
            PaymentAccountReference: PAR,
            alias: 'H167852639363479',
            shopperInteraction: 'POS',
            store: 'AMS-2',
            cardSummary: '4444',
          },
        }),
      ]);
      expect(res.status).to.equal(200);
      expect(res.text).to.equal('[accepted]');
      const payment = await svc.db.knex('payments').where({ provider: 'adyen', external_id: psp }).first();
      const byPar = await svc.db.knex('payments').where({ provider: 'platform' }).andWhere('store_id', 'LDN-1').first();
      expect(payment.shopper_ref).to.equal(byPar.shopper_ref);
      expect(payment).to.include({ channel: 'in_store', state: 'captured', store_id: 'AMS-2', card_last4: '4444' });
      const byAlias = await svc.request('POST', '/v1/tokens', {
        token: await signToken({ scope: 'tokens:write' }),
        json: { alias: { namespace: 'adyen.alias', value: 'H167852639363479' } },
      });
      expect(byAlias.status).to.equal(200);
      expect(byAlias.body.token).to.equal(payment.card_token);
    });
  });

  describe('purchase history', () => {
    let shopper: string;
    const ids: string[] = [];

    before(async () => {
      const pan = TEST_PANS.visa[0];
      for (let i = 0; i < 5; i++) {
        const id = paymentId('hist');
        ids.push(id);
        await postPlatform(
          svc,
          platformEvent({
            paymentId: id,
            card: { pan },
            channel: i % 2 === 0 ? 'online' : 'in_store',
            occurredAt: new Date(Date.UTC(2026, 9, 1 + i)).toISOString(),
          }),
        );
      }
      shopper = (await paymentRow(ids[0] as string)).shopper_ref;
    });

    it('when listed, then newest first, paged by cursor without gaps or repeats', async () => {
      const token = await signToken({ scope: 'loyalty:read', shopperRef: shopper });
      const first = await purchases(shopper, token, '?limit=2');
      const second = await purchases(shopper, token, `?limit=2&cursor=${first.body.nextCursor}`);
      const third = await purchases(shopper, token, `?limit=2&cursor=${second.body.nextCursor}`);
      const refs = [...first.body.items, ...second.body.items, ...third.body.items].map(
        (p: { gatewayReference: string }) => p.gatewayReference,
      );
      expect(refs.filter((r) => ids.includes(r))).to.deep.equal([...ids].reverse());
    });

    it('when filtered by channel and time range, then only matching purchases', async () => {
      const token = await signToken({ scope: 'loyalty:admin' });
      const res = await purchases(
        shopper,
        token,
        `?channel=in_store&from=2026-10-01T00:00:00Z&to=2026-10-05T00:00:00Z`,
      );
      expect(res.body.items.map((p: { gatewayReference: string }) => p.gatewayReference)).to.deep.equal([
        ids[3],
        ids[1],
      ]);
    });

    it('when another shopper’s token asks, then 404 exactly as for a shopper that does not exist', async () => {
      const other = await signToken({ scope: 'loyalty:read', shopperRef: `shp_${'b'.repeat(26)}` });
      const res = await purchases(shopper, other);
      const missing = await purchases(`shp_${'c'.repeat(26)}`, admin);
      expect(res.status).to.equal(404);
      expect(missing.status).to.equal(404);
      expect(res.body.code).to.equal(missing.body.code);
    });

    it('when a token lacks loyalty scopes, then 403; when the cursor is forged, then 400', async () => {
      expect((await purchases(shopper, await signToken({ scope: 'tokens:write' }))).status).to.equal(403);
      expect((await purchases(shopper, admin, '?cursor=bm90LWEtY3Vyc29y')).status).to.equal(400);
    });
  });

  it('when it is all done, then no PAN is anywhere in the database, including the inbox payloads', async () => {
    const res = await postPlatform(
      svc,
      platformEvent({ paymentId: paymentId('scan'), card: { pan: TEST_PANS.visa[0] } }),
    );
    const found = findPans(await exportAllTables(svc), ALL_TEST_PANS);
    expect(found).to.deep.equal([]);
    expect(findPans(svc.logs(), ALL_TEST_PANS)).to.deep.equal([]);
    const stored = await svc.db.knex('webhook_inbox').where({ id: res.body.eventId }).first('payload');
    expect(JSON.stringify(stored.payload)).to.match(/"card":\{"token":"tok_/);
  });
});
