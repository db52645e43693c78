/**
 * Campaigns: bonus points layered on the base programme, as a pure function (no I/O, no clock).
 *
 * A campaign is a sequence of immutable versions; a change is a new version effective from a time,
 * never an edit. A payment is judged by the campaign versions in force at its *authorisation*, on the
 * facts it carries at authorisation (channel, store, currency, authorised amount, authorisation time):
 * {@link evaluateCampaigns} says, per campaign, whether it qualified, each condition's pass or fail
 * and the bonus at authorisation, after caps and stacking. Later effects (capture, refunds,
 * chargebacks) scale that bonus exactly as the base points are scaled (`proportion`), so arrival order
 * and duplicates cannot change what a payment earns.
 *
 * Conditions on the shopper (tier, opt-in, first or every Nth purchase) and the limits that depend on
 * what was granted before (a per-shopper cap per period, a global budget) are judged on a
 * {@link CampaignLedgerState} the caller reads under its locks and passes in: still a pure function
 * of its inputs. The caller judges a payment once, when its lot is created, and keeps the result
 * (campaign-usage.ts says why that keeps a payment's result independent of arrival order).
 */
import { inWindow, localTime, WEEKDAYS, type Weekday } from './campaign-time.js';
import { currencyExponent, MAX_POINTS_PER_PAYMENT } from './programme.js';

export { isTimeZone, localTime, minutesOf, WEEKDAYS, type Weekday } from './campaign-time.js';

export type CampaignEffect =
  /** The base points times `factor` (≥ 1): the bonus is base × (factor − 1), floored. */
  | { readonly kind: 'multiplier'; readonly factor: number }
  /** A fixed number of points per qualifying payment. */
  | { readonly kind: 'fixed_bonus'; readonly points: number }
  /** `points` per whole currency unit of the authorised amount, floored. */
  | { readonly kind: 'points_per_unit'; readonly points: number };

export interface CampaignConditions {
  readonly channels?: readonly string[];
  readonly storeIds?: readonly string[];
  /** The payment's currency must be this one (required with an amount range). */
  readonly currency?: string;
  /** Authorised amount in minor units: at least `minAmount`, at most `maxAmount`. */
  readonly minAmount?: number;
  readonly maxAmount?: number;
  /** Local days of the authorisation in `timeZone`. */
  readonly daysOfWeek?: readonly Weekday[];
  /** Local time of the authorisation in `timeZone`, `from` inclusive, `to` exclusive ("HH:MM"); wraps past midnight when from > to. */
  readonly timeWindow?: { readonly from: string; readonly to: string };
  /** IANA time zone of `daysOfWeek`, `timeWindow` and the per-shopper cap's periods (required with the first two). */
  readonly timeZone?: string;
  /** The payment's merchant account must be one of these. */
  readonly merchantAccounts?: readonly string[];
  /** Merchant category codes (ISO 18245): include (one of) and exclude (none of). */
  readonly merchantCategoryCodes?: { readonly include?: readonly string[]; readonly exclude?: readonly string[] };
  /** Gift-card and stored-value MCCs ({@link GIFT_CARD_MCCS}) are excluded unless this is true. */
  readonly allowGiftCardMccs?: boolean;
  /** The card's brand (as the vault detects it: `visa`, `mastercard`, `amex`…) must be one of these. */
  readonly cardBrands?: readonly string[];
  /** The shopper's tier at authorisation must be one of these. */
  readonly tiers?: readonly string[];
  /** The shopper must have activated the campaign (from the app) at or before the authorisation. */
  readonly optInRequired?: boolean;
  /** Only the shopper's first purchase meeting the campaign's other conditions. */
  readonly firstPurchaseOnly?: boolean;
  /** Only every Nth purchase meeting the campaign's other conditions (the Nth, 2Nth…). */
  readonly everyNthPurchase?: number;
}

/**
 * Merchant category codes excluded from every campaign by default (`allowGiftCardMccs` lifts it):
 * buying gift cards or loading stored value with a card would otherwise earn bonus points that are
 * then spent again as money. 6540 is the schemes' "stored value card purchase/load" (Visa's
 * "non-financial institutions – stored value card purchase/load", Mastercard's equivalent); 6051
 * is quasi-cash (money orders, travellers' cheques, stored value). 5947 (gift, card, novelty and
 * souvenir shops: greeting cards, not gift cards) is deliberately not in the list.
 */
