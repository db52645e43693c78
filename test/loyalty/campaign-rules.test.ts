/**
 * Campaigns as pure functions: each condition's pass or fail, the effects, the per-payment cap,
 * stacking (priority, exclusive or combinable), the version in force at authorisation, how a bonus
 * follows partial captures and refunds, and which definitions are refused. Table by table: "when …,
 * then …".
 */
import { expect } from 'chai';
import { bonusTargets } from '../../src/loyalty/earning.js';
import { campaignBookings } from '../../src/loyalty/campaign-earning.js';
import { definitionProblems } from '../../src/loyalty/campaign-definition.js';
import {
  campaignsInForce,
  evaluateCampaigns,
  localTime,
  type AuthorisationFacts,
  type CampaignDefinition,
  type CampaignVersion,
} from '../../src/loyalty/campaign-rules.js';
import type { StoredDefinition } from '../../src/loyalty/campaign-store.js';
import { DEFAULT_RULES, MAX_POINTS_PER_PAYMENT } from '../../src/loyalty/programme.js';
import { EMPTY_FIGURES, type PaymentFigures } from '../../src/payments/payment-state.js';

// Wednesday 10 December 2025, 09:30 in London (UTC in winter).
const AT = new Date('2025-12-10T09:30:00Z');

const facts = (over: Partial<AuthorisationFacts> = {}): AuthorisationFacts => ({
  authorisedAt: AT,
  authorisedAmount: 5_000,
  currency: 'GBP',
  channel: 'in_store',
  storeId: 'store-a',
  basePoints: 50,
  shopperTier: null,
  ...over,
});

const definition = (over: Partial<CampaignDefinition> = {}): CampaignDefinition => ({
  name: 'Double points',
  startsAt: new Date('2025-12-01T00:00:00Z'),
  conditions: {},
  effect: { kind: 'multiplier', factor: 2 },
  priority: 0,
  stacking: 'combinable',
  ...over,
});

const version = (campaignId: string, over: Partial<CampaignDefinition> = {}, v = 1): CampaignVersion => ({
  campaignId,
  version: v,
  effectiveFrom: new Date('2025-11-01T00:00:00Z'),
  definition: definition(over),
  createdBy: 'test',
  createdAt: new Date('2025-11-01T00:00:00Z'),
});

const one = (over: Partial<CampaignDefinition>, f = facts()) => evaluateCampaigns([version('cmp_a', over)], f)[0]!;

