/**
 * The earning rules as pure functions (points for an amount, the proportional reversal, lot expiry),
 * table by table; then, on the real service, that a payment keeps the rule version it was authorised
 * under for every later effect while a payment authorised after a change earns under the new one.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { proportion } from '../../src/loyalty/earning.js';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { DEFAULT_RULES, expiryOf, pointsFor, type ProgrammeRules } from '../../src/loyalty/programme.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { paymentId, platformEvent, postPlatform } from '../support/webhooks.js';
import { balance, newShopper, payment, paymentLedger, type Shopper } from './support.js';

const rules = (overrides: Partial<ProgrammeRules>): ProgrammeRules => ({ ...DEFAULT_RULES, ...overrides });

describe('loyalty: points for an amount (pointsFor)', () => {
  const cases: readonly {
    readonly when: string;
    readonly amount: number;
    readonly currency: string;
    readonly channel: string | null;
    readonly rules: ProgrammeRules;
    readonly points: number;
  }[] = [
    { when: '123.45 GBP', amount: 12_345, currency: 'GBP', channel: 'online', rules: DEFAULT_RULES, points: 123 },
    { when: '0.99 GBP', amount: 99, currency: 'GBP', channel: 'online', rules: DEFAULT_RULES, points: 0 },
    { when: '1.00 GBP', amount: 100, currency: 'GBP', channel: 'online', rules: DEFAULT_RULES, points: 1 },
    {
      when: '4249 JPY (no minor unit)',
      amount: 4_249,
      currency: 'JPY',
      channel: null,
      rules: DEFAULT_RULES,
      points: 4_249,
    },
    {
      when: '12.345 KWD (three decimals)',
      amount: 12_345,
      currency: 'KWD',
      channel: null,
      rules: DEFAULT_RULES,
      points: 12,
    },
    { when: '0.999 KWD', amount: 999, currency: 'KWD', channel: null, rules: DEFAULT_RULES, points: 0 },
    {
      when: '9.99 USD (two decimals by default)',
      amount: 999,
      currency: 'USD',
      channel: null,
      rules: DEFAULT_RULES,
      points: 9,
    },
    { when: 'a zero amount', amount: 0, currency: 'GBP', channel: null, rules: DEFAULT_RULES, points: 0 },
    { when: 'a negative amount', amount: -5_000, currency: 'GBP', channel: null, rules: DEFAULT_RULES, points: 0 },
    {
      when: '12.99 EUR in store at ×2 (whole units before the multiplier)',
      amount: 1_299,
      currency: 'EUR',
      channel: 'in_store',
      rules: rules({ channelMultipliers: { in_store: 2 } }),
      points: 24,
    },
    {
      when: '12.99 EUR online, where only in store is multiplied',
      amount: 1_299,
      currency: 'EUR',
      channel: 'online',
      rules: rules({ channelMultipliers: { in_store: 2 } }),
      points: 12,
    },
    {
      when: '12.99 EUR on no channel',
      amount: 1_299,
      currency: 'EUR',
      channel: null,
      rules: rules({ channelMultipliers: { in_store: 2 } }),
      points: 12,
    },
    {
      when: '10 GBP at ×1.5 on mobile, floored after multiplying',
      amount: 1_099,
      currency: 'GBP',
      channel: 'mobile',
      rules: rules({ channelMultipliers: { mobile: 1.5 } }),
      points: 15,
    },
    {
      when: '9.99 GBP under a 10.00 GBP minimum',
      amount: 999,
      currency: 'GBP',
      channel: null,
      rules: rules({ minimumAmount: { GBP: 1_000 } }),
      points: 0,
    },
    {
      when: '10.00 GBP at a 10.00 GBP minimum',
      amount: 1_000,
      currency: 'GBP',
      channel: null,
      rules: rules({ minimumAmount: { GBP: 1_000 } }),
      points: 10,
    },
    {
      when: '5.00 EUR under a minimum set only for GBP',
      amount: 500,
      currency: 'EUR',
      channel: null,
      rules: rules({ minimumAmount: { GBP: 1_000 } }),
      points: 5,
    },
    {
      when: '30 GBP at 0.1 a unit (0.1 × 30 is 3, not 3.0000000000000004)',
      amount: 3_000,
      currency: 'GBP',
      channel: null,
      rules: rules({ pointsPerUnit: 0.1 }),
      points: 3,
    },
    {
      when: '100 GBP at 0.29 a unit (0.29 × 100 is 29, not 28.999999999999996)',
      amount: 10_000,
      currency: 'GBP',
      channel: null,
      rules: rules({ pointsPerUnit: 0.29 }),
      points: 29,
    },
    {
      when: '100 GBP at 0.57 a unit (not 56.99999999999999)',
      amount: 10_000,
      currency: 'GBP',
      channel: null,
      rules: rules({ pointsPerUnit: 0.57 }),
      points: 57,
    },
    {
      when: '700 JPY at its own rate of 0.01 a yen (the general rate is 1)',
      amount: 700,
      currency: 'JPY',
      channel: null,
      rules: rules({ currencyPointsPerUnit: { JPY: 0.01 } }),
      points: 7,
    },
    {
      when: '10 GBP where only JPY has its own rate',
      amount: 1_000,
      currency: 'GBP',
      channel: null,
      rules: rules({ pointsPerUnit: 2, currencyPointsPerUnit: { JPY: 0.01 } }),
      points: 20,
    },
    {
      when: '9,007,199,254,740.99 GBP at 3 a unit',
      amount: 900_719_925_474_099,
      currency: 'GBP',
      channel: null,
      rules: rules({ pointsPerUnit: 3 }),
      points: 27_021_597_764_220,
    },
  ];

  for (const c of cases) {
    it(`when the amount is ${c.when}, then it earns ${c.points}`, () => {
      expect(pointsFor(c.amount, c.currency, c.channel, c.rules)).to.equal(c.points);
    });
  }
});

describe('loyalty: the proportional reversal (proportion)', () => {
  const cases: readonly { when: string; points: number; part: number; whole: number; reversed: number }[] = [
    { when: 'a full refund', points: 123, part: 12_345, whole: 12_345, reversed: 123 },
    { when: 'more than the whole (capped)', points: 123, part: 20_000, whole: 12_345, reversed: 123 },
    { when: 'nothing taken back', points: 123, part: 0, whole: 12_345, reversed: 0 },
    { when: 'no points', points: 0, part: 5_000, whole: 10_000, reversed: 0 },
    { when: 'nothing captured', points: 100, part: 5_000, whole: 0, reversed: 0 },
    { when: 'a third', points: 100, part: 3_333, whole: 10_000, reversed: 33 },
    { when: 'an exact half of an odd earn (half up)', points: 3, part: 1, whole: 2, reversed: 2 },
    { when: 'just under a half', points: 1, part: 65, whole: 131, reversed: 0 },
    { when: 'just over a half', points: 1, part: 66, whole: 131, reversed: 1 },
    // Beyond 2^53 a float product or quotient is rounded: Math.round(p / 3) gives …331.
    { when: 'a third of 2^53 − 1', points: 9_007_199_254_740_991, part: 1, whole: 3, reversed: 3_002_399_751_580_330 },
    {
      when: 'a product of about 10^19',
      points: 10_000_000_001,
      part: 999_999_999,
      whole: 1_000_000_000,
      reversed: 9_999_999_991,
    },
    {
      when: 'a product of about 5 × 10^23',
      points: 987_654_321_987,
      part: 500_000_000_001,
      whole: 1_000_000_000_001,
      reversed: 493_827_160_994,
    },
  ];
  for (const c of cases) {
    it(`when the part is ${c.when}, then ${c.reversed} points are reversed`, () => {
      expect(proportion(c.points, c.part, c.whole)).to.equal(c.reversed);
    });
  }

  const splits: readonly {
    earn: number;
    captured: number;
    refunds: readonly number[];
    cumulative: readonly number[];
  }[] = [
    { earn: 100, captured: 10_000, refunds: [3_333, 3_333, 3_334], cumulative: [33, 67, 100] },
    { earn: 1, captured: 2, refunds: [1, 1], cumulative: [1, 1] },
    { earn: 10, captured: 3, refunds: [1, 1, 1], cumulative: [3, 7, 10] },
    { earn: 2, captured: 3, refunds: [1, 1, 1], cumulative: [1, 1, 2] },
  ];
  for (const s of splits) {
    it(`when ${s.earn} points are refunded in parts ${s.refunds.join(' + ')} of ${s.captured}, then the cumulative reversals are ${s.cumulative.join(', ')}`, () => {
      let part = 0;
      const cumulative = s.refunds.map((r) => proportion(s.earn, (part += r), s.captured));
      expect(cumulative).to.deep.equal(s.cumulative);
    });
  }

  it('when any earn is refunded in any parts, then the cumulative reversal only grows, never passes the earn, and a full refund reverses exactly all', () => {
    const story = fc
      .record({ earn: fc.nat({ max: 1e12 }), captured: fc.integer({ min: 1, max: 1e13 }) })
      .chain(({ earn, captured }) =>
        fc.record({
          earn: fc.constant(earn),
          captured: fc.constant(captured),
          cuts: fc.uniqueArray(fc.integer({ min: 1, max: captured }), { maxLength: 6 }),
        }),
      );
    fc.assert(
      fc.property(story, ({ earn, captured, cuts }) => {
        const reversals = [...cuts, captured].sort((a, b) => a - b).map((c) => proportion(earn, c, captured));
        reversals.forEach((r, i) => {
          expect(r).to.be.within(0, earn);
          if (i > 0) expect(r).to.be.at.least(reversals[i - 1]!);
        });
        expect(reversals.at(-1)).to.equal(earn);
      }),
    );
  });
});

describe('loyalty: lot expiry (expiryOf)', () => {
  const cases: readonly { from: string; months?: number; expires: string }[] = [
    { from: '2026-11-30T10:15:00.000Z', expires: '2027-11-30T10:15:00.000Z' },
    { from: '2028-02-29T00:00:00.000Z', expires: '2029-02-28T00:00:00.000Z' },
    { from: '2027-01-31T12:00:00.000Z', months: 1, expires: '2027-02-28T12:00:00.000Z' },
    { from: '2028-01-31T12:00:00.000Z', months: 1, expires: '2028-02-29T12:00:00.000Z' },
    { from: '2026-03-31T23:59:59.999Z', months: 1, expires: '2026-04-30T23:59:59.999Z' },
    { from: '2026-12-15T08:00:00.000Z', months: 1, expires: '2027-01-15T08:00:00.000Z' },
    { from: '2026-08-31T00:00:00.000Z', months: 6, expires: '2027-02-28T00:00:00.000Z' },
    { from: '2026-01-01T00:00:00.000Z', months: 120, expires: '2036-01-01T00:00:00.000Z' },
  ];
  for (const c of cases) {
    const lifetime = c.months === undefined ? '12 months (the default)' : `${c.months} month(s)`;
    it(`when points become available on ${c.from} for ${lifetime}, then they expire on ${c.expires}`, () => {
      const r = c.months === undefined ? DEFAULT_RULES : rules({ pointsLifetimeMonths: c.months });
      expect(expiryOf(new Date(c.from), r).toISOString()).to.equal(c.expires);
    });
  }
});

describe('loyalty: the rule version a payment earned under', function () {
  this.timeout(60_000);
  let svc: TestService;
  const pans = generatePans(4, '411111');
  let next = 0;
  const shopper = () => newShopper(svc, pans[next++] as string);

  before(async () => {
    svc = await startTestService();
  });
  afterEach(async () => {
    const report = await checkLedger(svc.db.knex);
    expect(report.violations).to.deep.equal([]);
  });
  after(async () => svc.close());

  const sendAt = async (card: Shopper, id: string, type: string, occurredAt: Date): Promise<void> => {
    const event = platformEvent({
      type,
      paymentId: id,
      amount: 10_000,
      card: { token: card.cardToken },
      occurredAt: occurredAt.toISOString(),
    });
    const res = await postPlatform(svc, event);
    expect(res.status, res.text).to.equal(200);
  };

  it('when the rate changes after a payment earned, then its refund reverses under the rate it earned under, and a payment authorised after the change earns under the new one', async () => {
    const s = await shopper();
    const before = new Date(Date.now() - 60_000);
    const old = payment(s, { amount: 10_000 });
    await old.send(svc, { type: 'authorised' });
    await old.send(svc, { type: 'captured' });
    expect(await balance(svc, s.shopperRef)).to.include({ available: 100, lifetimeEarned: 100 });

    const put = await svc.request('PUT', '/v1/programme', {
      token: await signToken({ scope: 'loyalty:admin' }),
      json: { pointsPerUnit: 10 },
    });
    expect(put.status, put.text).to.equal(201);
    expect(put.body).to.deep.include({ version: 2 });
    expect(put.body.rules).to.include({ pointsPerUnit: 10 });
    const effectiveFrom = new Date(put.body.effectiveFrom as string);

    // Half of the v1 earn (100), not half of what v2 would say (1000).
    await old.send(svc, { type: 'refunded', id: 'r1', amount: 5_000 });
    expect(await balance(svc, s.shopperRef)).to.include({ available: 50, lifetimeEarned: 100 });
    const oldLedger = await paymentLedger(svc, old.id);
    expect(oldLedger.lot).to.include({ earnTarget: 100, reversalTarget: 50, remaining: 50 });
    expect(oldLedger.netPoints).to.equal(50);

    // Authorised after the change: ×10.
    const fresh = paymentId('loy-v2');
    const after = new Date(Math.max(Date.now(), effectiveFrom.getTime() + 1));
    await sendAt(s, fresh, 'payment.authorised', after);
    expect(await balance(svc, s.shopperRef)).to.include({ available: 50, pending: 1_000 });
    await sendAt(s, fresh, 'payment.captured', after);
    expect(await balance(svc, s.shopperRef)).to.include({ available: 1_050, pending: 0, lifetimeEarned: 1_100 });

    // Authorised before the change but delivered after it: still v1, and so is its refund.
    const late = paymentId('loy-late');
    await sendAt(s, late, 'payment.authorised', before);
    await sendAt(s, late, 'payment.captured', new Date());
    expect(await balance(svc, s.shopperRef)).to.include({ available: 1_150, lifetimeEarned: 1_200 });
    const refund = platformEvent({
      type: 'payment.refunded',
      paymentId: late,
      amount: 10_000,
      card: { token: s.cardToken },
      refund: { id: 'r1', amount: 10_000 },
    });
    expect((await postPlatform(svc, refund)).status).to.equal(200);
    expect(await balance(svc, s.shopperRef)).to.include({ available: 1_050, lifetimeEarned: 1_200 });

    const versions = await svc.db
      .knex('loyalty_lots')
      .join('payments', 'payments.id', 'loyalty_lots.payment_id')
      .whereIn('payments.external_id', [old.id, fresh, late])
      .select('payments.external_id as payment', 'loyalty_lots.rule_version as version');
    expect(Object.fromEntries(versions.map((v) => [v.payment, v.version]))).to.deep.equal({
      [old.id]: 1,
      [fresh]: 2,
      [late]: 1,
    });
  });
});
