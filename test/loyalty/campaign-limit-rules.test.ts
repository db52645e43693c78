/**
 * The conditions and limits of a campaign beyond the payment's own figures, as pure functions:
 * merchant account, merchant category codes (gift-card and stored-value codes excluded by default),
 * card brand, the shopper's tier, opt-in, first and every Nth purchase, the per-shopper cap per
 * period and the global budget, each limit saying what cut the bonus. Table by table.
 */
import { expect } from 'chai';
import { definitionProblems } from '../../src/loyalty/campaign-definition.js';
import {
  capPeriodOf,
  evaluateCampaigns,
  GIFT_CARD_MCCS,
  NO_LEDGER_STATE,
  type AuthorisationFacts,
  type CampaignDefinition,
  type CampaignLedgerState,
  type CampaignVersion,
} from '../../src/loyalty/campaign-rules.js';

// Facts: a known merchant, brand and tier; no category unless a case gives one (a known category is always judged).
// Wednesday 10 December 2025, 23:30 UTC: already Thursday 11 December in Amsterdam.
const AT = new Date('2025-12-10T23:30:00Z');

const facts = (over: Partial<AuthorisationFacts> = {}): AuthorisationFacts => ({
  authorisedAt: AT,
  authorisedAmount: 5_000,
  currency: 'GBP',
  channel: 'in_store',
  storeId: 'store-a',
  basePoints: 50,
  merchantAccount: 'ShopNorth',
  merchantCategoryCode: null,
  cardBrand: 'visa',
  shopperTier: 'gold',
  ...over,
});

const definition = (over: Partial<CampaignDefinition> = {}): CampaignDefinition => ({
  name: 'Bonus',
  startsAt: new Date('2025-12-01T00:00:00Z'),
  conditions: {},
  effect: { kind: 'fixed_bonus', points: 40 },
  priority: 0,
  stacking: 'combinable',
  ...over,
});

const version = (id: string, over: Partial<CampaignDefinition> = {}): CampaignVersion => ({
  campaignId: id,
  version: 1,
  effectiveFrom: new Date('2025-11-01T00:00:00Z'),
  definition: definition(over),
  createdBy: 'test',
  createdAt: new Date('2025-11-01T00:00:00Z'),
});

const state = (over: Partial<CampaignLedgerState> = {}): CampaignLedgerState => ({ ...NO_LEDGER_STATE, ...over });
const one = (over: Partial<CampaignDefinition>, f = facts(), s = state()) =>
  evaluateCampaigns([version('cmp_a', over)], f, s)[0]!;