describe('loyalty campaigns: conditions', () => {
  const cases: readonly {
    readonly when: string;
    readonly campaign: Partial<CampaignDefinition>;
    readonly facts?: Partial<AuthorisationFacts>;
    readonly failed: readonly string[];
  }[] = [
    { when: 'a campaign has no conditions', campaign: {}, failed: [] },
    { when: 'it has not started', campaign: { startsAt: new Date('2025-12-11T00:00:00Z') }, failed: ['period'] },
    { when: 'it ended at the authorisation', campaign: { endsAt: AT }, failed: ['period'] },
    { when: 'it ends after the authorisation', campaign: { endsAt: new Date(AT.getTime() + 1) }, failed: [] },
    { when: 'the channel is listed', campaign: { conditions: { channels: ['in_store', 'mobile'] } }, failed: [] },
    { when: 'the channel is not listed', campaign: { conditions: { channels: ['online'] } }, failed: ['channel'] },
    {
      when: 'the payment has no channel',
      campaign: { conditions: { channels: ['online'] } },
      facts: { channel: null },
      failed: ['channel'],
    },
    { when: 'the store is listed', campaign: { conditions: { storeIds: ['store-a'] } }, failed: [] },
    { when: 'the store is not listed', campaign: { conditions: { storeIds: ['store-b'] } }, failed: ['store'] },
    { when: 'the currency differs', campaign: { conditions: { currency: 'EUR' } }, failed: ['currency'] },
    {
      when: 'the amount is the range minimum',
      campaign: { conditions: { currency: 'GBP', minAmount: 5_000 } },
      failed: [],
    },
    {
      when: 'the amount is under the minimum',
      campaign: { conditions: { currency: 'GBP', minAmount: 5_001 } },
      failed: ['amount'],
    },
    {
      when: 'the amount is over the maximum',
      campaign: { conditions: { currency: 'GBP', maxAmount: 4_999 } },
      failed: ['amount'],
    },
    {
      when: 'it is a listed weekday in the zone',
      campaign: { conditions: { daysOfWeek: ['wed'], timeZone: 'Europe/London' } },
      failed: [],
    },
    {
      // 11:00 UTC on Wednesday is 01:00 on Thursday in Kiritimati (UTC+14).
      when: 'the zone makes it another day',
      campaign: { conditions: { daysOfWeek: ['wed'], timeZone: 'Pacific/Kiritimati' } },
      facts: { authorisedAt: new Date('2025-12-10T11:00:00Z') },
      failed: ['day_of_week'],
    },
    {
      when: 'the local time is in the window',
      campaign: { conditions: { timeWindow: { from: '09:00', to: '10:00' }, timeZone: 'Europe/London' } },
      failed: [],
    },
    {
      when: 'the window ends at the local time (exclusive)',
      campaign: { conditions: { timeWindow: { from: '08:00', to: '09:30' }, timeZone: 'Europe/London' } },
      failed: ['time_of_day'],
    },
    {
      when: 'the window wraps past midnight and the time is before its end',
      campaign: { conditions: { timeWindow: { from: '22:00', to: '10:00' }, timeZone: 'Europe/London' } },
      failed: [],
    },
    {
      when: 'the zone moves the time out of the window (New York: 04:30)',
      campaign: { conditions: { timeWindow: { from: '09:00', to: '10:00' }, timeZone: 'America/New_York' } },
      failed: ['time_of_day'],
    },
    {
      when: 'several conditions fail',
      campaign: { conditions: { channels: ['online'], currency: 'EUR' } },
      failed: ['channel', 'currency'],
    },
  ];
  for (const c of cases) {
    it(`when ${c.when}, then ${c.failed.length === 0 ? 'it qualifies' : `${c.failed.join(' and ')} fail(s)`}`, () => {
      const outcome = one(c.campaign, facts(c.facts));
      expect(outcome.conditions.filter((r) => !r.passed).map((r) => r.condition)).to.deep.equal(c.failed);
      expect(outcome.qualified).to.equal(c.failed.length === 0);
      expect(outcome.bonus).to.equal(c.failed.length === 0 ? 50 : 0);
    });
  }

  it('when a condition is not set, then it is not listed (only what the campaign asks is judged)', () => {
    expect(one({ conditions: { channels: ['in_store'] } }).conditions.map((r) => r.condition)).to.deep.equal([
      'period',
      'channel',
    ]);
  });

  it('local time follows daylight saving (London in July is UTC+1)', () => {
    expect(localTime(new Date('2025-07-09T23:30:00Z'), 'Europe/London')).to.deep.equal({
      weekday: 'thu',
      minutes: 30,
      date: '2025-07-10',
    });
    expect(localTime(new Date('2025-12-10T23:30:00Z'), 'Europe/London')).to.deep.equal({
      weekday: 'wed',
      minutes: 23 * 60 + 30,
      date: '2025-12-10',
    });
  });
});

