import { expect } from 'chai';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { signToken } from '../support/auth.js';
import { usingPostgres } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { paymentId } from '../support/webhooks.js';
import { balance, newShopper, payment, type Shopper } from './support.js';

describe('loyalty: goodwill adjustments and missing-points claims', function () {
  this.timeout(180_000);
  let svc: TestService;
  const pans = generatePans(40, '433334');
  let next = 0;
  const shopper = (on: TestService = svc): Promise<Shopper> => newShopper(on, pans[next++] as string);
  const operator = (sub: string) => signToken({ scope: 'loyalty:admin', subject: sub });

  async function adjust(
    on: TestService,
    shopperRef: string,
    body: Record<string, unknown>,
    key: string,
    token?: string,
  ) {
    return on.request('POST', `/v1/admin/loyalty/shoppers/${shopperRef}/adjustments`, {
      token: token ?? (await operator('agent-main')),
      headers: { 'idempotency-key': key },
      json: body,
    });
  }

  before(async () => {
    svc = await startTestService({ env: await testEnv({ LOYALTY_GOODWILL_DAILY_CAP: '1000' }) });
  });
  afterEach(async () => {
    expect((await checkLedger(svc.db.knex)).violations).to.deep.equal([]);
  });
  after(async () => svc.close());

  describe('goodwill', () => {
    it('when an operator grants goodwill points, then a lot of their own, a goodwill_credit entry, a points.available event and an audit entry without the reason', async () => {
      const s = await shopper();
      const res = await adjust(
        svc,
        s.shopperRef,
        { points: 120, reason: 'parcel lost, Jane Doe called' },
        'gw-grant-1',
      );
      expect(res.status, res.text).to.equal(201);
      expect(res.body).to.include({
        kind: 'goodwill',
        points: 120,
        shopperReference: s.shopperRef,
        operator: 'agent-main',
      });
      expect(res.body.balance.available).to.equal(120);
      const lot = await svc.db.knex('loyalty_lots').where({ adjustment_id: res.body.adjustmentId }).first();
      expect(lot).to.include({ payment_id: null, remaining: 120 });
      expect(lot.expires_at).to.not.equal(null);
      const entries = await svc.db
        .knex('loyalty_entries')
        .where({ shopper_ref: s.shopperRef })
        .select('kind', 'points');
      expect(entries).to.deep.equal([{ kind: 'goodwill_credit', points: 120 }]);
      const events = await svc.db
        .knex('outbound_events')
        .where({ shopper_ref: s.shopperRef, type: 'points.available' });
      expect(events).to.have.length(1);
      const audit = await svc.db.knex('audit_events').where({ resource: res.body.adjustmentId });
      expect(audit).to.have.length(1);
      expect(audit[0]).to.include({ action: 'loyalty.goodwill.adjusted', actor: 'agent-main', outcome: 'success' });
      expect(JSON.stringify(audit[0])).to.not.match(/Jane|parcel/);
    });

    it('when the same Idempotency-Key is replayed, then the stored response; with another body, then 409 IDEMPOTENCY_KEY_REUSED', async () => {
      const s = await shopper();
      const first = await adjust(svc, s.shopperRef, { points: 30, reason: 'sorry' }, 'gw-idem-1');
      const again = await adjust(svc, s.shopperRef, { points: 30, reason: 'sorry' }, 'gw-idem-1');
      expect(again.status).to.equal(201);
      expect(again.headers.get('idempotent-replayed')).to.equal('true');
      expect(again.body.adjustmentId).to.equal(first.body.adjustmentId);
      const other = await adjust(svc, s.shopperRef, { points: 31, reason: 'sorry' }, 'gw-idem-1');
      expect(other.status).to.equal(409);
      expect(other.body.code).to.equal('IDEMPOTENCY_KEY_REUSED');
      expect((await balance(svc, s.shopperRef)).available).to.equal(30);
    });

    it('when an operator debits points, then they are taken soonest-expiring first; beyond the balance, 409 INSUFFICIENT_POINTS and nothing written', async () => {
      const s = await shopper();
      await adjust(svc, s.shopperRef, { points: 50, reason: 'grant' }, 'gw-debit-0');
      const debit = await adjust(svc, s.shopperRef, { points: -20, reason: 'granted twice by mistake' }, 'gw-debit-1');
      expect(debit.status, debit.text).to.equal(201);
      expect(debit.body.balance.available).to.equal(30);
      const too = await adjust(svc, s.shopperRef, { points: -31, reason: 'too much' }, 'gw-debit-2');
      expect(too.status).to.equal(409);
      expect(too.body.code).to.equal('INSUFFICIENT_POINTS');
      const kinds = await svc.db.knex('loyalty_entries').where({ shopper_ref: s.shopperRef }).pluck('kind');
      expect(kinds.sort()).to.deep.equal(['goodwill_credit', 'goodwill_debit']);
    });

    it('when the input is bad, then problem+json with a stable code and nothing written', async () => {
      const s = await shopper();
      const cases: [Record<string, unknown>, number, string][] = [
        [{ points: 0, reason: 'zero' }, 422, 'ADJUSTMENT_INVALID'],
        [{ points: 10 }, 400, 'VALIDATION_FAILED'],
        [{ points: 10, reason: `card ${pans[39] as string}` }, 422, 'CARD_NUMBER_NOT_ALLOWED'],
        [
          { points: -10, reason: 'claim debit', missingPayment: { provider: 'platform', paymentId: 'abc-def' } },
          422,
          'ADJUSTMENT_INVALID',
        ],
      ];
      for (const [body, status, code] of cases) {
        const res = await adjust(svc, s.shopperRef, body, `gw-bad-${code}-${status}`);
        expect(res.status, res.text).to.equal(status);
        expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
        expect(res.body.code).to.equal(code);
      }
      expect(await svc.db.knex('loyalty_adjustments').where({ shopper_ref: s.shopperRef })).to.have.length(0);
      const shopperToken = await signToken({
        scope: 'loyalty:read loyalty:write loyalty:redeem',
        shopperRef: s.shopperRef,
      });
      expect(
        (await adjust(svc, s.shopperRef, { points: 5, reason: 'self' }, 'gw-self-1', shopperToken)).status,
      ).to.equal(403);
    });

    it('when 20 grants of 100 by one operator race against a cap of 1000, then exactly 10 pass; another operator is not affected', async () => {
      const s = await shopper();
      const token = await operator('agent-racer');
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          adjust(svc, s.shopperRef, { points: 100, reason: 'race' }, `gw-cap-${i}`, token),
        ),
      );
      expect(results.filter((r) => r.status === 201)).to.have.length(10);
      const refused = results.filter((r) => r.status !== 201);
      expect(refused.map((r) => r.body.code)).to.deep.equal(Array(10).fill('ADJUSTMENT_CAP_EXCEEDED'));
      expect((await balance(svc, s.shopperRef)).available).to.equal(1000);
      const totals = await svc.db.knex('loyalty_operator_daily_grants').where({ operator: 'agent-racer' });
      expect(totals.map((t) => Number(t.points))).to.deep.equal([1000]);
      const other = await adjust(
        svc,
        s.shopperRef,
        { points: 100, reason: 'other agent' },
        'gw-cap-other',
        await operator('agent-other'),
      );
      expect(other.status).to.equal(201);
      const refusedAgain = await adjust(svc, s.shopperRef, { points: 1, reason: 'one more' }, 'gw-cap-last', token);
      expect(refusedAgain.body.code).to.equal('ADJUSTMENT_CAP_EXCEEDED');
    });

    it('when an insider lowers a daily total to get past the cap, then loyalty check reports it', async () => {
      const s = await shopper();
      const token = await operator('agent-tamper');
      expect(
        (await adjust(svc, s.shopperRef, { points: 400, reason: 'tamper' }, 'gw-tamper-1', token)).status,
      ).to.equal(201);
      await svc.db.knex('loyalty_operator_daily_grants').where({ operator: 'agent-tamper' }).update({ points: 0 });
      const report = await checkLedger(svc.db.knex);
      expect(report.violations.map((v) => v.check)).to.include(
        "each operator's daily grant total equals its adjustments' grants that day",
      );
      await svc.db.knex('loyalty_operator_daily_grants').where({ operator: 'agent-tamper' }).update({ points: 400 });
    });
  });

  describe('missing-points claims', () => {
    const claim = (s: Shopper, externalId: string, points: number, key: string, on: TestService = svc) =>
      adjust(
        on,
        s.shopperRef,
        { points, reason: 'receipt shown', missingPayment: { provider: 'platform', paymentId: externalId } },
        key,
      );

    it('when a claim was granted and the payment arrives later, then the payment earns nothing', async () => {
      const s = await shopper();
      const p = payment(s, { amount: 4_200, channel: 'in_store' });
      const granted = await claim(s, p.id, 42, 'claim-first-1');
      expect(granted.status, granted.text).to.equal(201);
      expect(granted.body).to.include({ kind: 'missing_points', points: 42 });
      await p.send(svc, { type: 'authorised' });
      await p.send(svc, { type: 'captured' });
      expect((await balance(svc, s.shopperRef)).available).to.equal(42);
      const pay = await svc.db.knex('payments').where({ external_id: p.id }).first('id');
      expect(await svc.db.knex('loyalty_lots').where({ payment_id: pay.id })).to.have.length(0);
      const kinds = await svc.db.knex('loyalty_entries').where({ shopper_ref: s.shopperRef }).pluck('kind');
      expect(kinds).to.deep.equal(['missing_points_credit']);
    });

    it('when the payment earned, then a claim for it is 409 CLAIM_PAYMENT_EARNED and nothing is written', async () => {
      const s = await shopper();
      const p = payment(s, { amount: 3_000, channel: 'in_store' });
      await p.send(svc, { type: 'authorised' });
      const refused = await claim(s, p.id, 30, 'claim-late-1');
      expect(refused.status).to.equal(409);
      expect(refused.body.code).to.equal('CLAIM_PAYMENT_EARNED');
      expect((await balance(svc, s.shopperRef)).available).to.equal(30);
      expect(await svc.db.knex('loyalty_adjustments').where({ shopper_ref: s.shopperRef })).to.have.length(0);
      // The same payment claimed twice: the second is refused too.
      const other = paymentId('never');
      expect((await claim(s, other, 5, 'claim-twice-1')).status).to.equal(201);
      expect((await claim(s, other, 5, 'claim-twice-2')).body.code).to.equal('CLAIM_PAYMENT_EARNED');
    });

    it('when a claim and its payment race, either way round, then exactly one of them earns', async () => {
      for (let round = 0; round < 6; round++) {
        const s = await shopper();
        const p = payment(s, { amount: 1_000, channel: 'in_store' });
        const claimFirst = round % 2 === 0;
        const sendPayment = () => p.send(svc, { type: 'authorised' });
        const sendClaim = () => claim(s, p.id, 77, `claim-race-${round}`);
        const [a, b] = claimFirst
          ? await Promise.all([sendClaim(), sendPayment()])
          : await Promise.all([sendPayment(), sendClaim()]).then(([x, y]) => [y, x] as const);
        void b;
        const available = (await balance(svc, s.shopperRef)).available;
        if (a.status === 201) expect(available, `round ${round}`).to.equal(77);
        else {
          expect(a.body.code).to.equal('CLAIM_PAYMENT_EARNED');
          expect(available, `round ${round}`).to.equal(10);
        }
      }
    });
  });

  describe('two service instances on one PostgreSQL', () => {
    let a: TestService;
    let b: TestService;

    before(async function () {
      if (!usingPostgres) this.skip();
      const env = await testEnv({ DB_POOL_MAX: '20', LOYALTY_GOODWILL_DAILY_CAP: '500' });
      a = await startTestService({ env });
      b = await startTestService({ env: { ...env, DATA_DIR: `${env['DATA_DIR'] as string}-b` }, db: a.db });
    });
    after(async () => {
      await b?.close();
      await a?.close();
    });

    it('when 40 grants of 25 race on both instances against a cap of 500, then exactly 20 pass', async () => {
      const s = await shopper(a);
      const token = await operator('agent-two');
      const results = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          adjust(i % 2 === 0 ? a : b, s.shopperRef, { points: 25, reason: 'race' }, `gw-two-${i}`, token),
        ),
      );
      expect(results.filter((r) => r.status === 201)).to.have.length(20);
      expect((await balance(a, s.shopperRef)).available).to.equal(500);
      expect((await checkLedger(a.db.knex)).violations).to.deep.equal([]);
    });

    it('when claims and their payments race on both instances, then each payment earns exactly once', async () => {
      const shoppers = await Promise.all(Array.from({ length: 8 }, () => shopper(a)));
      const payments = shoppers.map((s) => ({ s, p: payment(s, { amount: 1_000, channel: 'in_store' }) }));
      await Promise.all(
        payments.flatMap(({ s, p }, i) => [
          p.send(i % 2 === 0 ? a : b, { type: 'authorised' }),
          adjust(
            i % 2 === 0 ? b : a,
            s.shopperRef,
            { points: 77, reason: 'race', missingPayment: { provider: 'platform', paymentId: p.id } },
            `claim-two-${i}`,
          ),
        ]),
      );
      for (const { s } of payments) expect([10, 77]).to.include((await balance(a, s.shopperRef)).available);
      expect((await checkLedger(a.db.knex)).violations).to.deep.equal([]);
    });
  });
});