describe('loyalty campaigns: merchant, category, brand, tier and opt-in conditions', () => {
  const cases: readonly {
    when: string;
    c: CampaignDefinition['conditions'];
    f?: Partial<AuthorisationFacts>;
    s?: Partial<CampaignLedgerState>;
    judged: [string, boolean] | null;
  }[] = [
    { when: 'the merchant account is listed', c: { merchantAccounts: ['ShopNorth'] }, judged: ['merchant_account', true] },
    { when: 'the merchant account is another', c: { merchantAccounts: ['ShopSouth'] }, judged: ['merchant_account', false] },
    { when: 'the merchant account is unknown', c: { merchantAccounts: ['ShopNorth'] }, f: { merchantAccount: null }, judged: ['merchant_account', false] },
    { when: 'the category is included', c: { merchantCategoryCodes: { include: ['5812', '5814'] } }, f: { merchantCategoryCode: '5812' }, judged: ['merchant_category', true] },
    { when: 'the category is not included', c: { merchantCategoryCodes: { include: ['5411'] } }, f: { merchantCategoryCode: '5812' }, judged: ['merchant_category', false] },
    { when: 'the category is excluded', c: { merchantCategoryCodes: { exclude: ['5812'] } }, f: { merchantCategoryCode: '5812' }, judged: ['merchant_category', false] },
    { when: 'an unknown category meets an exclusion', c: { merchantCategoryCodes: { exclude: ['5812'] } }, f: { merchantCategoryCode: null }, judged: ['merchant_category', true] },
    { when: 'an unknown category meets an inclusion', c: { merchantCategoryCodes: { include: ['5812'] } }, f: { merchantCategoryCode: null }, judged: ['merchant_category', false] },
    { when: 'a gift-card purchase (6540) meets no category condition', c: {}, f: { merchantCategoryCode: '6540' }, judged: ['merchant_category', false] },
    { when: 'a quasi-cash purchase (6051) is included explicitly', c: { merchantCategoryCodes: { include: ['6051'] } }, f: { merchantCategoryCode: '6051' }, judged: ['merchant_category', false] },
    { when: 'gift cards are allowed', c: { allowGiftCardMccs: true }, f: { merchantCategoryCode: '6540' }, judged: ['merchant_category', true] },
    { when: 'no category is known and none asked', c: {}, f: { merchantCategoryCode: null }, judged: null },
    { when: 'the card brand is listed', c: { cardBrands: ['visa', 'mastercard'] }, judged: ['card_brand', true] },
    { when: 'the card brand is another', c: { cardBrands: ['amex'] }, judged: ['card_brand', false] },
    { when: 'the tier is listed', c: { tiers: ['gold', 'platinum'] }, judged: ['tier', true] },
    { when: 'the shopper has no tier', c: { tiers: ['gold'] }, f: { shopperTier: null }, judged: ['tier', false] },
    { when: 'opt-in is required and the shopper never activated', c: { optInRequired: true }, judged: ['opt_in', false] },
    { when: 'activated before the authorisation', c: { optInRequired: true }, s: { activatedAt: () => new Date('2025-12-10T23:29:59Z') }, judged: ['opt_in', true] },
    { when: 'activated at the authorisation', c: { optInRequired: true }, s: { activatedAt: () => AT }, judged: ['opt_in', true] },
    { when: 'activated after the authorisation', c: { optInRequired: true }, s: { activatedAt: () => new Date('2025-12-10T23:30:01Z') }, judged: ['opt_in', false] },
  ]; // prettier-ignore
  for (const c of cases) {
    it(`when ${c.when}, then ${c.judged === null ? 'no category is judged' : `${c.judged[0]} ${c.judged[1] ? 'passes' : 'fails'}`}`, () => {
      const outcome = one({ conditions: c.c }, facts(c.f), state(c.s));
      const judged = outcome.conditions.filter((r) => r.condition !== 'period').map((r) => [r.condition, r.passed]);
      expect(judged).to.deep.equal(c.judged === null ? [] : [c.judged]);
      expect(outcome.bonus).to.equal(c.judged === null || c.judged[1] ? 40 : 0);
    });
  }

  it('the default exclusion names the stored-value and quasi-cash codes, not souvenir shops (5947)', () => {
    expect(GIFT_CARD_MCCS).to.deep.equal(['6051', '6540']);
    expect(one({}, facts({ merchantCategoryCode: '5947' })).bonus).to.equal(40);
  });
});

describe('loyalty campaigns: first and every Nth purchase', () => {
  const cases: readonly { when: string; c: CampaignDefinition['conditions']; before: number; passes: boolean }[] = [
    { when: 'first purchase only, none before', c: { firstPurchaseOnly: true }, before: 0, passes: true },
    { when: 'first purchase only, one before', c: { firstPurchaseOnly: true }, before: 1, passes: false },
    { when: 'every 3rd, two before', c: { everyNthPurchase: 3 }, before: 2, passes: true },
    { when: 'every 3rd, three before', c: { everyNthPurchase: 3 }, before: 3, passes: false },
    { when: 'every 3rd, five before', c: { everyNthPurchase: 3 }, before: 5, passes: true },
  ];
  for (const c of cases) {
    it(`when ${c.when}, then the purchase is number ${c.before + 1} and ${c.passes ? 'earns' : 'does not earn'}`, () => {
      const outcome = one({ conditions: c.c }, facts(), state({ purchases: () => c.before }));
      expect(outcome.purchaseNumber).to.equal(c.before + 1);
      expect(outcome.conditions.at(-1)).to.deep.equal({ condition: 'purchase_number', passed: c.passes });
      expect(outcome.bonus).to.equal(c.passes ? 40 : 0);
    });
  }

  it('when another condition fails, then the purchase is not counted (no number)', () => {
    const outcome = one({ conditions: { everyNthPurchase: 2, channels: ['online'] } });
    expect(outcome.purchaseNumber).to.equal(undefined);
    expect(outcome.conditions.map((r) => r.condition)).to.deep.equal(['period', 'channel']);
  });

  it('when both first purchase and every Nth are asked, then the definition is refused', () => {
    const d = {
      name: 'x',
      startsAt: '2025-12-01T00:00:00Z',
      conditions: { firstPurchaseOnly: true, everyNthPurchase: 2 },
    };
    expect(
      definitionProblems({ ...d, effect: { kind: 'fixed_bonus', points: 1 }, priority: 0, stacking: 'combinable' }),
    ).to.deep.equal(['first_and_every_nth_purchase']);
  });
});