describe('loyalty campaigns: effects and the per-payment cap', () => {
  const cases: readonly { when: string; campaign: Partial<CampaignDefinition>; f?: Partial<AuthorisationFacts>; bonus: number; limitedBy?: string }[] = [
    { when: 'a ×2 multiplier on 50 base points', campaign: {}, bonus: 50 },
    { when: 'a ×1.5 multiplier on 45 base points', campaign: { effect: { kind: 'multiplier', factor: 1.5 } }, f: { basePoints: 45 }, bonus: 22 },
    { when: 'a ×1.1 multiplier on 30 base points (exact decimals)', campaign: { effect: { kind: 'multiplier', factor: 1.1 } }, f: { basePoints: 30 }, bonus: 3 },
    { when: 'a fixed bonus of 200', campaign: { effect: { kind: 'fixed_bonus', points: 200 } }, bonus: 200 },
    { when: '3 points per pound on 50.00 GBP', campaign: { effect: { kind: 'points_per_unit', points: 3 } }, bonus: 150 },
    { when: '0.5 points per pound on 50.99 GBP (whole units, floored)', campaign: { effect: { kind: 'points_per_unit', points: 0.5 } }, f: { authorisedAmount: 5_099 }, bonus: 25 },
    { when: '1 point per yen on 4249 JPY', campaign: { effect: { kind: 'points_per_unit', points: 1 } }, f: { currency: 'JPY', authorisedAmount: 4_249 }, bonus: 4_249 },
    { when: 'a fixed bonus of 200 capped at 120', campaign: { effect: { kind: 'fixed_bonus', points: 200 }, maxBonusPerPayment: 120 }, bonus: 120, limitedBy: 'cap' },
    { when: 'a ×2 multiplier under a cap it does not reach', campaign: { maxBonusPerPayment: 60 }, bonus: 50 },
    { when: 'a stored fractional fixed bonus of 0.5 (whole points only)', campaign: { effect: { kind: 'fixed_bonus', points: 0.5 } }, bonus: 0 },
    { when: 'a stored fixed bonus of 2.7', campaign: { effect: { kind: 'fixed_bonus', points: 2.7 } }, bonus: 2 },
  ]; // prettier-ignore
  for (const c of cases) {
    it(`when ${c.when}, then the bonus is ${c.bonus}`, () => {
      const outcome = one(c.campaign, facts(c.f));
      expect(outcome.bonus).to.equal(c.bonus);
      expect(outcome.limitedBy).to.equal(c.limitedBy);
    });
  }
});

describe('loyalty campaigns: a payment never earns more than the programme can earn on it', () => {
  it('when stacked bonuses would take a payment past MAX_POINTS_PER_PAYMENT, then the later ones are cut to fit', () => {
    const f = facts({ currency: 'JPY', authorisedAmount: 100_000_000_000, basePoints: MAX_POINTS_PER_PAYMENT - 10 });
    const outcomes = evaluateCampaigns(
      [
        version('cmp_a', { effect: { kind: 'points_per_unit', points: 100 }, priority: 2 }),
        version('cmp_b', { effect: { kind: 'multiplier', factor: 10 }, priority: 1 }),
      ],
      f,
    );
    expect(outcomes.map((o) => [o.bonus, o.limitedBy])).to.deep.equal([
      [10, 'cap'],
      [0, 'cap'],
    ]);
    expect(MAX_POINTS_PER_PAYMENT).to.equal(100_000_000_000 * 100 * 10);
    expect(Number.isSafeInteger(MAX_POINTS_PER_PAYMENT * 2)).to.equal(true);
  });
});

