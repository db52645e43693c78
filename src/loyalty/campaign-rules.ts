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
 * Not judged yet (the payment carries no such fact today): merchant account, merchant category code
 * (and so the default gift-card exclusion), card brand; nor the shopper's tier, first/Nth purchase or
 * opt-in (they need per-shopper state).
 */
import { currencyExponent, MAX_POINTS_PER_PAYMENT } from './programme.js';

export const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;
export type Weekday = (typeof WEEKDAYS)[number];

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
  /** IANA time zone of `daysOfWeek` and `timeWindow` (required with either). */
  readonly timeZone?: string;
}

export interface CampaignDefinition {
  readonly name: string;
  /** The campaign runs from `startsAt` (inclusive) to `endsAt` (exclusive; absent: open-ended). */
  readonly startsAt: Date;
  readonly endsAt?: Date;
  readonly conditions: CampaignConditions;
  readonly effect: CampaignEffect;
  /** At most this many bonus points per payment. */
  readonly maxBonusPerPayment?: number;
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
  /** The shopper's tier at authorisation, as pinned on the lot (null: the programme had no tiers). */
  readonly shopperTier: string | null;
}

export type ConditionName = 'period' | 'channel' | 'store' | 'currency' | 'amount' | 'day_of_week' | 'time_of_day';

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
  readonly limitedBy?: 'cap' | 'exclusive';
  /** Bonus points at authorisation, after the cap and stacking (0 when not applied). */
  readonly bonus: number;
}

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

/** Judges every campaign, then stacks the qualified ones in priority order. Pure. */
export function evaluateCampaigns(versions: readonly CampaignVersion[], facts: AuthorisationFacts): CampaignOutcome[] {
  let closed = false;
  let applied = false;
  let room = Math.max(0, MAX_POINTS_PER_PAYMENT - facts.basePoints);
  return [...versions].sort(byStacking).map((v) => {
    const conditions = judge(v.definition, facts);
    const qualified = conditions.every((c) => c.passed);
    const base = { campaignId: v.campaignId, version: v.version, qualified, conditions };
    if (!qualified) return { ...base, bonus: 0 };
    const exclusive = v.definition.stacking === 'exclusive';
    if (closed || (exclusive && applied)) return { ...base, limitedBy: 'exclusive' as const, bonus: 0 };
    const uncapped = bonusOf(v.definition.effect, facts);
    const cap = v.definition.maxBonusPerPayment;
    const bonus = Math.min(cap ?? uncapped, uncapped, room);
    room -= bonus;
    if (bonus > 0) applied = true;
    if (exclusive && bonus > 0) closed = true;
    return bonus < uncapped ? { ...base, limitedBy: 'cap' as const, bonus } : { ...base, bonus };
  });
}

/** Priority (highest first), then campaign id: a total order, so stacking never depends on input order. */
function byStacking(a: CampaignVersion, b: CampaignVersion): number {
  return (
    b.definition.priority - a.definition.priority ||
    (a.campaignId < b.campaignId ? -1 : a.campaignId > b.campaignId ? 1 : 0)
  );
}

function judge(d: CampaignDefinition, f: AuthorisationFacts): ConditionResult[] {
  const c = d.conditions;
  const results: ConditionResult[] = [
    {
      condition: 'period',
      passed: d.startsAt <= f.authorisedAt && (d.endsAt === undefined || f.authorisedAt < d.endsAt),
    },
  ];
  const add = (condition: ConditionName, passed: boolean): void => void results.push({ condition, passed });
  if (c.channels !== undefined) add('channel', f.channel !== null && c.channels.includes(f.channel));
  if (c.storeIds !== undefined) add('store', f.storeId !== null && c.storeIds.includes(f.storeId));
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

const formatters = new Map<string, Intl.DateTimeFormat>();

/** The weekday and minutes since midnight of `at` in `timeZone` (Intl: no dependency, DST-correct). */
export function localTime(at: Date, timeZone: string): { weekday: Weekday; minutes: number } {
  let format = formatters.get(timeZone);
  if (format === undefined) {
    format = new Intl.DateTimeFormat('en-GB', {
      timeZone,
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    });
    formatters.set(timeZone, format);
  }
  const parts = Object.fromEntries(format.formatToParts(at).map((p) => [p.type, p.value]));
  const weekday = String(parts['weekday']).toLowerCase().slice(0, 3) as Weekday;
  return { weekday, minutes: Number(parts['hour']) * 60 + Number(parts['minute']) };
}

export function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return (h ?? 0) * 60 + (m ?? 0);
}

function inWindow(minutes: number, window: { readonly from: string; readonly to: string }): boolean {
  const from = minutesOf(window.from);
  const to = minutesOf(window.to);
  return from <= to ? minutes >= from && minutes < to : minutes >= from || minutes < to;
}

/** True when `timeZone` is an IANA zone this runtime knows. */
export function isTimeZone(timeZone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-GB', { timeZone });
    return true;
  } catch {
    return false;
  }
}