export const GIFT_CARD_MCCS: readonly string[] = ['6051', '6540'];

export type CapPeriod = 'day' | 'week' | 'month' | 'campaign';

export interface CampaignDefinition {
  readonly name: string;
  /** The campaign runs from `startsAt` (inclusive) to `endsAt` (exclusive; absent: open-ended). */
  readonly startsAt: Date;
  readonly endsAt?: Date;
  readonly conditions: CampaignConditions;
  readonly effect: CampaignEffect;
  /** At most this many bonus points per payment. */
  readonly maxBonusPerPayment?: number;
  /** At most this many bonus points per shopper per period (local to the campaign's time zone, else UTC). */
  readonly maxBonusPerShopper?: { readonly points: number; readonly period: CapPeriod };
  /** The campaign's global budget: at most this many bonus points granted in all (every shopper). */
  readonly budget?: number;
  /** Higher is considered first. */
  readonly priority: number;
  /** Exclusive: applies only if no campaign applied before it, and then stops the rest. */
  readonly stacking: 'exclusive' | 'combinable';
}

export interface CampaignVersion {
  readonly campaignId: string;
  readonly version: number;
  readonly effectiveFrom: Date;
  readonly definition: CampaignDefinition;
  readonly createdBy: string;
  readonly createdAt: Date;
}

/** The payment's facts at authorisation: all a campaign may be judged on. */
export interface AuthorisationFacts {
  readonly authorisedAt: Date;
  readonly authorisedAmount: number;
  readonly currency: string;
  readonly channel: string | null;
  readonly storeId: string | null;
  /** The base points of the authorised amount (what a multiplier multiplies). */
  readonly basePoints: number;
  /** Unknown (absent or null): a condition naming values fails, an exclusion passes. */
  readonly merchantAccount?: string | null;
  readonly merchantCategoryCode?: string | null;
  readonly cardBrand?: string | null;
  /** The shopper's tier at authorisation (null: none, or tiers are not in use). */
  readonly shopperTier?: string | null;
}

/**
 * What was granted before this payment, read under the locks that make it exact (the shopper's
 * account for the per-shopper figures, the campaign's budget row for the budget).
 */
export interface CampaignLedgerState {
  /** When the shopper activated the campaign (undefined: never). */
  activatedAt(campaignId: string): Date | undefined;
  /** The shopper's purchases counted by this campaign so far. */
  purchases(campaignId: string): number;
  /** Bonus points this campaign granted the shopper in this period. */
  grantedInPeriod(campaignId: string, period: string): number;
  /** Bonus points this campaign granted in all, every shopper. */
  budgetSpent(campaignId: string): number;
}

export const NO_LEDGER_STATE: CampaignLedgerState = {
  activatedAt: () => undefined,
  purchases: () => 0,
  grantedInPeriod: () => 0,
  budgetSpent: () => 0,
};

export type ConditionName =
  | 'period'
  | 'channel'
  | 'store'
  | 'merchant_account'
  | 'merchant_category'
  | 'card_brand'
  | 'currency'
  | 'amount'
  | 'day_of_week'
  | 'time_of_day'
  | 'tier'
  | 'opt_in'
  | 'purchase_number';

export interface ConditionResult {
  readonly condition: ConditionName;
  readonly passed: boolean;
}

export interface CampaignOutcome {
  readonly campaignId: string;
  readonly version: number;
  /** Every condition passed. */
  readonly qualified: boolean;
  readonly conditions: readonly ConditionResult[];
  /** Why a qualifying campaign gave nothing (or less), if it did. */
  readonly limitedBy?: LimitedBy;
  /** Bonus points at authorisation, after the caps, the budget and stacking (0 when not applied). */
  readonly bonus: number;
  /** The bonus before the per-shopper cap and the budget, when one of them cut it. */
  readonly requested?: number;
  /** The shopper's purchase number in this campaign, when the campaign counts purchases and counted it. */
  readonly purchaseNumber?: number;
  /** The per-shopper cap's period this bonus counts against (e.g. `2026-12-07`, `week:2026-12-07`). */
  readonly capPeriod?: string;
}

/** `cap`: per payment; `shopper_cap`: per shopper and period; `budget`: the global budget; `exclusive`: stacking. */
export type LimitedBy = 'cap' | 'shopper_cap' | 'budget' | 'exclusive';