describe('loyalty campaigns: stacking', () => {
  const fixed = (points: number, priority: number, stacking: 'exclusive' | 'combinable', over: Partial<CampaignDefinition> = {}) =>
    ({ effect: { kind: 'fixed_bonus', points }, priority, stacking, ...over }) as const; // prettier-ignore
  const cases: readonly {
    readonly when: string;
    readonly campaigns: Record<string, Partial<CampaignDefinition>>;
    readonly bonuses: Record<string, number>;
  }[] = [
    {
      when: 'two combinable campaigns qualify',
      campaigns: { cmp_a: fixed(10, 1, 'combinable'), cmp_b: fixed(20, 2, 'combinable') },
      bonuses: { cmp_a: 10, cmp_b: 20 },
    },
    {
      when: 'an exclusive campaign has the highest priority',
      campaigns: { cmp_a: fixed(10, 1, 'combinable'), cmp_b: fixed(20, 5, 'exclusive') },
      bonuses: { cmp_a: 0, cmp_b: 20 },
    },
    {
      when: 'an exclusive campaign comes after one that applied',
      campaigns: { cmp_a: fixed(10, 9, 'combinable'), cmp_b: fixed(20, 5, 'exclusive') },
      bonuses: { cmp_a: 10, cmp_b: 0 },
    },
    {
      when: 'the higher exclusive campaign does not qualify',
      campaigns: {
        cmp_a: fixed(10, 1, 'combinable'),
        cmp_b: fixed(20, 5, 'exclusive', { conditions: { channels: ['online'] } }),
      },
      bonuses: { cmp_a: 10, cmp_b: 0 },
    },
    {
      when: 'two exclusive campaigns of one priority qualify (the campaign id breaks the tie)',
      campaigns: { cmp_b: fixed(20, 5, 'exclusive'), cmp_a: fixed(10, 5, 'exclusive') },
      bonuses: { cmp_a: 10, cmp_b: 0 },
    },
  ];
  for (const c of cases) {
    it(`when ${c.when}, then the bonuses are ${JSON.stringify(c.bonuses)}, in any input order`, () => {
      const versions = Object.entries(c.campaigns).map(([id, d]) => version(id, d));
      for (const order of [versions, [...versions].reverse()]) {
        const outcomes = evaluateCampaigns(order, facts());
        expect(Object.fromEntries(outcomes.map((o) => [o.campaignId, o.bonus]))).to.deep.equal(c.bonuses);
      }
    });
  }

  it('when a qualifying campaign is stacked out, then it says so', () => {
    const [first, second] = evaluateCampaigns(
      [version('cmp_a', fixed(10, 9, 'exclusive')), version('cmp_b', fixed(20, 1, 'combinable'))],
      facts(),
    );
    expect(first).to.include({ campaignId: 'cmp_a', qualified: true, bonus: 10 });
    expect(second).to.include({ campaignId: 'cmp_b', qualified: true, bonus: 0, limitedBy: 'exclusive' });
  });
});

describe('loyalty campaigns: the version in force at authorisation', () => {
  const v = (campaignId: string, n: number, from: string): CampaignVersion => ({
    ...version(campaignId, {}, n),
    effectiveFrom: new Date(from),
  });
  const versions = [
    v('cmp_a', 1, '2025-12-01T00:00:00Z'),
    v('cmp_a', 2, '2025-12-10T09:30:00Z'),
    v('cmp_a', 3, '2025-12-20T00:00:00Z'),
    v('cmp_b', 1, '2025-12-11T00:00:00Z'),
  ];
  const cases = [
    { when: 'authorised before the second version', at: '2025-12-10T09:29:59Z', inForce: ['cmp_a v1'] },
    { when: 'authorised the moment it takes effect', at: '2025-12-10T09:30:00Z', inForce: ['cmp_a v2'] },
    { when: 'authorised after both campaigns began', at: '2025-12-12T00:00:00Z', inForce: ['cmp_a v2', 'cmp_b v1'] },
    { when: 'authorised before any version', at: '2025-11-30T00:00:00Z', inForce: [] },
  ];
  for (const c of cases) {
    it(`when ${c.when}, then ${c.inForce.join(', ') || 'none'} is in force`, () => {
      expect(campaignsInForce(versions, new Date(c.at)).map((x) => `${x.campaignId} v${x.version}`)).to.deep.equal(
        c.inForce,
      );
    });
  }
});

