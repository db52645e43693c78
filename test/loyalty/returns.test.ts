/**
 * Buy online, return in store (issue 22): the till presents the card used online, finds the purchase
 * and records the return as a refund (then the gateway's refund webhook changes nothing more) or as
 * store credit (spent in another channel, never below zero). A till sees nothing outside the return
 * window or of another shopper, and no PAN it presented is stored, logged or echoed.
 */
import { expect } from 'chai';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { signToken } from '../support/auth.js';
import { usingPostgres } from '../support/database.js';
import { startTestService, testEnv, type TestService, type TestResponse } from '../support/harness.js';
import { generatePans, panPattern, TEST_PANS } from '../support/pans.js';
import { balance, newShopper, payment, type Shopper } from './support.js';

const DAY_MS = 86_400_000;

describe('returns: buy online, return in store', function () {
  this.timeout(120_000);
  let svc: TestService;
  /** Every card number a request of this file carried: none may be found anywhere afterwards. */
  const used: string[] = [];
  const responses: string[] = [];
  const pans = generatePans(12, '455501');
  let next = 0;
  let tillToken: string;

  function nextPan(): string {
    const pan = pans[next++] as string;
    used.push(pan);
    return pan;
  }

  /** A shopper whose card paid `amount` online, captured (1 point per pound: amount / 100 points). */
  async function onlinePurchase(amount: number, options: { occurredAt?: string } = {}) {
    const s = await newShopper(svc, nextPan());
    const p = payment(s, { amount, channel: 'online', ...options });
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'captured' });
    const row = await svc.db.knex('payments').where({ external_id: p.id }).first('id');
    return { shopper: s, payment: p, paymentId: row.id as string };
  }

  async function call(path: string, json: unknown, options: { token?: string; key?: string } = {}) {
    const res = await svc.request('POST', path, {
      token: options.token ?? tillToken,
      json,
      ...(options.key === undefined ? {} : { headers: { 'idempotency-key': options.key } }),
    });
    responses.push(res.text);
    return res;
  }

  const lookup = (card: Record<string, string>, token?: string): Promise<TestResponse> =>
    call('/v1/returns/lookup', { card }, token === undefined ? {} : { token });

  const recordReturn = (body: Record<string, unknown>, key: string, token?: string): Promise<TestResponse> =>
    call('/v1/returns', body, { key, ...(token === undefined ? {} : { token }) });

  async function spendStoreCredit(target: TestService, s: Shopper, amount: number, key: string) {
    const res = await target.request('POST', `/v1/shoppers/${s.shopperRef}/redemptions`, {
      token: await signToken({ scope: 'loyalty:redeem', shopperRef: s.shopperRef }),
      headers: { 'idempotency-key': key },
      json: { kind: 'store_credit', amount, currency: 'GBP', reference: `web-${key}` },
    });
    responses.push(res.text);
    return res;
  }

  before(async () => {
    svc = await startTestService();
    tillToken = await signToken({ scope: 'returns:write tokens:write', subject: 'till-berlin-one' });
  });
  afterEach(async () => {
    expect((await checkLedger(svc.db.knex)).violations).to.deep.equal([]);
  });
  after(async () => svc.close());

  it('when the till presents the card used online, then it finds that purchase with only what a return needs', async () => {
    const { shopper, paymentId } = await onlinePurchase(4_000);
    const res = await lookup({ pan: shopper.pan });
    expect(res.status, res.text).to.equal(200);
    expect(res.body.returnWindowDays).to.equal(30);
    expect(res.body.purchases).to.deep.equal([
      {
        paymentId,
        authorisedAt: res.body.purchases[0].authorisedAt,
        channel: 'online',
        currency: 'GBP',
        amount: 4_000,
        refundableAmount: 4_000,
        last4: shopper.pan.slice(-4),
      },
    ]);
    expect(res.text).not.to.include(shopper.shopperRef);
    expect(res.text).not.to.include(shopper.cardToken);
    // By token, the same answer.
    expect((await lookup({ token: shopper.cardToken })).body.purchases).to.deep.equal(res.body.purchases);
  });

  it('when the return is a refund, then the points are reversed proportionally and the gateway refund webhook, delivered twice, changes nothing more', async () => {
    const { shopper, payment: p, paymentId } = await onlinePurchase(4_000);
    expect((await balance(svc, shopper.shopperRef)).available).to.equal(40);
    const res = await recordReturn(
      {
        card: { pan: shopper.pan },
        paymentId,
        amount: 1_000,
        mode: 'refund',
        providerRefundId: 'rf-till-first',
        reference: 'receipt-a',
        storeId: 'store-berlin',
      },
      'return-refund-a',
    );
    expect(res.status, res.text).to.equal(201);
    expect(res.body).to.include({
      mode: 'refund',
      amount: 1_000,
      matchedGatewayRefund: false,
      refundableAmount: 3_000,
    });
    expect(res.body).not.to.have.property('storeCredit');
    expect((await balance(svc, shopper.shopperRef)).available).to.equal(30);
    const entries = await svc.db.knex('loyalty_entries').where({ shopper_ref: shopper.shopperRef }).count({ n: '*' });

    await p.send(svc, { type: 'refunded', id: 'rf-till-first', amount: 1_000 });
    await p.send(svc, { type: 'refunded', id: 'rf-till-first', amount: 1_000 });
    const row = await svc.db.knex('payments').where({ id: paymentId }).first();
    expect(row).to.include({ state: 'partially_refunded', refunded_amount: 1_000 });
    expect((await balance(svc, shopper.shopperRef)).available).to.equal(30);
    expect(
      await svc.db.knex('loyalty_entries').where({ shopper_ref: shopper.shopperRef }).count({ n: '*' }),
    ).to.deep.equal(entries);
    expect(await svc.db.knex('payment_facts').where({ payment_id: paymentId, kind: 'refunded' })).to.have.length(1);
    // The same request again is the stored answer; the lookup shows what is left.
    const again = await recordReturn(
      {
        card: { pan: shopper.pan },
        paymentId,
        amount: 1_000,
        mode: 'refund',
        providerRefundId: 'rf-till-first',
        reference: 'receipt-a',
        storeId: 'store-berlin',
      },
      'return-refund-a',
    );
    expect(again.status).to.equal(201);
    expect(again.headers.get('idempotent-replayed')).to.equal('true');
    expect(again.body.returnId).to.equal(res.body.returnId);
    expect((await lookup({ pan: shopper.pan })).body.purchases[0].refundableAmount).to.equal(3_000);
    const audit = await svc.db.knex('audit_events').where({ action: 'return.recorded', resource: res.body.returnId });
    expect(audit).to.have.length(1);
  });

  it('when the gateway refund webhook comes first, then the till return matches it and nothing is counted twice', async () => {
    const { shopper, payment: p, paymentId } = await onlinePurchase(4_000);
    await p.send(svc, { type: 'refunded', id: 'rf-web-first', amount: 2_000 });
    expect((await balance(svc, shopper.shopperRef)).available).to.equal(20);
    const body = {
      card: { token: shopper.cardToken },
      paymentId,
      amount: 2_000,
      mode: 'refund',
      providerRefundId: 'rf-web-first',
      reference: 'receipt-b',
    };
    const mismatch = await recordReturn({ ...body, amount: 1_500 }, 'return-web-first-x');
    expect(mismatch.status).to.equal(409);
    expect(mismatch.body.code).to.equal('RETURN_REFUND_MISMATCH');
    const res = await recordReturn(body, 'return-web-first');
    expect(res.status, res.text).to.equal(201);
    expect(res.body).to.include({ matchedGatewayRefund: true, refundableAmount: 2_000 });
    await p.send(svc, { type: 'refunded', id: 'rf-web-first', amount: 2_000 });
    expect(await svc.db.knex('payments').where({ id: paymentId }).first()).to.include({ refunded_amount: 2_000 });
    expect((await balance(svc, shopper.shopperRef)).available).to.equal(20);
    // A second return naming the same gateway refund is refused.
    const second = await recordReturn({ ...body, reference: 'receipt-c' }, 'return-web-first-2');
    expect(second.status).to.equal(409);
    expect(second.body.code).to.equal('RETURN_REFUND_MISMATCH');
  });

  it('when the return is store credit, then the points are reversed, the credit is issued once and spent in another channel, never below zero', async () => {
    const { shopper, paymentId } = await onlinePurchase(4_000);
    const res = await recordReturn(
      { card: { pan: shopper.pan }, paymentId, amount: 4_000, mode: 'store_credit', reference: 'receipt-sc' },
      'return-credit-a',
    );
    expect(res.status, res.text).to.equal(201);
    expect(res.body).to.include({ mode: 'store_credit', refundableAmount: 0, matchedGatewayRefund: false });
    expect(res.body.storeCredit).to.deep.equal({ currency: 'GBP', balance: 4_000 });
    expect((await balance(svc, shopper.shopperRef)).available).to.equal(0);
    expect(await svc.db.knex('payments').where({ id: paymentId }).first()).to.include({ state: 'refunded' });
    // Nothing is left to return, as refund or credit.
    const more = await recordReturn(
      { card: { pan: shopper.pan }, paymentId, amount: 1, mode: 'store_credit', reference: 'receipt-sc2' },
      'return-credit-b',
    );
    expect(more.status).to.equal(409);
    expect(more.body.code).to.equal('RETURN_EXCEEDS_REFUNDABLE');

    const spent = await spendStoreCredit(svc, shopper, 2_500, 'credit-spend-1');
    expect(spent.status, spent.text).to.equal(201);
    expect(spent.body).to.include({ kind: 'store_credit', amount: 2_500, currency: 'GBP', state: 'completed' });
    expect(spent.body.storeCredit).to.deep.equal({ currency: 'GBP', balance: 1_500 });
    const refused = await spendStoreCredit(svc, shopper, 1_501, 'credit-spend-2');
    expect(refused.status).to.equal(409);
    expect(refused.body).to.include({ code: 'INSUFFICIENT_STORE_CREDIT', available: 1_500 });
    const view = await svc.request('GET', `/v1/shoppers/${shopper.shopperRef}/store-credit`, {
      token: await signToken({ scope: 'loyalty:read', shopperRef: shopper.shopperRef }),
    });
    expect(view.status, view.text).to.equal(200);
    expect(view.body.balances).to.deep.equal([{ currency: 'GBP', balance: 1_500 }]);
    const events = await svc.db
      .knex('outbound_events')
      .where({ shopper_ref: shopper.shopperRef })
      .whereIn('type', ['store_credit.issued', 'store_credit.spent'])
      .orderBy('created_at')
      .select('type');
    expect(events.map((e) => e.type)).to.deep.equal(['store_credit.issued', 'store_credit.spent']);
  });

  it("when the till presents one shopper's card, then another shopper's purchases and those past the window are neither listed nor returnable", async () => {
    const mine = await onlinePurchase(3_000);
    const old = payment(mine.shopper, { amount: 5_000, occurredAt: new Date(Date.now() - 40 * DAY_MS).toISOString() });
    await old.send(svc, { type: 'authorised' });
    await old.send(svc, { type: 'captured' });
    const oldId = (await svc.db.knex('payments').where({ external_id: old.id }).first('id')).id as string;
    const theirs = await onlinePurchase(6_000);

    const res = await lookup({ pan: mine.shopper.pan });
    expect(res.body.purchases.map((p: { paymentId: string }) => p.paymentId)).to.deep.equal([mine.paymentId]);
    for (const [paymentId, key] of [
      [theirs.paymentId, 'return-other-shopper'],
      [oldId, 'return-too-old'],
    ] as const) {
      const refused = await recordReturn(
        { card: { pan: mine.shopper.pan }, paymentId, amount: 100, mode: 'store_credit', reference: 'receipt-x' },
        key,
      );
      expect(refused.status, key).to.equal(404);
      expect(refused.body.code).to.equal('NOT_FOUND');
    }
    expect(await svc.db.knex('till_returns').whereIn('payment_id', [theirs.paymentId, oldId])).to.have.length(0);
  });

  it('when a card is unknown, then the lookup answers like a card without purchases and creates nothing', async () => {
    const unknown = nextPan();
    const cards = await svc.db.knex('cards').count({ n: '*' }).first();
    const res = await lookup({ pan: unknown });
    expect(res.status).to.equal(200);
    expect(res.body.purchases).to.deep.equal([]);
    expect(await svc.db.knex('cards').count({ n: '*' }).first()).to.deep.equal(cards);
  });

  it('when the caller is a shopper, or presents a PAN without tokens:write, then 403 and nothing is looked up', async () => {
    const { shopper } = await onlinePurchase(1_000);
    const noPanScope = await lookup({ pan: shopper.pan }, await signToken({ scope: 'returns:write' }));
    expect(noPanScope.status).to.equal(403);
    expect(noPanScope.body.code).to.equal('INSUFFICIENT_SCOPE');
    const byToken = await lookup({ token: shopper.cardToken }, await signToken({ scope: 'returns:write' }));
    expect(byToken.status).to.equal(200);
    const shopperToken = await signToken({ scope: 'returns:write tokens:write', shopperRef: shopper.shopperRef });
    expect((await lookup({ token: shopper.cardToken }, shopperToken)).status).to.equal(403);
    expect((await lookup({ token: shopper.cardToken }, await signToken({ scope: 'tokens:write' }))).status).to.equal(
      403,
    );
  });

  it('when a till looks up more cards than its budget allows, then 429 for any card, counted across requests', async () => {
    const flood = await signToken({ scope: 'returns:write tokens:write', subject: 'till-flood' });
    const statuses: number[] = [];
    for (const pan of generatePans(31, '455502')) {
      used.push(pan);
      statuses.push((await lookup({ pan }, flood)).status);
    }
    expect(statuses.slice(0, 30).every((s) => s === 200)).to.equal(true);
    expect(statuses[30]).to.equal(429);
    // Another till has its own budget.
    expect((await lookup({ pan: TEST_PANS.visa[0] })).status).to.equal(200);
    used.push(TEST_PANS.visa[0]);
  });

  it('when everything above has run, then no presented card number is in the database, the logs or any response', async () => {
    const tables = (
      (await svc.db.knex.raw(
        `select table_name from information_schema.tables where table_schema = current_schema() and table_type = 'BASE TABLE'`,
      )) as { rows: { table_name: string }[] }
    ).rows.map((r) => r.table_name);
    const dump: string[] = [];
    for (const table of tables) {
      const rows = (await svc.db.knex.raw(`select t::text as row from ?? t`, [table])) as { rows: { row: string }[] };
      dump.push(...rows.rows.map((r) => r.row));
    }
    const text = dump.join('\n');
    const logs = svc.logs();
    expect(used.length).to.be.greaterThan(30);
    expect(text, 'the dump holds the returns').to.include('rf-till-first');
    for (const pan of used) {
      expect(text, 'database').not.to.match(panPattern(pan));
      expect(logs, 'logs').not.to.match(panPattern(pan));
      for (const body of responses) expect(body, 'response').not.to.match(panPattern(pan));
    }
  });

  describe('two service instances on one PostgreSQL', () => {
    let a: TestService;
    let b: TestService;

    before(async function () {
      if (!usingPostgres) this.skip();
      // Correctness under contention, not speed: a spend waits its turn on the account lock, so on a
      // shared machine the last of 100 may wait past the default 5 s connection acquisition.
      const env = await testEnv({ DB_POOL_MAX: '20', DB_CONNECT_TIMEOUT_MS: '60000' });
      a = await startTestService({ env });
      b = await startTestService({ env: { ...env, DATA_DIR: `${env['DATA_DIR'] as string}-b` }, db: a.db });
    });
    after(async () => {
      await b?.close();
      await a?.close();
    });

    it('when 100 store-credit spends of 1 race on both instances for 50 of credit, then exactly 50 succeed and the balance is 0, never below', async () => {
      const pan = generatePans(1, '455503')[0] as string;
      const s = await newShopper(a, pan);
      const p = payment(s, { amount: 5_000, channel: 'online' });
      await p.send(a, { type: 'authorised' });
      await p.send(b, { type: 'captured' });
      const paymentId = (await a.db.knex('payments').where({ external_id: p.id }).first('id')).id as string;
      const issued = await a.request('POST', '/v1/returns', {
        token: tillToken,
        headers: { 'idempotency-key': 'two-inst-return' },
        json: { card: { pan }, paymentId, amount: 50, mode: 'store_credit', reference: 'receipt-race' },
      });
      expect(issued.status, issued.text).to.equal(201);
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) => spendStoreCredit(i % 2 === 0 ? a : b, s, 1, `sc-race-${i}`)),
      );
      expect(results.filter((r) => r.status === 201)).to.have.length(50);
      expect(
        results.filter((r) => r.status === 409).every((r) => r.body.code === 'INSUFFICIENT_STORE_CREDIT'),
      ).to.equal(true);
      expect(results.filter((r) => r.status === 409)).to.have.length(50);
      const row = await a.db.knex('store_credit_balances').where({ shopper_ref: s.shopperRef }).first();
      expect(row).to.include({ balance: 0, issued: 50, spent: 50 });
      expect((await checkLedger(a.db.knex)).violations).to.deep.equal([]);
      for (const logs of [a.logs(), b.logs()]) expect(logs).not.to.match(panPattern(pan));
    });
  });
});