/** For each campaign, the newest version effective at `at` (campaigns with none yet are absent). */
export function campaignsInForce(versions: readonly CampaignVersion[], at: Date): CampaignVersion[] {
  const newest = new Map<string, CampaignVersion>();
  for (const v of versions) {
    if (v.effectiveFrom > at) continue;
    const found = newest.get(v.campaignId);
    if (found === undefined || v.version > found.version) newest.set(v.campaignId, v);
  }
  return [...newest.values()].sort(byStacking);
}

/**
 * Judges every campaign, then stacks the qualified ones in priority order, each limited by its
 * per-payment cap, what is left of the per-shopper cap of its period and of its budget (`state`).
 * Pure. The caller adds each outcome's bonus and purchase number to its state before judging the
 * shopper's next payment ({@link countsPurchases}, `capPeriod`).
 */
export function evaluateCampaigns(
  versions: readonly CampaignVersion[],
  facts: AuthorisationFacts,
  state: CampaignLedgerState = NO_LEDGER_STATE,
): CampaignOutcome[] {
  let closed = false;
  let applied = false;
  let room = Math.max(0, MAX_POINTS_PER_PAYMENT - facts.basePoints);
  return [...versions].sort(byStacking).map((v): CampaignOutcome => {
    const d = v.definition;
    const conditions = judge(d, facts, state.activatedAt(v.campaignId));
    let purchaseNumber: number | undefined;
    if (countsPurchases(d) && conditions.every((c) => c.passed)) {
      purchaseNumber = state.purchases(v.campaignId) + 1;
      const passed = d.conditions.firstPurchaseOnly === true ? purchaseNumber === 1 : true;
      const nth = d.conditions.everyNthPurchase;
      conditions.push({
        condition: 'purchase_number',
        passed: passed && (nth === undefined || purchaseNumber % nth === 0),
      });
    }
    const qualified = conditions.every((c) => c.passed);
    const base = {
      campaignId: v.campaignId,
      version: v.version,
      qualified,
      conditions,
      ...(purchaseNumber === undefined ? {} : { purchaseNumber }),
    };
    if (!qualified) return { ...base, bonus: 0 };
    const exclusive = d.stacking === 'exclusive';
    if (closed || (exclusive && applied)) return { ...base, limitedBy: 'exclusive', bonus: 0 };
    const uncapped = bonusOf(d.effect, facts);
    let bonus = Math.min(d.maxBonusPerPayment ?? uncapped, uncapped, room);
    let limitedBy: LimitedBy | undefined = bonus < uncapped ? 'cap' : undefined;
    const requested = bonus;
    const period = d.maxBonusPerShopper === undefined ? undefined : capPeriodOf(d, facts.authorisedAt);
    if (d.maxBonusPerShopper !== undefined && period !== undefined) {
      const left = Math.max(0, d.maxBonusPerShopper.points - state.grantedInPeriod(v.campaignId, period));
      if (left < bonus) [bonus, limitedBy] = [left, 'shopper_cap'];
    }
    if (d.budget !== undefined) {
      const left = Math.max(0, d.budget - state.budgetSpent(v.campaignId));
      if (left < bonus) [bonus, limitedBy] = [left, 'budget'];
    }
    room -= bonus;
    if (bonus > 0) applied = true;
    if (exclusive && bonus > 0) closed = true;
    return {
      ...base,
      ...(limitedBy === undefined ? {} : { limitedBy }),
      bonus,
      ...(bonus < requested ? { requested } : {}),
      ...(period === undefined ? {} : { capPeriod: period }),
    };
  });
}

/** The campaign numbers the shopper's purchases (first purchase only, or every Nth). */
export function countsPurchases(d: CampaignDefinition): boolean {
  return d.conditions.firstPurchaseOnly === true || d.conditions.everyNthPurchase !== undefined;
}

/** The campaign needs per-shopper or global state to be judged (a lot created under it consumes it). */
export function isStateful(d: CampaignDefinition): boolean {
  return (
    countsPurchases(d) ||
    d.conditions.optInRequired === true ||
    d.maxBonusPerShopper !== undefined ||
    d.budget !== undefined
  );
}

/** The per-shopper cap's period of an authorisation: its local day, week (Monday) or month, or the whole campaign. */
export function capPeriodOf(d: CampaignDefinition, at: Date): string {
  const period = d.maxBonusPerShopper?.period ?? 'campaign';
  if (period === 'campaign') return 'campaign';
  const local = localTime(at, d.conditions.timeZone ?? 'UTC');
  if (period === 'day') return local.date;
  if (period === 'month') return local.date.slice(0, 7);
  const [y, m, day] = local.date.split('-').map(Number) as [number, number, number];
  const monday = new Date(Date.UTC(y, m - 1, day - WEEKDAYS.indexOf(local.weekday)));
  return `week:${monday.toISOString().slice(0, 10)}`;
}

