import { expect } from 'chai';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { signToken } from '../support/auth.js';
import { usingPostgres } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { balance, newShopper, payment, redeem, type Shopper } from './support.js';

describe('loyalty: redemptions', function () {
  this.timeout(120_000);
  let svc: TestService;
  const pans = generatePans(40, '400000');
  let next = 0;

  /** A shopper with `points` available (one captured online payment of that many pounds). */
  async function shopperWith(points: number): Promise<Shopper> {
    const s = await newShopper(svc, pans[next++] as string);
    const p = payment(s, { amount: points * 100 });
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'captured' });
    return s;
  }

  before(async () => {
    svc = await startTestService();
  });
  afterEach(async () => {
    expect((await checkLedger(svc.db.knex)).violations).to.deep.equal([]);
  });
  after(async () => svc.close());

  it('when a shopper redeems within their balance, then 201 with the balance after, drawn from the soonest-expiring lots first', async () => {
    const s = await shopperWith(30);
    const second = payment(s, { amount: 2_000 });
    await second.send(svc, { type: 'authorised' });
    await second.send(svc, { type: 'captured' });
    // Make the second lot expire first: it must be drawn before the older one.
    const lots = await svc.db.knex('loyalty_lots').where({ shopper_ref: s.shopperRef }).orderBy('created_at');
    await svc.db
      .knex('loyalty_lots')
      .where({ id: lots[1].id })
      .update({ expires_at: new Date(Date.now() + 86_400_000) });

    const res = await redeem(svc, s.shopperRef, 25, 'redeem-lots-1');
    expect(res.status, res.text).to.equal(201);
    expect(res.body).to.include({ points: 25, state: 'completed', reference: 'order-redeem-lots-1' });
    expect(res.body.balance).to.include({ available: 25, pending: 0 });
    const drawn = await svc.db
      .knex('loyalty_entries')
      .where({ redemption_id: res.body.redemptionId, kind: 'redemption' })
      .select('lot_id', 'points');
    expect(drawn).to.have.deep.members([
      { lot_id: lots[1].id, points: -20 },
      { lot_id: lots[0].id, points: -5 },
    ]);
  });

  it('when a shopper redeems more than they have, then 409 INSUFFICIENT_POINTS and nothing is written', async () => {
    const s = await shopperWith(10);
    const before = await svc.db.knex('loyalty_entries').count({ n: '*' }).first();
    const res = await redeem(svc, s.shopperRef, 11, 'too-much-1');
    expect(res.status).to.equal(409);
    expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
    expect(res.body).to.include({ code: 'INSUFFICIENT_POINTS', available: 10 });
    expect(await svc.db.knex('loyalty_entries').count({ n: '*' }).first()).to.deep.equal(before);
    expect(await svc.db.knex('idempotency_keys').where({ key: 'too-much-1' })).to.have.length(0);
    expect((await balance(svc, s.shopperRef)).available).to.equal(10);
    // A refused request stored nothing: the same key works once the points are there.
    const more = payment(s, { amount: 100 });
    await more.send(svc, { type: 'authorised' });
    await more.send(svc, { type: 'captured' });
    expect((await redeem(svc, s.shopperRef, 11, 'too-much-1')).status).to.equal(201);
  });

  it('when the same Idempotency-Key comes with the same body, then the stored response; with another body, then 409 IDEMPOTENCY_KEY_REUSED', async () => {
    const s = await shopperWith(10);
    const first = await redeem(svc, s.shopperRef, 4, 'idem-key-1');
    expect(first.status).to.equal(201);
    expect(first.headers.get('idempotent-replayed')).to.equal(null);
    const again = await redeem(svc, s.shopperRef, 4, 'idem-key-1');
    expect(again.status).to.equal(201);
    expect(again.headers.get('idempotent-replayed')).to.equal('true');
    expect(again.body).to.deep.equal(first.body);
    const other = await redeem(svc, s.shopperRef, 5, 'idem-key-1');
    expect(other.status).to.equal(409);
    expect(other.body.code).to.equal('IDEMPOTENCY_KEY_REUSED');
    expect((await balance(svc, s.shopperRef)).available).to.equal(6);
    const stored = await svc.db.knex('idempotency_keys').where({ key: 'idem-key-1' }).first();
    expect(stored.expires_at.getTime() - stored.created_at.getTime()).to.be.at.least(30 * 86_400_000);
  });

  it('when the Idempotency-Key is missing or malformed, then 400 VALIDATION_FAILED', async () => {
    const s = await shopperWith(1);
    const token = await signToken({ scope: 'loyalty:redeem', shopperRef: s.shopperRef });
    const missing = await svc.request('POST', `/v1/shoppers/${s.shopperRef}/redemptions`, {
      token,
      json: { points: 1, reference: 'x' },
    });
    expect(missing.status).to.equal(400);
    expect(missing.body.code).to.equal('VALIDATION_FAILED');
    const bad = await redeem(svc, s.shopperRef, 1, 'short', token);
    expect(bad.status).to.equal(400);
  });

  it('when the points are zero, negative, fractional or huge, then 400 VALIDATION_FAILED', async () => {
    const s = await shopperWith(1);
    const token = await signToken({ scope: 'loyalty:redeem', shopperRef: s.shopperRef });
    for (const points of [0, -5, 1.5, 1e12, '3', null]) {
      const res = await svc.request('POST', `/v1/shoppers/${s.shopperRef}/redemptions`, {
        token,
        headers: { 'idempotency-key': `bad-points-${String(points)}` },
        json: { points, reference: 'x' },
      });
      expect(res.status, String(points)).to.equal(400);
    }
    expect((await balance(svc, s.shopperRef)).available).to.equal(1);
  });

  it('when one Idempotency-Key is sent 20 times at once, then one redemption', async () => {
    const s = await shopperWith(50);
    const token = await signToken({ scope: 'loyalty:redeem', shopperRef: s.shopperRef });
    const results = await Promise.all(
      Array.from({ length: 20 }, () => redeem(svc, s.shopperRef, 7, 'same-key-storm', token)),
    );
    expect(results.map((r) => r.status)).to.deep.equal(Array(20).fill(201));
    expect(new Set(results.map((r) => r.body.redemptionId)).size).to.equal(1);
    expect(await svc.db.knex('loyalty_redemptions').where({ shopper_ref: s.shopperRef })).to.have.length(1);
    expect((await balance(svc, s.shopperRef)).available).to.equal(43);
  });

  it('when a redemption is reversed, then its points return to their lots exactly once, and only an admin may do it', async () => {
    const s = await shopperWith(20);
    const r = await redeem(svc, s.shopperRef, 15, 'to-reverse-1');
    const path = `/v1/shoppers/${s.shopperRef}/redemptions/${r.body.redemptionId}/reverse`;
    const asShopper = await svc.request('POST', path, {
      token: await signToken({ scope: 'loyalty:redeem loyalty:read loyalty:write', shopperRef: s.shopperRef }),
    });
    expect(asShopper.status).to.equal(403);
    const admin = await signToken({ scope: 'loyalty:admin' });
    const [a, b] = await Promise.all([
      svc.request('POST', path, { token: admin }),
      svc.request('POST', path, { token: admin }),
    ]);
    expect([a.status, b.status]).to.deep.equal([200, 200]);
    expect(a.body.state).to.equal('reversed');
    expect((await balance(svc, s.shopperRef)).available).to.equal(20);
    expect((await svc.request('POST', path, { token: admin })).body.balance.available).to.equal(20);
    const returned = await svc.db
      .knex('loyalty_entries')
      .where({ redemption_id: r.body.redemptionId, kind: 'redemption_reversed' });
    expect(returned.reduce((sum, e) => sum + e.points, 0)).to.equal(15);
    const audit = await svc.db
      .knex('audit_events')
      .where({ action: 'loyalty.redemption.reversed', resource: r.body.redemptionId });
    expect(audit).to.have.length(1);
  });

  it('when 200 redemptions race for 50 points, then exactly 50 succeed and the balance is exactly 0, never negative', async () => {
    const s = await shopperWith(50);
    const token = await signToken({ scope: 'loyalty:redeem', shopperRef: s.shopperRef });
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => redeem(svc, s.shopperRef, 1, `race-one-${i}`, token)),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((st) => st === 201)).to.have.length(50);
    expect(statuses.filter((st) => st === 409)).to.have.length(150);
    expect(results.filter((r) => r.status === 409).every((r) => r.body.code === 'INSUFFICIENT_POINTS')).to.equal(true);
    expect((await balance(svc, s.shopperRef)).available).to.equal(0);
  });

  describe('two service instances on one PostgreSQL', () => {
    let a: TestService;
    let b: TestService;

    before(async function () {
      if (!usingPostgres) this.skip();
      const env = await testEnv({ DB_POOL_MAX: '20' });
      a = await startTestService({ env });
      b = await startTestService({ env: { ...env, DATA_DIR: `${env['DATA_DIR'] as string}-b` }, db: a.db });
    });
    after(async () => {
      await b?.close();
      await a?.close();
    });

    it('when 200 concurrent redemptions of 1 point hit both instances for a shopper with 50, then exactly 50 succeed, the balance is 0 and the check is clean', async () => {
      const s = await newShopper(a, generatePans(1, '455555')[0] as string);
      const p = payment(s, { amount: 5_000 });
      await p.send(a, { type: 'authorised' });
      await p.send(b, { type: 'captured' });
      const token = await signToken({ scope: 'loyalty:redeem', shopperRef: s.shopperRef });
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) => redeem(i % 2 === 0 ? a : b, s.shopperRef, 1, `two-inst-${i}`, token)),
      );
      expect(results.filter((r) => r.status === 201)).to.have.length(50);
      expect(results.filter((r) => r.status === 409)).to.have.length(150);
      const account = await a.db.knex('loyalty_accounts').where({ shopper_ref: s.shopperRef }).first();
      expect(account).to.include({ available: 0, debt: 0 });
      expect((await checkLedger(a.db.knex)).violations).to.deep.equal([]);
    });

    it('when one Idempotency-Key is fired 20 times at both instances, then one redemption', async () => {
      const s = await newShopper(a, generatePans(1, '455556')[0] as string);
      const p = payment(s, { amount: 5_000, channel: 'in_store' });
      await p.send(a, { type: 'authorised' });
      const token = await signToken({ scope: 'loyalty:redeem', shopperRef: s.shopperRef });
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => redeem(i % 2 === 0 ? a : b, s.shopperRef, 3, 'two-inst-same-key', token)),
      );
      expect(results.every((r) => r.status === 201)).to.equal(true);
      expect(new Set(results.map((r) => r.body.redemptionId)).size).to.equal(1);
      const account = await a.db.knex('loyalty_accounts').where({ shopper_ref: s.shopperRef }).first();
      expect(account.available).to.equal(50 - 3);
    });
  });
});
