/**
 * Abuse controls (issue 21), each per programme version: what a refund of points already spent does
 * (write_off, clawback into a bounded negative balance, debt paid from future earnings), the
 * per-shopper earning cap, the redemption velocity limit; and the scenarios loyalty systems are known
 * to get wrong (buy → redeem → refund, partial refunds rounding up, lots not taken soonest-expiring
 * first, a double redemption race).
 */
import { expect } from 'chai';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import {
  adyenPayment,
  aliasShopper,
  entriesOf,
  movableClock,
  publishRules,
  type AliasShopper,
} from './hold-support.js';
import { balance, redeem } from './support.js';

describe('loyalty: abuse controls', function () {
  this.timeout(120_000);
  let svc: TestService;
  const time = movableClock();
  let keys = 0;
  const key = (): string => `abuse-key-${process.pid}-k${++keys}`;

  /** A captured online payment of `pounds` (one point per pound). */
  const buy = async (s: AliasShopper, pounds: number) => {
    const p = adyenPayment(s, pounds * 100);
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'captured', id: 'c1', amount: pounds * 100 });
    return p;
  };

  before(async () => {
    svc = await startTestService({ clock: time.clock });
  });
  afterEach(async () => {
    time.set(0);
    expect((await checkLedger(svc.db.knex)).violations).to.deep.equal([]);
  });
  after(async () => svc.close());

  describe('buy → redeem → refund', () => {
    it('under write_off, the shortfall beyond the negative allowance is written off: the shopper keeps what was redeemed (the stated policy)', async () => {
      await publishRules(svc, { spentPointsPolicy: 'write_off' });
      const s = await aliasShopper(svc);
      const p = await buy(s, 100);
      expect((await redeem(svc, s.shopperRef, 100, key())).status).to.equal(201);
      await p.send(svc, { type: 'refunded', id: 'r1', amount: 10_000 });
      expect(await balance(svc, s.shopperRef)).to.include({ available: 0 });
      expect((await entriesOf(svc, p.psp)).filter(([k]) => k === 'written_off')).to.deep.equal([['written_off', -100]]);
    });

    it('under clawback, the balance goes negative down to the limit, the rest is written off, and the next earnings pay the debt first', async () => {
      await publishRules(svc, { spentPointsPolicy: 'clawback', clawbackLimit: 30 });
      const s = await aliasShopper(svc);
      const p = await buy(s, 100);
      expect((await redeem(svc, s.shopperRef, 100, key())).status).to.equal(201);
      await p.send(svc, { type: 'refunded', id: 'r1', amount: 10_000 });
      expect(await balance(svc, s.shopperRef)).to.include({ available: -30 });
      expect((await entriesOf(svc, p.psp)).filter(([k]) => k === 'written_off')).to.deep.equal([['written_off', -70]]);
      // No redemption while the balance is negative.
      expect((await redeem(svc, s.shopperRef, 1, key())).status).to.equal(409);
      const next = await buy(s, 50);
      expect(await balance(svc, s.shopperRef)).to.include({ available: 20 });
      expect(await entriesOf(svc, next.psp)).to.deep.include(['debt_settled', 30]);
    });

    it('under debt, the whole shortfall is owed and taken from future earnings: the loop keeps nothing', async () => {
      await publishRules(svc, { spentPointsPolicy: 'debt' });
      const s = await aliasShopper(svc);
      const p = await buy(s, 100);
      expect((await redeem(svc, s.shopperRef, 100, key())).status).to.equal(201);
      await p.send(svc, { type: 'refunded', id: 'r1', amount: 10_000 });
      expect(await balance(svc, s.shopperRef)).to.include({ available: -100 });
      expect((await entriesOf(svc, p.psp)).map(([k]) => k)).to.not.include('written_off');
      await buy(s, 150);
      expect(await balance(svc, s.shopperRef)).to.include({ available: 50 });
      // Net over the loop: 100 earned, 100 redeemed, 100 owed and paid back; 150 earned since.
      const lots = await svc.db.knex('loyalty_lots').where({ shopper_ref: s.shopperRef });
      expect(lots.reduce((sum, l) => sum + Number(l.written_off), 0)).to.equal(0);
    });

    it('a refund of spent points takes the shopper’s other lots soonest-expiring first, before any debt', async () => {
      await publishRules(svc, { spentPointsPolicy: 'debt' });
      const s = await aliasShopper(svc);
      const p = await buy(s, 100);
      expect((await redeem(svc, s.shopperRef, 100, key())).status).to.equal(201);
      await buy(s, 50);
      await buy(s, 50);
      const lots = await svc.db.knex('loyalty_lots').where({ shopper_ref: s.shopperRef }).orderBy('created_at');
      const [, later, sooner] = lots as { id: string; expires_at: Date }[];
      // The newest lot expires first: it must be taken first.
      await svc.db
        .knex('loyalty_lots')
        .where({ id: sooner!.id })
        .update({ expires_at: new Date(Date.now() + 86_400_000) });
      await p.send(svc, { type: 'refunded', id: 'r1', amount: 8_000 });
      const { id: paymentRow } = await svc.db.knex('payments').where({ external_id: p.psp }).first('id');
      const taken = await svc.db
        .knex('loyalty_entries')
        .where({ payment_id: paymentRow, kind: 'reversal' })
        .orderBy('business_key')
        .select('lot_id', 'points');
      expect(taken).to.have.deep.members([
        { lot_id: sooner!.id, points: -50 },
        { lot_id: later!.id, points: -30 },
      ]);
      expect(await balance(svc, s.shopperRef)).to.include({ available: 20 });
    });
  });

  it('when a payment is refunded in small parts, then the reversals never add up to more than was earned, and a full refund takes back exactly it', async () => {
    await publishRules(svc, {});
    const s = await aliasShopper(svc);
    const p = adyenPayment(s, 1_050);
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'captured', id: 'c1', amount: 1_050 });
    const reversed = async (): Promise<number> =>
      -(await entriesOf(svc, p.psp)).filter(([k]) => k === 'reversal').reduce((sum, [, n]) => sum + n, 0);
    const seen: number[] = [];
    for (let i = 1; i <= 7; i += 1) {
      await p.send(svc, { type: 'refunded', id: `r${i}`, amount: 150 });
      seen.push(await reversed());
    }
    // round(10 × refunded ÷ 10.50), cumulative: never above 10, never going down.
    expect(seen).to.deep.equal([1, 3, 4, 6, 7, 9, 10]);
    expect(await balance(svc, s.shopperRef)).to.include({ available: 0 });
  });

  it('when two redemptions race for the same points, then exactly one is spent', async () => {
    await publishRules(svc, {});
    const s = await aliasShopper(svc);
    await buy(s, 100);
    const results = await Promise.all([redeem(svc, s.shopperRef, 80, key()), redeem(svc, s.shopperRef, 80, key())]);
    expect(results.map((r) => r.status).sort()).to.deep.equal([201, 409]);
    expect(await balance(svc, s.shopperRef)).to.include({ available: 20 });
  });

  describe('the redemption velocity limit', () => {
    it('when more redemptions than the window allows race, then exactly the allowed number succeed and the rest get 429 REDEMPTION_VELOCITY_EXCEEDED with Retry-After', async () => {
      await publishRules(svc, { redemptionVelocity: { windowSeconds: 600, maxCount: 2 } });
      const s = await aliasShopper(svc);
      await buy(s, 100);
      const results = await Promise.all([1, 2, 3, 4, 5].map(() => redeem(svc, s.shopperRef, 10, key())));
      expect(results.filter((r) => r.status === 201)).to.have.length(2);
      const refused = results.filter((r) => r.status !== 201);
      expect(refused.map((r) => r.status)).to.deep.equal([429, 429, 429]);
      for (const r of refused) {
        expect(r.headers.get('content-type')).to.match(/^application\/problem\+json/);
        expect(r.body).to.include({ code: 'REDEMPTION_VELOCITY_EXCEEDED', windowSeconds: 600, maxCount: 2 });
        const retryAfter = Number(r.headers.get('retry-after'));
        expect(retryAfter).to.be.within(590, 600);
      }
      expect(await balance(svc, s.shopperRef)).to.include({ available: 80 });
      // Once the window has passed, the shopper may redeem again (a token still valid then).
      const token = await signToken({ scope: 'loyalty:redeem', shopperRef: s.shopperRef, expiresIn: 900 });
      time.set(601_000);
      const later = await redeem(svc, s.shopperRef, 10, key(), token);
      expect(later.status, later.text).to.equal(201);
    });

    it('when the points in the window would pass maxPoints, then 429; one redemption above maxPoints, then 422 REDEMPTION_ABOVE_LIMIT; nothing is stored', async () => {
      await publishRules(svc, { redemptionVelocity: { windowSeconds: 3_600, maxPoints: 100 } });
      const s = await aliasShopper(svc);
      await buy(s, 300);
      expect((await redeem(svc, s.shopperRef, 60, key())).status).to.equal(201);
      const over = await redeem(svc, s.shopperRef, 50, key());
      expect(over.status).to.equal(429);
      expect(over.body.code).to.equal('REDEMPTION_VELOCITY_EXCEEDED');
      const huge = await redeem(svc, s.shopperRef, 101, key());
      expect(huge.status).to.equal(422);
      expect(huge.body).to.include({ code: 'REDEMPTION_ABOVE_LIMIT', maxPoints: 100 });
      expect((await redeem(svc, s.shopperRef, 40, key())).status).to.equal(201);
      expect(await balance(svc, s.shopperRef)).to.include({ available: 200 });
    });
  });

  describe('the earning cap', () => {
    it('when a shopper’s payments pass the period’s cap, then the base points stop at it, and a refund does not give the cap back', async () => {
      await publishRules(svc, { earningCap: { points: 150, period: 'day' } });
      const s = await aliasShopper(svc);
      const first = await buy(s, 100);
      await buy(s, 100);
      expect(await balance(svc, s.shopperRef)).to.include({ available: 150 });
      await first.send(svc, { type: 'refunded', id: 'r1', amount: 10_000 });
      expect(await balance(svc, s.shopperRef)).to.include({ available: 50 });
      const third = await buy(s, 100);
      expect(await balance(svc, s.shopperRef)).to.include({ available: 50 });
      expect(await entriesOf(svc, third.psp)).to.deep.equal([]);
    });

    it('when payments race for the last of the cap, then together they earn exactly the cap', async () => {
      await publishRules(svc, { earningCap: { points: 250, period: 'month' } });
      const s = await aliasShopper(svc);
      const payments = [1, 2, 3, 4, 5].map(() => adyenPayment(s, 10_000));
      await Promise.all(payments.map((p) => p.send(svc, { type: 'authorised' })));
      await Promise.all(payments.map((p) => p.send(svc, { type: 'captured', id: 'c1', amount: 10_000 })));
      expect(await balance(svc, s.shopperRef)).to.include({ available: 250, pending: 0 });
      const lots = await svc.db.knex('loyalty_lots').where({ shopper_ref: s.shopperRef });
      expect(lots.reduce((sum, l) => sum + Number(l.cap_reserved ?? 0), 0)).to.equal(250);
    });
  });
});
