/**
 * Outbound events end to end: ledger changes through the real API and webhooks, the outbox in the
 * real database, a dispatcher driven round by round on a skipping clock, receivers mocked with nock
 * that verify every delivery with the `standardwebhooks` library.
 */
import { expect } from 'chai';
import nock from 'nock';
import type { Knex } from 'knex';
import { Webhook } from 'standardwebhooks';
import { EventDispatcher, type ClaimedDelivery } from '../../src/events/dispatcher.js';
import { postWebhook } from '../../src/events/http-sender.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { postPlatform } from '../support/webhooks.js';
import { balance, newShopper, payment, redeem, type Shopper } from '../loyalty/support.js';
import {
  ALL_TYPES,
  drain,
  dumpTables,
  fakeResolver,
  HOSTS,
  receiver,
  subscribe,
  TEST_DISPATCH,
  TestClock,
  testDispatcher,
  type Received,
} from './support.js';

interface PointsData {
  availableDelta: number;
  balance: { available: number; pending: number };
}

describe('outbound events: the outbox and its delivery', function () {
  this.timeout(180_000);
  let svc: TestService;
  let admin: string;
  let failTransitions = false;
  const pans = generatePans(40, '455555');
  let next = 0;
  const shopper = (): Promise<Shopper> => newShopper(svc, pans[next++] as string);

  before(async () => {
    nock.disableNetConnect();
    nock.enableNetConnect(/127\.0\.0\.1|localhost/);
    svc = await startTestService({
      eventResolver: fakeResolver,
      // A failure after the ledger's own listener: the webhook's transaction rolls back with its outbox rows.
      paymentListeners: [
        () =>
          failTransitions ? Promise.reject(new Error('injected failure after the ledger flush')) : Promise.resolve(),
      ],
    });
    admin = await signToken({ scope: 'loyalty:admin' });
  });
  after(async () => {
    await svc.close();
    nock.cleanAll();
    nock.enableNetConnect();
  });
  afterEach(async () => {
    nock.cleanAll();
    // Each test starts with no live subscription, so deliveries of one test never reach another's receiver.
    for (const sub of (await svc.request('GET', '/v1/admin/subscriptions', { token: admin })).body.items as {
      id: string;
    }[]) {
      await svc.request('DELETE', `/v1/admin/subscriptions/${sub.id}`, { token: admin });
    }
  });

  const eventsOf = (knex: Knex, shopperRef: string) =>
    knex('outbound_events').where({ shopper_ref: shopperRef }).orderBy('seq').select('id', 'type', 'body');

  it('when ledger changes commit, then every subscriber receives the types it wants, verified, with balances after and no PAN or e-mail', async () => {
    const clock = new TestClock();
    const crm = await subscribe(svc, 'https://crm.example.com/all', ALL_TYPES);
    const app = await subscribe(svc, 'https://app.example.com/available', ['points.available']);
    const crmHook = receiver('https://crm.example.com', '/all', () => [crm.secret]);
    const appHook = receiver('https://app.example.com', '/available', () => [app.secret]);

    const a = await shopper();
    const b = await shopper();
    const email = `crm.member.${next}@example.com`;
    const online = payment(a, { amount: 20_000, channel: 'online' });
    await online.send(svc, { type: 'authorised' });
    await online.send(svc, { type: 'captured' });
    // A gateway redelivering the same webhook changes nothing, so it emits nothing either.
    const replayed = await postPlatform(svc, online.event({ type: 'captured' }), { id: 'redelivered-capture' });
    expect(replayed.status).to.equal(200);
    const again = await postPlatform(svc, online.event({ type: 'captured' }), { id: 'redelivered-capture' });
    expect(again.status).to.equal(200);
    expect((await redeem(svc, a.shopperRef, 50, 'outbox-redeem-1')).status).to.equal(201);
    await online.send(svc, { type: 'refunded', id: 'outbox-refund-1', amount: 5_000 });
    const enrol = await svc.request('POST', `/v1/shoppers/${a.shopperRef}/enrolment`, {
      token: admin,
      json: { email, externalMemberId: `CRM-${next}` },
    });
    expect(enrol.status, enrol.text).to.equal(200);
    await payment(b, { amount: 3_000, channel: 'in_store' }).send(svc, { type: 'authorised' });
    const link = await svc.request('POST', `/v1/shoppers/${a.shopperRef}/cards`, {
      token: admin,
      json: { token: b.cardToken },
    });
    expect(link.status, link.text).to.equal(200);

    await drain(testDispatcher(svc, clock));
    expect(crmHook.rejected).to.deep.equal([]);
    expect(appHook.rejected).to.deep.equal([]);

    const ofA = crmHook.received.filter((e) => e.shopperReference === a.shopperRef).map((e) => e.type);
    expect(ofA).to.deep.equal([
      'shopper.created',
      'points.pending',
      'points.available',
      'points.redeemed',
      'points.reversed',
      'shopper.enrolled',
      'shopper.merged',
      'card.linked',
    ]);
    const ofB = crmHook.received.filter((e) => e.shopperReference === b.shopperRef).map((e) => e.type);
    expect(ofB).to.deep.equal(['shopper.created', 'points.available']);
    expect(appHook.received.map((e) => e.type)).to.deep.equal(['points.available', 'points.available']);
    // The ids are the events' own: one per change, the same in every subscriber's delivery.
    const stored = await eventsOf(svc.db.knex, a.shopperRef);
    expect(crmHook.received.filter((e) => e.shopperReference === a.shopperRef).map((e) => e.id)).to.deep.equal(
      stored.map((e: { id: string }) => e.id),
    );
    // Order holds per shopper, not across shoppers: find a's event among the app's deliveries.
    expect(appHook.received.find((e) => e.shopperReference === a.shopperRef)?.id).to.equal(
      crmHook.received.find((e) => e.type === 'points.available' && e.shopperReference === a.shopperRef)?.id,
    );

    const merged = crmHook.received.find((e) => e.type === 'shopper.merged') as Received;
    expect(merged.data).to.include({ mergedShopperReference: b.shopperRef });
    const final = await balance(svc, a.shopperRef);
    expect(merged.data['balance']).to.include({ available: final.available, pending: final.pending });
    const linked = crmHook.received.find((e) => e.type === 'card.linked') as Received;
    expect(linked.data).to.deep.equal({
      shopperReference: a.shopperRef,
      cardToken: b.cardToken,
      previousShopperReference: b.shopperRef,
    });
    const redeemed = crmHook.received.find((e) => e.type === 'points.redeemed') as Received;
    expect(redeemed.data).to.include({ points: 50, availableDelta: -50 });
    const enrolled = crmHook.received.find((e) => e.type === 'shopper.enrolled') as Received;
    expect(enrolled.data).to.include({ externalMemberId: `CRM-${next}` });

    // Never a card number or an e-mail: not in what was sent, not in the outbox, not in the logs.
    const sent = [...crmHook.received, ...appHook.received].map((e) => e.body).join('\n');
    const dump = await dumpTables(svc.db.knex);
    for (const haystack of [sent, dump, svc.logs()]) {
      for (const pan of [a.pan, b.pan]) expect(haystack).to.not.contain(pan);
      expect(haystack).to.not.contain(email);
    }
  });

  it('when lots expire, then points.expired carries the expired points and the balance after', async () => {
    const clock = new TestClock();
    const sub = await subscribe(svc, 'https://crm.example.com/expired', ['points.expired']);
    const hook = receiver('https://crm.example.com', '/expired', () => [sub.secret]);
    const s = await shopper();
    await payment(s, { amount: 6_000, channel: 'in_store' }).send(svc, { type: 'authorised' });
    const earned = (await balance(svc, s.shopperRef)).available;
    expect(earned).to.be.greaterThan(0);
    await svc.db
      .knex('loyalty_lots')
      .where({ shopper_ref: s.shopperRef })
      .update({ expires_at: new Date(Date.now() - 86_400_000) });
    await svc.service.loyalty.expireDue();
    await drain(testDispatcher(svc, clock));
    expect(hook.rejected).to.deep.equal([]);
    expect(hook.received.map((e) => e.type)).to.deep.equal(['points.expired']);
    expect(hook.received[0]?.data).to.deep.include({ points: earned, availableDelta: -earned });
    expect(hook.received[0]?.data['balance']).to.include({ available: 0 });
  });

  it('when a ledger change rolls back, then it emits nothing; when it is delivered again and commits, its events exist once', async () => {
    const clock = new TestClock();
    const s = await shopper();
    const sub = await subscribe(svc, 'https://crm.example.com/rollback', ['points.available', 'points.pending']);
    const hook = receiver('https://crm.example.com', '/rollback', () => [sub.secret]);
    const before = await svc.db.knex('outbound_events').count<{ n: string }[]>('* as n');
    const p = payment(s, { amount: 4_000, channel: 'in_store' });
    failTransitions = true;
    try {
      const refused = await postPlatform(svc, p.event({ type: 'authorised' }), { id: 'rollback-delivery' });
      expect(refused.status).to.be.greaterThanOrEqual(500);
    } finally {
      failTransitions = false;
    }
    const after = await svc.db.knex('outbound_events').count<{ n: string }[]>('* as n');
    expect(after[0]?.n).to.equal(before[0]?.n);
    expect(await svc.db.knex('loyalty_entries').where({ shopper_ref: s.shopperRef })).to.have.length(0);
    expect(await drain(testDispatcher(svc, clock))).to.equal(0);

    const ok = await postPlatform(svc, p.event({ type: 'authorised' }), { id: 'rollback-delivery' });
    expect(ok.status, ok.text).to.equal(200);
    await drain(testDispatcher(svc, clock));
    expect(hook.rejected).to.deep.equal([]);
    expect(hook.received.map((e) => e.type)).to.deep.equal(['points.available']);
    expect((await eventsOf(svc.db.knex, s.shopperRef)).map((e: { type: string }) => e.type)).to.deep.equal([
      'shopper.created',
      'points.available',
    ]);
  });

  it("when ledger changes of a shopper race and deliveries fail now and then, then each subscriber still gets every shopper's events in ledger order", async () => {
    const clock = new TestClock();
    const sub = await subscribe(svc, 'https://flaky.example.com/order', ALL_TYPES);
    const statuses = new Map<string, number[]>();
    let n = 0;
    const hook = receiver(
      'https://flaky.example.com',
      '/order',
      () => [sub.secret],
      (event) => {
        // Every third event fails on its first attempt: its shopper's later events must wait for it.
        const seen = statuses.get(event.id) ?? [];
        const status = seen.length === 0 && n++ % 3 === 0 ? 500 : 200;
        statuses.set(event.id, [...seen, status]);
        return status;
      },
    );
    const shoppers = [await shopper(), await shopper(), await shopper()];
    // Earn first (in store: available at once), then race more earnings and redemptions per shopper.
    for (const s of shoppers)
      await payment(s, { amount: 50_000, channel: 'in_store' }).send(svc, { type: 'authorised' });
    await Promise.all(
      shoppers.flatMap((s, i) => [
        ...[1, 2, 3].map((k) =>
          payment(s, { amount: 1_000 * k, channel: 'in_store' }).send(svc, { type: 'authorised' }),
        ),
        ...[1, 2, 3].map(async (k) =>
          expect((await redeem(svc, s.shopperRef, k, `race-${i}-${k}`)).status).to.equal(201),
        ),
      ]),
    );

    // Two dispatchers (two instances) share the work, round after round, until everything is delivered.
    const one = testDispatcher(svc, clock);
    const two = testDispatcher(svc, clock);
    for (let round = 0; round < 40; round++) {
      const done = (await Promise.all([one.runOnce(), two.runOnce()])).flat();
      const pending = await svc.db.knex('outbound_deliveries').where({ subscription_id: sub.id, state: 'pending' });
      if (done.length === 0 && pending.length === 0) break;
      clock.advance(TEST_BACKOFF_CEILING);
    }
    expect(hook.rejected).to.deep.equal([]);
    expect(
      await svc.db.knex('outbound_deliveries').where({ subscription_id: sub.id }).whereNot({ state: 'delivered' }),
    ).to.have.length(0);
    expect([...statuses.values()].some((s) => s[0] === 500)).to.equal(true);

    for (const s of shoppers) {
      const order = (await eventsOf(svc.db.knex, s.shopperRef)).map((e: { id: string }) => e.id);
      const arrivals = hook.received.filter((e) => e.shopperReference === s.shopperRef);
      // Arrivals follow the ledger's order; a retried event arrives again before any later one.
      const positions = arrivals.map((e) => order.indexOf(e.id));
      expect(positions).to.deep.equal([...positions].sort((x, y) => x - y));
      expect([...new Set(positions)]).to.deep.equal(order.map((_id: string, i: number) => i));
      // And the balances chain: each points event's balance is the previous one moved by its delta.
      const points = arrivals
        .filter((e, i) => e.type.startsWith('points.') && arrivals.findIndex((x) => x.id === e.id) === i)
        .map((e) => e.data as unknown as PointsData);
      for (let i = 1; i < points.length; i++) {
        const [prev, cur] = [points[i - 1] as PointsData, points[i] as PointsData];
        expect(cur.balance.available).to.equal(prev.balance.available + cur.availableDelta);
      }
      expect(points.at(-1)?.balance.available).to.equal((await balance(svc, s.shopperRef)).available);
    }
  });

  it('when a receiver fails with Retry-After, then the next attempt waits for it, backs off exponentially, and succeeds; every attempt is listed', async () => {
    const clock = new TestClock();
    const sub = await subscribe(svc, 'https://crm.example.com/retry', ['shopper.created']);
    const answers: (number | [number, Record<string, string>])[] = [[503, { 'Retry-After': '30' }], 500, 204];
    const hook = receiver(
      'https://crm.example.com',
      '/retry',
      () => [sub.secret],
      (_e, nth) => answers[nth - 1] ?? 204,
    );
    await shopper();
    const dispatcher = testDispatcher(svc, clock);
    expect((await dispatcher.runOnce()).map((r) => r.status)).to.deep.equal([503]);
    clock.advance(29_000);
    expect(await dispatcher.runOnce()).to.deep.equal([]);
    clock.advance(1_500);
    expect((await dispatcher.runOnce()).map((r) => r.status)).to.deep.equal([500]);
    // Attempt 2: full jitter up to base × 2 = 2 s; the test's jitter is one half, so 1 s.
    clock.advance(900);
    expect(await dispatcher.runOnce()).to.deep.equal([]);
    clock.advance(200);
    expect((await dispatcher.runOnce()).map((r) => r.outcome)).to.deep.equal(['delivered']);
    expect(hook.received).to.have.length(3);
    expect(new Set(hook.received.map((e) => e.id)).size).to.equal(1);
    expect(hook.rejected).to.deep.equal([]);

    const attempts = await svc.request('GET', `/v1/admin/subscriptions/${sub.id}/attempts?limit=2`, { token: admin });
    expect(attempts.status, attempts.text).to.equal(200);
    expect(
      attempts.body.items.map((a: { outcome: string; statusCode: number }) => [a.outcome, a.statusCode]),
    ).to.deep.equal([
      ['delivered', 204],
      ['failed', 500],
    ]);
    const rest = await svc.request(
      'GET',
      `/v1/admin/subscriptions/${sub.id}/attempts?limit=2&cursor=${attempts.body.nextCursor as string}`,
      { token: admin },
    );
    expect(rest.body.items).to.have.length(1);
    expect(rest.body.items[0]).to.include({ outcome: 'failed', statusCode: 503, error: 'HTTP_503', attempt: 1 });
    expect(rest.body.items[0].latencyMs).to.be.a('number');
    expect(rest.body).to.not.have.property('nextCursor');
    const deliveries = await svc.request('GET', `/v1/admin/subscriptions/${sub.id}/deliveries`, { token: admin });
    expect(deliveries.body.items).to.have.length(1);
    expect(deliveries.body.items[0]).to.include({
      state: 'delivered',
      attempts: 3,
      lastStatus: 204,
      type: 'shopper.created',
    });
  });

  it('when a receiver redirects, stalls or answers with a huge body, then redirects are not followed, the stall times out and the body is not read past the cap', async () => {
    const clock = new TestClock();
    const sub = await subscribe(svc, 'https://crm.example.com/odd', ['shopper.created']);
    nock('https://crm.example.com').post('/odd').reply(302, '', { Location: 'http://169.254.169.254/latest' });
    nock('https://crm.example.com').post('/odd').delay(5_000).reply(204);
    nock('https://crm.example.com').post('/odd').reply(200, 'x'.repeat(1_000_000));
    await shopper();
    const dispatcher = testDispatcher(svc, clock, { timeoutMs: 200 });
    expect((await dispatcher.runOnce()).map((r) => [r.outcome, r.status])).to.deep.equal([['failed', 302]]);
    clock.advance(TEST_BACKOFF_CEILING);
    expect((await dispatcher.runOnce()).map((r) => r.outcome)).to.deep.equal(['timeout']);
    clock.advance(TEST_BACKOFF_CEILING);
    expect((await dispatcher.runOnce()).map((r) => [r.outcome, r.status])).to.deep.equal([['delivered', 200]]);
    const attempts = await svc.request('GET', `/v1/admin/subscriptions/${sub.id}/attempts`, { token: admin });
    expect(attempts.body.items.map((a: { error?: string }) => a.error)).to.deep.equal([
      undefined,
      'TIMEOUT: no complete answer in time',
      'HTTP_302: redirects are not followed',
    ]);
    expect(attempts.text).to.not.contain('whsec_');
  });

  it('when a receiver answers 410 Gone, then the subscription is disabled and receives nothing more; others carry on', async () => {
    const clock = new TestClock();
    const gone = await subscribe(svc, 'https://gone.example.com/h', ['shopper.created']);
    const other = await subscribe(svc, 'https://crm.example.com/still', ['shopper.created']);
    const goneHook = receiver(
      'https://gone.example.com',
      '/h',
      () => [gone.secret],
      () => 410,
    );
    const otherHook = receiver('https://crm.example.com', '/still', () => [other.secret]);
    await shopper();
    await drain(testDispatcher(svc, clock));
    const got = await svc.request('GET', `/v1/admin/subscriptions/${gone.id}`, { token: admin });
    expect(got.body).to.include({ state: 'disabled', disabledReason: 'gone' });
    await shopper();
    clock.advance(60_000);
    await drain(testDispatcher(svc, clock));
    expect(goneHook.received).to.have.length(1);
    expect(otherHook.received).to.have.length(2);
    const attempts = await svc.request('GET', `/v1/admin/subscriptions/${gone.id}/attempts`, { token: admin });
    expect(attempts.body.items.map((a: { outcome: string }) => a.outcome)).to.deep.equal(['gone']);
  });

  it("when every attempt fails, then the delivery is dead-lettered after N, the shopper's later events flow again, and an admin replay delivers it with the same id", async () => {
    const clock = new TestClock();
    const sub = await subscribe(svc, 'https://crm.example.com/dead', ['points.available', 'shopper.created']);
    let healthy = false;
    const hook = receiver(
      'https://crm.example.com',
      '/dead',
      () => [sub.secret],
      (e) => (healthy || e.type !== 'shopper.created' ? 204 : 500),
    );
    const s = await shopper();
    await payment(s, { amount: 2_000, channel: 'in_store' }).send(svc, { type: 'authorised' });
    const dispatcher = testDispatcher(svc, clock);
    for (let i = 0; i < 4; i++) {
      const done = await dispatcher.runOnce();
      expect(done.map((r) => [r.outcome, r.dead])).to.deep.equal([['failed', i === 3]]);
      clock.advance(TEST_BACKOFF_CEILING);
    }
    // Dead-lettered: the points event waiting behind it goes now.
    expect((await dispatcher.runOnce()).map((r) => r.outcome)).to.deep.equal(['delivered']);
    const dead = await svc.request('GET', `/v1/admin/subscriptions/${sub.id}/deliveries?state=dead`, { token: admin });
    expect(dead.body.items).to.have.length(1);
    const deadId = dead.body.items[0].eventId as string;
    expect(dead.body.items[0]).to.include({ type: 'shopper.created', attempts: 4, lastError: 'HTTP_500' });

    const path = `/v1/admin/subscriptions/${sub.id}/deliveries/${deadId}/replay`;
    const replayed = await svc.request('POST', path, { token: admin });
    expect(replayed.status, replayed.text).to.equal(200);
    expect(replayed.body).to.include({ eventId: deadId, state: 'pending', attempts: 0 });
    expect((await svc.request('POST', path, { token: admin })).body).to.include({ state: 'pending' });
    healthy = true;
    expect((await dispatcher.runOnce()).map((r) => [r.eventId, r.outcome])).to.deep.equal([[deadId, 'delivered']]);
    expect(hook.received.filter((e) => e.id === deadId)).to.have.length(5);
    expect(hook.rejected).to.deep.equal([]);
    const delivered = await svc.request('POST', path, { token: admin });
    expect(delivered.status).to.equal(409);
    expect(delivered.body.code).to.equal('EVENT_NOT_REPLAYABLE');
    const unknown = await svc.request(
      'POST',
      `/v1/admin/subscriptions/${sub.id}/deliveries/msg_aaaaaaaaaaaaaaaaaaaaaaaaaa/replay`,
      { token: admin },
    );
    expect(unknown.status).to.equal(404);
    expect(
      await svc.db.knex('audit_events').where({ action: 'events.delivery.replayed', resource: sub.id }),
    ).to.have.length(1);
  });

  it('when the dispatcher dies between commit and delivery, or after sending but before recording, then a new one delivers exactly the committed events with the same ids', async () => {
    const clock = new TestClock();
    const sub = await subscribe(svc, 'https://crm.example.com/crash', ALL_TYPES);
    const hook = receiver('https://crm.example.com', '/crash', () => [sub.secret]);
    const s = await shopper();
    await payment(s, { amount: 7_000, channel: 'in_store' }).send(svc, { type: 'authorised' });
    expect((await redeem(svc, s.shopperRef, 10, 'crash-redeem')).status).to.equal(201);
    failTransitions = true;
    try {
      await postPlatform(svc, payment(s, { amount: 9_000, channel: 'in_store' }).event({ type: 'authorised' }));
    } finally {
      failTransitions = false;
    }
    const committed = (await eventsOf(svc.db.knex, s.shopperRef)).map((e: { id: string }) => e.id);
    expect(committed).to.have.length(3);

    // Killed after claiming: its leases are committed, nothing was sent.
    const killed = testDispatcher(svc, clock);
    expect(await killed.claim()).to.have.length(1); // only the head of the shopper's queue
    const survivor = testDispatcher(svc, clock);
    expect(await survivor.runOnce()).to.deep.equal([]);
    // Killed after the receiver got the event, before the outcome was recorded.
    clock.advance(TEST_LEASE_MS);
    const dying = testDispatcher(svc, clock, {}, async (request) => {
      await postWebhook(request);
      throw new Error('killed');
    });
    expect(await dying.runOnce()).to.deep.equal([]);
    expect(hook.received).to.have.length(1);
    clock.advance(TEST_LEASE_MS);
    await drain(survivor);
    expect(hook.rejected).to.deep.equal([]);
    // At least once: the first event twice (same id), then the others once each, in order.
    expect(hook.received.map((e) => e.id)).to.deep.equal([committed[0], ...committed]);
    expect([...new Set(hook.received.map((e) => e.id))]).to.deep.equal(committed);
  });

  it('when a target starts resolving to an internal address after subscribing, then the delivery is refused without a request', async () => {
    const clock = new TestClock();
    HOSTS['rebind.example.com'] = [{ address: '151.101.2.69', family: 4 }];
    const sub = await subscribe(svc, 'https://rebind.example.com/h', ['shopper.created']);
    const hook = receiver('https://rebind.example.com', '/h', () => [sub.secret]);
    HOSTS['rebind.example.com'] = [{ address: '127.0.0.1', family: 4 }];
    await shopper();
    const done = await testDispatcher(svc, clock).runOnce();
    expect(done.map((r) => r.outcome)).to.deep.equal(['refused']);
    expect(hook.received).to.have.length(0);
    const attempts = await svc.request('GET', `/v1/admin/subscriptions/${sub.id}/attempts`, { token: admin });
    expect(attempts.body.items[0]).to.include({ outcome: 'refused', error: 'TARGET_REFUSED: loopback' });
  });

  it('when the lease runs out or is taken over between the claim and the send, then the slow instance sends nothing and records nothing', async () => {
    const clock = new TestClock();
    const sub = await subscribe(svc, 'https://crm.example.com/lease', ['shopper.created']);
    const hook = receiver('https://crm.example.com', '/lease', () => [sub.secret]);
    await shopper();
    const slow = testDispatcher(svc, clock);
    const lease = () => svc.db.knex('outbound_deliveries').where({ subscription_id: sub.id, state: 'pending' });
    const attempts = () => svc.db.knex('outbound_delivery_attempts').where({ subscription_id: sub.id });

    // Expired, on the database's clock, while the slow instance was resolving and unsealing.
    const [expired] = await slow.claim();
    await lease().update({ leased_until: svc.db.knex.raw(`now() - interval '1 second'`) });
    expect(await slow.deliver(expired as ClaimedDelivery)).to.equal(undefined);
    // Not yet expired, but with less left than a send may take: not started either.
    const [short] = await slow.claim();
    await lease().update({ leased_until: svc.db.knex.raw(`now() + interval '1 second'`) });
    expect(await slow.deliver(short as ClaimedDelivery)).to.equal(undefined);
    expect(hook.received).to.have.length(0);
    expect(await attempts()).to.have.length(0);

    // Another instance takes it over and delivers it; the slow one's stale claim still sends nothing.
    await lease().update({ leased_until: svc.db.knex.raw(`now() - interval '1 second'`) });
    expect((await testDispatcher(svc, clock).runOnce()).map((r) => r.outcome)).to.deep.equal(['delivered']);
    expect(await slow.deliver(short as ClaimedDelivery)).to.equal(undefined);
    expect(hook.received).to.have.length(1);
    expect(await attempts()).to.have.length(1);
  });

  it("when an instance's clock runs fast, then it cannot take a live lease: leases are on the database's clock", async () => {
    const clock = new TestClock();
    const sub = await subscribe(svc, 'https://crm.example.com/fast-clock', ['shopper.created']);
    const hook = receiver('https://crm.example.com', '/fast-clock', () => [sub.secret]);
    await shopper();
    expect(await testDispatcher(svc, clock).claim()).to.have.length(1);
    const fast = new EventDispatcher({
      knex: svc.db.knex,
      keyRing: svc.service.keyRing,
      targets: { resolver: fakeResolver, allowHttp: false, allowPrivate: false },
      options: TEST_DISPATCH,
      now: () => new Date(Date.now() + 10 * TEST_LEASE_MS),
    });
    expect(await fast.runOnce()).to.deep.equal([]);
    expect(hook.received).to.have.length(0);
  });

  it('when DNS does not answer within the delivery timeout, then a timeout attempt is recorded, the lease is released and the delivery backs off', async () => {
    const clock = new TestClock();
    const sub = await subscribe(svc, 'https://crm.example.com/slow-dns', ['shopper.created']);
    const hook = receiver('https://crm.example.com', '/slow-dns', () => [sub.secret]);
    await shopper();
    const dispatcher = new EventDispatcher({
      knex: svc.db.knex,
      keyRing: svc.service.keyRing,
      // A resolver that never answers (dns.lookup has no timeout of its own).
      targets: { resolver: () => new Promise(() => undefined), allowHttp: false, allowPrivate: false },
      options: { ...TEST_DISPATCH, timeoutMs: 200 },
      now: clock.now,
      clockOffsetMs: clock.offsetMs,
      random: () => 0.5,
    });
    const started = Date.now();
    expect((await dispatcher.runOnce()).map((r) => [r.outcome, r.dead])).to.deep.equal([['timeout', false]]);
    expect(Date.now() - started).to.be.lessThan(TEST_DISPATCH.timeoutMs);
    expect(hook.received).to.have.length(0);
    const listed = await svc.request('GET', `/v1/admin/subscriptions/${sub.id}/attempts`, { token: admin });
    expect(listed.body.items.map((a: { outcome: string; error: string }) => [a.outcome, a.error])).to.deep.equal([
      ['timeout', 'TIMEOUT: the target and secrets were not ready in time'],
    ]);
    const row = (await svc.db.knex('outbound_deliveries').where({ subscription_id: sub.id }).first()) as {
      state: string;
      attempts: number;
      leased_until: Date | null;
    };
    expect(row).to.include({ state: 'pending', attempts: 1, leased_until: null });
    expect(await dispatcher.runOnce()).to.deep.equal([]);
  });

  const ownFailures: [string, (knex: Knex, subscriptionId: string) => Promise<unknown>, string][] = [
    [
      'its secret cannot be decrypted',
      (knex, id) =>
        knex('event_subscription_secrets')
          .where({ subscription_id: id })
          .update({ secret_ciphertext: Buffer.alloc(60, 7) }),
      'INTERNAL: the signing secrets could not be unsealed',
    ],
    [
      'its key version is unknown to the key ring',
      // Written past the database's key check (migration 20261206000700), as a writer with the
      // privilege to skip triggers would: the dispatcher must still fail safely.
      (knex, id) =>
        knex.transaction(async (trx) => {
          await trx.raw('set local session_replication_role = replica');
          await trx('event_subscription_secrets').where({ subscription_id: id }).update({ secret_key_version: 999 });
        }),
      'INTERNAL: the signing secrets could not be unsealed',
    ],
    [
      'it has no secret',
      (knex, id) => knex('event_subscription_secrets').where({ subscription_id: id }).delete(),
      'INTERNAL: the subscription has no signing secret',
    ],
  ];
  for (const [what, breakIt, error] of ownFailures) {
    it(`when a delivery fails in our own code (${what}), then each try is recorded, backs off and is dead-lettered, releasing the shopper's queue`, async () => {
      const clock = new TestClock();
      const sub = await subscribe(svc, `https://crm.example.com/own-${next}`, ['shopper.created', 'points.available']);
      const hook = receiver('https://crm.example.com', `/own-${next}`, () => []);
      const s = await shopper();
      await payment(s, { amount: 2_000, channel: 'in_store' }).send(svc, { type: 'authorised' });
      await breakIt(svc.db.knex, sub.id);
      const dispatcher = testDispatcher(svc, clock);
      for (let i = 0; i < TEST_DISPATCH.maxAttempts; i++) {
        expect((await dispatcher.runOnce()).map((r) => [r.outcome, r.dead])).to.deep.equal([
          ['failed', i === TEST_DISPATCH.maxAttempts - 1],
        ]);
        // Backed off: not due again at once (and the shopper's next event waits behind it).
        if (i < TEST_DISPATCH.maxAttempts - 1) expect(await dispatcher.runOnce()).to.deep.equal([]);
        clock.advance(TEST_BACKOFF_CEILING);
      }
      const listed = await svc.request('GET', `/v1/admin/subscriptions/${sub.id}/attempts`, { token: admin });
      expect(listed.body.items.map((a: { error: string }) => a.error)).to.deep.equal(
        Array<string>(TEST_DISPATCH.maxAttempts).fill(error),
      );
      expect(listed.text).to.not.contain('whsec_');
      const dead = await svc.request('GET', `/v1/admin/subscriptions/${sub.id}/deliveries?state=dead`, {
        token: admin,
      });
      expect(dead.body.items.map((d: { type: string }) => d.type)).to.deep.equal(['shopper.created']);
      // The shopper's next event is no longer blocked (it fails the same way: the secret is still broken).
      const after = (await dispatcher.runOnce()).map((r) => r.eventId);
      expect(after).to.have.length(1).and.not.include(dead.body.items[0].eventId);
      expect(hook.received).to.have.length(0);
    });
  }

  it('when the service runs its own dispatcher, then events are delivered without a test driving it, and counted in the metrics', async () => {
    const sub = await subscribe(svc, 'https://crm.example.com/live', ['shopper.created']);
    const hook = receiver('https://crm.example.com', '/live', () => [sub.secret]);
    svc.service.dispatcher.start();
    try {
      await shopper();
      for (let i = 0; i < 200 && hook.received.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    } finally {
      await svc.service.dispatcher.stop();
    }
    expect(hook.received).to.have.length(1);
    expect(await svc.service.metrics.value('outbound_deliveries_total', { outcome: 'delivered' })).to.equal(1);
    expect(
      await svc.service.metrics.value('outbound_delivery_duration_seconds_count', { outcome: 'delivered' }),
    ).to.equal(1);
    const metrics = await svc.request('GET', '/metrics', { token: await signToken({ scope: 'metrics:read' }) });
    expect(metrics.text).to.contain('outbound_deliveries_total{outcome="delivered"} 1');
    expect(metrics.text).to.contain('# TYPE outbound_deliveries_pending gauge');
    expect(metrics.text).to.contain('# TYPE outbound_delivery_lag_seconds gauge');
  });

  it('when a receiver verifies with a wrong secret, then verification fails (the check can fail)', async () => {
    const sub = await subscribe(svc, 'https://crm.example.com/wrong', ['shopper.created']);
    const other = await subscribe(svc, 'https://app.example.com/wrong', ['shopper.created']);
    const hook = receiver('https://crm.example.com', '/wrong', () => [other.secret]);
    await shopper();
    await testDispatcher(svc, new TestClock()).runOnce();
    expect(hook.rejected).to.have.length(1);
    expect(() => new Webhook(sub.secret).verify('{}', {})).to.throw();
  });
});

/** The test dispatcher's backoff ceiling (EVENTS_BACKOFF_MAX_MS in TEST_DISPATCH) and lease. */
const TEST_BACKOFF_CEILING = 8_000;
const TEST_LEASE_MS = 2 * 2_000 + 30_000 + 1;