describe('loyalty campaigns: a bonus follows captures and refunds like the base points', () => {
  const figures = (over: Partial<PaymentFigures>): PaymentFigures => ({
    ...EMPTY_FIGURES,
    currency: 'GBP',
    authorisedAmount: 10_000,
    authorisedAt: AT,
    ...over,
  });
  const cases = [
    { when: 'authorised, awaiting capture', f: { state: 'authorised' as const }, auto: false, targets: { pending: 100, earn: 0, reversal: 0 } },
    { when: 'authorised on an auto-capture channel', f: { state: 'authorised' as const }, auto: true, targets: { pending: 0, earn: 100, reversal: 0 } },
    { when: 'captured in full', f: { state: 'captured' as const, capturedAmount: 10_000 }, auto: false, targets: { pending: 0, earn: 100, reversal: 0 } },
    { when: 'a third captured', f: { state: 'captured' as const, capturedAmount: 3_333 }, auto: false, targets: { pending: 0, earn: 33, reversal: 0 } },
    { when: 'captured, half refunded', f: { state: 'partially_refunded' as const, capturedAmount: 10_000, refundedAmount: 5_000 }, auto: false, targets: { pending: 0, earn: 100, reversal: 50 } },
    { when: 'refunded in full', f: { state: 'refunded' as const, capturedAmount: 6_000, refundedAmount: 6_000 }, auto: false, targets: { pending: 0, earn: 60, reversal: 60 } },
    { when: 'cancelled', f: { state: 'cancelled' as const }, auto: false, targets: { pending: 0, earn: 0, reversal: 0 } },
  ]; // prettier-ignore
  for (const c of cases) {
    it(`when ${c.when}, then a bonus of 100 books ${JSON.stringify(c.targets)}`, () => {
      expect(bonusTargets(figures(c.f), c.auto, 100)).to.deep.equal(c.targets);
    });
  }

  it('when the multiplier is judged, then it multiplies the base points of the authorised amount', () => {
    const [booking] = campaignBookings(
      [version('cmp_a', { effect: { kind: 'multiplier', factor: 3 } })],
      figures({ state: 'captured', capturedAmount: 5_000 }),
      { channel: 'online', storeId: null },
      DEFAULT_RULES,
    );
    // 100 base points at authorisation × (3 − 1) = 200, half captured: 100.
    expect(booking).to.include({ qualified: true, bonus: 200, earn: 100, pending: 0, reversal: 0 });
  });
});

describe('loyalty campaigns: definitions refused', () => {
  const base: StoredDefinition = {
    name: 'x',
    startsAt: '2025-12-01T00:00:00Z',
    conditions: {},
    effect: { kind: 'fixed_bonus', points: 10 },
    priority: 0,
    stacking: 'combinable',
  };
  const cases: readonly { when: string; d: Partial<StoredDefinition>; problems: readonly string[] }[] = [
    { when: 'it is well formed', d: {}, problems: [] },
    { when: 'it ends before it starts', d: { endsAt: '2025-11-30T00:00:00Z' }, problems: ['ends_before_it_starts'] },
    { when: 'an amount range has no currency', d: { conditions: { minAmount: 100 } }, problems: ['amount_range_needs_currency'] },
    { when: 'the amount range is empty', d: { conditions: { currency: 'GBP', minAmount: 200, maxAmount: 100 } }, problems: ['amount_range_empty'] },
    { when: 'days of week have no time zone', d: { conditions: { daysOfWeek: ['mon'] } }, problems: ['time_zone_required'] },
    { when: 'the time zone is unknown', d: { conditions: { daysOfWeek: ['mon'], timeZone: 'Mars/Olympus' } }, problems: ['time_zone_unknown'] },
    { when: 'the time window is empty', d: { conditions: { timeWindow: { from: '10:00', to: '10:00' }, timeZone: 'UTC' } }, problems: ['time_window_empty'] },
    { when: 'a time is not a time', d: { conditions: { timeWindow: { from: '24:00', to: '10:00' }, timeZone: 'UTC' } }, problems: ['time_invalid'] },
    { when: 'a multiplier of 1', d: { effect: { kind: 'multiplier', factor: 1 } }, problems: ['effect_gives_nothing'] },
    { when: 'the cap is 0', d: { maxBonusPerPayment: 0 }, problems: ['effect_gives_nothing'] },
  ]; // prettier-ignore
  for (const c of cases) {
    it(`when ${c.when}, then ${c.problems.length === 0 ? 'it is accepted' : c.problems.join(', ')}`, () => {
      expect(definitionProblems({ ...base, ...c.d })).to.deep.equal(c.problems);
    });
  }
});