describe('loyalty campaigns: per-shopper caps and the global budget', () => {
  const cases: readonly {
    when: string;
    over: Partial<CampaignDefinition>;
    s: Partial<CampaignLedgerState>;
    bonus: number;
    limitedBy?: string;
  }[] = [
    { when: 'the shopper has room in the period', over: { maxBonusPerShopper: { points: 100, period: 'day' } }, s: { grantedInPeriod: () => 50 }, bonus: 40 },
    { when: 'the shopper has 15 left in the period', over: { maxBonusPerShopper: { points: 100, period: 'day' } }, s: { grantedInPeriod: () => 85 }, bonus: 15, limitedBy: 'shopper_cap' },
    { when: 'the shopper reached the cap', over: { maxBonusPerShopper: { points: 100, period: 'week' } }, s: { grantedInPeriod: () => 100 }, bonus: 0, limitedBy: 'shopper_cap' },
    { when: 'the budget has room', over: { budget: 1_000 }, s: { budgetSpent: () => 900 }, bonus: 40 },
    { when: 'the budget has 7 left', over: { budget: 1_000 }, s: { budgetSpent: () => 993 }, bonus: 7, limitedBy: 'budget' },
    { when: 'the budget is spent', over: { budget: 1_000 }, s: { budgetSpent: () => 1_000 }, bonus: 0, limitedBy: 'budget' },
    { when: 'the per-payment cap cuts first, then the budget', over: { maxBonusPerPayment: 30, budget: 100 }, s: { budgetSpent: () => 80 }, bonus: 20, limitedBy: 'budget' },
    { when: 'the per-payment cap is below what is left', over: { maxBonusPerPayment: 30, budget: 100 }, s: { budgetSpent: () => 10 }, bonus: 30, limitedBy: 'cap' },
  ]; // prettier-ignore
  for (const c of cases) {
    it(`when ${c.when}, then the bonus is ${c.bonus}${c.limitedBy === undefined ? '' : `, limited by ${c.limitedBy}`}`, () => {
      const outcome = one(c.over, facts(), state(c.s));
      expect(outcome.bonus).to.equal(c.bonus);
      expect(outcome.limitedBy).to.equal(c.limitedBy);
    });
  }

  it('when an exclusive campaign has no budget left, then the next campaign applies instead', () => {
    const [first, second] = evaluateCampaigns(
      [
        version('cmp_a', { priority: 5, stacking: 'exclusive', budget: 10 }),
        version('cmp_b', { priority: 1, stacking: 'exclusive' }),
      ],
      facts(),
      state({ budgetSpent: () => 10 }),
    );
    expect([first?.bonus, first?.limitedBy, second?.bonus, second?.limitedBy]).to.deep.equal([
      0,
      'budget',
      40,
      undefined,
    ]);
  });

  it('the cap periods are local to the campaign time zone: day, ISO week from Monday, month, campaign', () => {
    const amsterdam = (period: 'day' | 'week' | 'month' | 'campaign') =>
      definition({ conditions: { timeZone: 'Europe/Amsterdam' }, maxBonusPerShopper: { points: 1, period } });
    expect(capPeriodOf(amsterdam('day'), AT)).to.equal('2025-12-11');
    expect(capPeriodOf(amsterdam('week'), AT)).to.equal('week:2025-12-08');
    expect(capPeriodOf(amsterdam('month'), new Date('2025-11-30T23:30:00Z'))).to.equal('2025-12');
    expect(capPeriodOf(amsterdam('campaign'), AT)).to.equal('campaign');
    expect(capPeriodOf(definition({ maxBonusPerShopper: { points: 1, period: 'day' } }), AT)).to.equal('2025-12-10');
  });
});