/** Priority (highest first), then campaign id: a total order, so stacking never depends on input order. */
function byStacking(a: CampaignVersion, b: CampaignVersion): number {
  return (
    b.definition.priority - a.definition.priority ||
    (a.campaignId < b.campaignId ? -1 : a.campaignId > b.campaignId ? 1 : 0)
  );
}

function judge(d: CampaignDefinition, f: AuthorisationFacts, activatedAt: Date | undefined): ConditionResult[] {
  const c = d.conditions;
  const results: ConditionResult[] = [
    {
      condition: 'period',
      passed: d.startsAt <= f.authorisedAt && (d.endsAt === undefined || f.authorisedAt < d.endsAt),
    },
  ];
  const add = (condition: ConditionName, passed: boolean): void => void results.push({ condition, passed });
  const oneOf = (values: readonly string[], value: string | null | undefined): boolean =>
    value !== null && value !== undefined && values.includes(value);
  if (c.channels !== undefined) add('channel', oneOf(c.channels, f.channel));
  if (c.storeIds !== undefined) add('store', oneOf(c.storeIds, f.storeId));
  if (c.merchantAccounts !== undefined) add('merchant_account', oneOf(c.merchantAccounts, f.merchantAccount));
  const mcc = f.merchantCategoryCode ?? null;
  const { include, exclude } = c.merchantCategoryCodes ?? {};
  if (include !== undefined || exclude !== undefined || mcc !== null) {
    const excluded = [...(exclude ?? []), ...(c.allowGiftCardMccs === true ? [] : GIFT_CARD_MCCS)];
    add(
      'merchant_category',
      (include === undefined || oneOf(include, mcc)) && (mcc === null || !excluded.includes(mcc)),
    );
  }
  if (c.cardBrands !== undefined) add('card_brand', oneOf(c.cardBrands, f.cardBrand));
  if (c.currency !== undefined) add('currency', f.currency === c.currency);
  if (c.minAmount !== undefined || c.maxAmount !== undefined) {
    add(
      'amount',
      f.authorisedAmount >= (c.minAmount ?? 0) && (c.maxAmount === undefined || f.authorisedAmount <= c.maxAmount),
    );
  }
  if (c.daysOfWeek !== undefined || c.timeWindow !== undefined) {
    const local = localTime(f.authorisedAt, c.timeZone ?? 'UTC');
    if (c.daysOfWeek !== undefined) add('day_of_week', c.daysOfWeek.includes(local.weekday));
    if (c.timeWindow !== undefined) add('time_of_day', inWindow(local.minutes, c.timeWindow));
  }
  if (c.tiers !== undefined) add('tier', oneOf(c.tiers, f.shopperTier));
  if (c.optInRequired === true) add('opt_in', activatedAt !== undefined && activatedAt <= f.authorisedAt);
  return results;
}

/** A whole, non-negative, safe number of points whatever the stored effect says (0 otherwise). */
function bonusOf(effect: CampaignEffect, f: AuthorisationFacts): number {
  const bonus = Math.floor(rawBonusOf(effect, f));
  return Number.isSafeInteger(bonus) && bonus > 0 ? bonus : 0;
}

function rawBonusOf(effect: CampaignEffect, f: AuthorisationFacts): number {
  switch (effect.kind) {
    case 'multiplier':
      return timesRate(f.basePoints, effect.factor - 1);
    case 'fixed_bonus':
      return effect.points;
    case 'points_per_unit': {
      const units = Math.floor(f.authorisedAmount / 10 ** currencyExponent(f.currency));
      return timesRate(units, effect.points);
    }
  }
}

/**
 * `count × rate`, floored, exactly: the rate is taken to a millionth (0.1 is 100 000 ppm) and the
 * product is made in bigint, because 10^11 units × 100 × 10^6 is past the exact range of a double.
 */
function timesRate(count: number, rate: number): number {
  const ppm = Math.round(rate * 1e6);
  if (!Number.isSafeInteger(count) || count <= 0 || !Number.isSafeInteger(ppm) || ppm <= 0) return 0;
  return Number((BigInt(count) * BigInt(ppm)) / 1_000_000n);
}
