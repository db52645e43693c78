import { expect } from 'chai';
import { runLoyaltyCli } from '../../src/cli/loyalty.js';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { signToken } from '../support/auth.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { newShopper, payment, redeem, type Shopper } from './support.js';

const LIABILITY_CHECK = 'the liability report (from the entries) equals the ledger projections';
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const month = (d: Date) => d.toISOString().slice(0, 7);

/**
 * One shopper's history, in order: earn 100 (t1), then 50 pending, a goodwill grant of 20 and a
 * redemption of 30 (t2), then everything available expires (t3). The file's database holds nothing
 * else, so the report's figures are this history's.
 */
describe('loyalty: the points liability for finance', function () {
  this.timeout(180_000);
  let svc: TestService;
  let offset = 0;
  const clock = (): Date => new Date(Date.now() + offset);
  let s: Shopper;
  let t1: Date;
  let t2: Date;
  let t3: Date;
  let e1: Date;
  let admin: string;
  const cli = async (...argv: string[]) => {
    let out = '';
    const deps = { knex: svc.db.knex, ledger: svc.service.loyalty };
    const code = await runLoyaltyCli(argv, deps, { out: (t) => (out += t), err: (t) => (out += t) });
    return { code, out };
  };
  const report = async (query: string) => {
    const res = await svc.request('GET', `/v1/admin/loyalty/liability${query}`, { token: admin });
    expect(res.status, res.text).to.equal(200);
    return res.body;
  };

  before(async () => {
    const env = await testEnv({ LOYALTY_POINT_VALUES: 'EUR:0.01,USD:0.0125', LOYALTY_EXPIRY_INTERVAL_MS: '0' });
    svc = await startTestService({ env, clock });
    admin = await signToken({ scope: 'loyalty:admin', subject: 'finance-agent' });
    s = await newShopper(svc, generatePans(1, '455557')[0] as string);
    await payment(s, { amount: 10_000, channel: 'in_store' }).send(svc, { type: 'authorised' });
    e1 = new Date(
      (await svc.db.knex('loyalty_lots').where({ shopper_ref: s.shopperRef }).first('expires_at')).expires_at,
    );
    await pause(5);
    t1 = clock();
    await pause(5);
    await payment(s, { amount: 5_000, channel: 'online' }).send(svc, { type: 'authorised' });
    const grant = await svc.request('POST', `/v1/admin/loyalty/shoppers/${s.shopperRef}/adjustments`, {
      token: admin,
      headers: { 'idempotency-key': 'liability-grant-1' },
      json: { points: 20, reason: 'goodwill' },
    });
    expect(grant.status, grant.text).to.equal(201);
    expect((await redeem(svc, s.shopperRef, 30, 'liability-redeem-1')).status).to.equal(201);
    await pause(5);
    t2 = clock();
    await pause(5);
    offset = 400 * 86_400_000;
    const expired = await svc.service.loyalty.expireDue();
    expect(expired.points).to.equal(90);
    t3 = clock();
    // Back to today: tokens are checked on the service's clock. The expiry entries stay in its future.
    offset = 0;
  });
  after(async () => svc.close());

  it('when asked as of a past time, then the figures are the ledger history at that time, not today', async () => {
    const atT1 = await report(`?asOf=${t1.toISOString()}`);
    expect(atT1.outstanding).to.deep.equal({
      available: 100,
      pending: 0,
      lots: 100,
      debt: 0,
      byExpiryMonth: [{ month: month(e1), points: 100 }],
      byTier: [{ tier: 'none', available: 100, pending: 0 }],
    });
    expect(atT1.period).to.include({ openingAvailable: 0, closingAvailable: 100, issued: 100, redeemed: 0 });

    const atT2 = await report(`?asOf=${t2.toISOString()}`);
    expect(atT2.outstanding).to.include({ available: 90, pending: 50, lots: 90, debt: 0 });
    expect(atT2.outstanding.byExpiryMonth.reduce((sum: number, m: { points: number }) => sum + m.points, 0)).to.equal(
      90,
    );
    expect(atT2.period).to.include({ issued: 100, adjusted: 20, redeemed: 30, expired: 0, reversed: 0, other: 0 });
    expect(atT2.values).to.deep.equal([
      { currency: 'EUR', pointValue: '0.01', available: '0.90', pending: '0.50' },
      { currency: 'USD', pointValue: '0.0125', available: '1.1250', pending: '0.6250' },
    ]);
    expect(atT2.breakage).to.deep.equal({ rate: null, expired: 0, unusedInLapsedLots: 0, redeemed: 0 });
  });

  it('when the lots have lapsed, then the period shows what expired and the breakage rate is expired over expired plus redeemed', async () => {
    const now = await report(`?asOf=${t3.toISOString()}`);
    expect(now.outstanding).to.include({ available: 0, pending: 50, lots: 0 });
    expect(now.outstanding.byExpiryMonth).to.deep.equal([]);
    // 90 expired, 30 redeemed from the lapsed lots: 90 / 120.
    expect(now.breakage).to.deep.equal({ rate: 0.75, expired: 90, unusedInLapsedLots: 0, redeemed: 30 });
    const period = await report(`?from=${new Date(t2.getTime() + 1).toISOString()}&asOf=${t3.toISOString()}`);
    expect(period.period).to.deep.equal({
      openingAvailable: 90,
      closingAvailable: 0,
      issued: 0,
      adjusted: 0,
      redeemed: 0,
      expired: 90,
      reversed: 0,
      other: 0,
    });
  });

  it('when the period starts after asOf, then 400; a shopper token is 403', async () => {
    const bad = await svc.request(
      'GET',
      `/v1/admin/loyalty/liability?from=${t3.toISOString()}&asOf=${t1.toISOString()}`,
      {
        token: admin,
      },
    );
    expect(bad.status).to.equal(400);
    expect(bad.body.code).to.equal('VALIDATION_FAILED');
    const own = await signToken({ scope: 'loyalty:read', shopperRef: s.shopperRef });
    expect((await svc.request('GET', '/v1/admin/loyalty/liability', { token: own })).status).to.equal(403);
  });

  it('when the CLI prints the liability as JSON and as CSV, then both carry the API figures', async () => {
    const json = await cli('liability', '--as-of', t2.toISOString(), '--format', 'json');
    expect(json.code, json.out).to.equal(0);
    expect(JSON.parse(json.out)).to.deep.equal(await report(`?asOf=${t2.toISOString()}`));
    const csv = await cli('liability', '--as-of', t2.toISOString(), '--format', 'csv');
    expect(csv.code, csv.out).to.equal(0);
    const lines = csv.out.trim().split('\n');
    expect(lines[0]).to.equal('section,key,points,value_EUR,value_USD');
    expect(lines).to.include('outstanding,available,90,0.90,1.1250');
    expect(lines).to.include('outstanding,pending,50,0.50,0.6250');
    expect(lines).to.include('period,redeemed,30,0.30,0.3750');
    expect(lines).to.include(`available_by_tier,none,90,0.90,1.1250`);
    const bad = await cli('liability', '--format', 'xml');
    expect(bad.code).to.equal(2);
    const badDate = await cli('liability', '--as-of', 'yesterday');
    expect(badDate.code).to.equal(2);
  });

  it('when a day is given to the CLI, then --as-of is the end of that UTC day', async () => {
    const day = t2.toISOString().slice(0, 10);
    const out = JSON.parse((await cli('liability', '--as-of', day)).out);
    expect(out.asOf).to.equal(`${day}T23:59:59.999Z`);
  });

  it('when loyalty check runs, then the liability equals the ledger; a balance edited by hand is reported against the report', async () => {
    expect((await checkLedger(svc.db.knex)).violations).to.deep.equal([]);
    const ok = await cli('check');
    expect(ok.code, ok.out).to.equal(0);
    await svc.db.knex('loyalty_accounts').where({ shopper_ref: s.shopperRef }).increment('pending', 7);
    try {
      const broken = await checkLedger(svc.db.knex);
      expect(broken.violations.filter((v) => v.check === LIABILITY_CHECK).map((v) => v.subject)).to.include('pending');
    } finally {
      await svc.db.knex('loyalty_accounts').where({ shopper_ref: s.shopperRef }).decrement('pending', 7);
    }
  });
});
