/**
 * The programme's holds and abuse controls (issue 21), per programme version like every rule, and
 * pure: a payment's hold window, its earning cap and what a refund of spent points does are read
 * from the version it earns under (the one in force at its authorisation); a redemption's velocity
 * limit from the version in force when it is made.
 *
 * - **Hold window** (`holdWindowHours`): points held at authorisation are released (`hold_expired`)
 *   once the authorisation is this old without a capture. Null: holds never lapse.
 * - **Spent points** (`spentPointsPolicy`): a refund or chargeback whose points were already spent
 *   takes them from the payment's lot, then the shopper's other lots (soonest-expiring first), and
 *   what is still missing:
 *   - `write_off`: goes into debt only within `negativeBalanceAllowance`, the rest is written off (the
 *     behaviour before issue 21; the versions published before it read as this);
 *   - `clawback`: goes into a negative balance down to `-clawbackLimit` (at least the allowance), the
 *     rest is written off;
 *   - `debt`: goes into debt in full, without a bound; nothing is written off.
 *   A debt shows as a negative balance (no redemption is possible while it lasts) and the shopper's
 *   next earnings pay it first (`debt_settled`). So buy → redeem → refund keeps nothing under `debt`,
 *   and nothing beyond `clawbackLimit` under `clawback`.
 * - **Earning cap** (`earningCap`): a shopper earns at most `points` base points per UTC `day`,
 *   ISO `week` (from Monday) or calendar `month`. A payment reserves its share of the cap of its
 *   authorisation's period when its lot is opened (the points of the authorised amount, as far as
 *   the period has some left); its base points never exceed that reservation, and a reservation is
 *   not given back when the payment is captured for less, cancelled or refunded (refund-and-buy-again
 *   cannot farm the cap). Campaign bonuses are not counted (campaigns carry their own caps).
 * - **Redemption velocity** (`redemptionVelocity`): at most `maxCount` redemptions and/or `maxPoints`
 *   points per shopper in any `windowSeconds`; beyond it `429 REDEMPTION_VELOCITY_EXCEEDED` with
 *   `Retry-After`; one redemption of more than `maxPoints` is `422 REDEMPTION_ABOVE_LIMIT` (waiting
 *   cannot help). Reversed redemptions still count (a redeem-and-reverse loop is throttled too).
 */

export const SPENT_POINTS_POLICIES = ['write_off', 'clawback', 'debt'] as const;
export type SpentPointsPolicy = (typeof SPENT_POINTS_POLICIES)[number];

export const CAP_PERIODS = ['day', 'week', 'month'] as const;
export type CapPeriod = (typeof CAP_PERIODS)[number];

export interface EarningCap {
  readonly points: number;
  readonly period: CapPeriod;
}

export interface RedemptionVelocity {
  readonly windowSeconds: number;
  readonly maxCount?: number;
  readonly maxPoints?: number;
}

export interface ProgrammeControls {
  readonly holdWindowHours: number | null;
  readonly spentPointsPolicy: SpentPointsPolicy;
  readonly clawbackLimit: number;
  readonly earningCap: EarningCap | null;
  readonly redemptionVelocity: RedemptionVelocity | null;
}

/** What a version stored before these controls existed is read as: exactly how it behaved. */
export const LEGACY_CONTROLS: ProgrammeControls = {
  holdWindowHours: null,
  spentPointsPolicy: 'write_off',
  clawbackLimit: 0,
  earningCap: null,
  redemptionVelocity: null,
};

/** What `PUT /v1/programme` fills in when not given: holds lapse after 7 days, spent points become debt. */
export const PUBLISHED_CONTROLS: ProgrammeControls = {
  holdWindowHours: 168,
  spentPointsPolicy: 'debt',
  clawbackLimit: 0,
  earningCap: null,
  redemptionVelocity: null,
};

/** When a hold taken at `authorisedAt` lapses; null when the version's holds never do. */
export function holdExpiresAt(authorisedAt: Date, rules: Pick<ProgrammeControls, 'holdWindowHours'>): Date | null {
  return rules.holdWindowHours === null ? null : new Date(authorisedAt.getTime() + rules.holdWindowHours * 3_600_000);
}

/**
 * How many points a take-back may put into debt beyond what the lots hold, given the debt there is
 * already; the rest is written off.
 */
export function debtAllowance(
  rules: Pick<ProgrammeControls, 'spentPointsPolicy' | 'clawbackLimit'> & { readonly negativeBalanceAllowance: number },
): number {
  switch (rules.spentPointsPolicy) {
    case 'write_off':
      return rules.negativeBalanceAllowance;
    case 'clawback':
      return Math.max(rules.negativeBalanceAllowance, rules.clawbackLimit);
    case 'debt':
      return Number.MAX_SAFE_INTEGER;
  }
}

/** The start (UTC) of the cap period containing `at`. */
export function capPeriodStart(at: Date, period: CapPeriod): Date {
  const y = at.getUTCFullYear();
  const m = at.getUTCMonth();
  const d = at.getUTCDate();
  switch (period) {
    case 'day':
      return new Date(Date.UTC(y, m, d));
    case 'week':
      // ISO weeks start on Monday: getUTCDay() is 0 on Sunday.
      return new Date(Date.UTC(y, m, d - ((at.getUTCDay() + 6) % 7)));
    case 'month':
      return new Date(Date.UTC(y, m, 1));
  }
}

interface Targets {
  readonly pending: number;
  readonly earn: number;
  readonly reversal: number;
}

/**
 * A payment's base targets within its cap reservation (undefined: no cap), and with its hold released
 * once the release job released it. The reversal keeps its proportion of what is earned (half up, as
 * every reversal), so a full refund still takes back exactly what was earned.
 */
export function controlledTargets(
  targets: Targets,
  lot: { readonly cap_reserved: number | null; readonly hold_expired_at: Date | null },
): Targets {
  const released = lot.hold_expired_at === null ? targets : { ...targets, pending: 0 };
  const cap = lot.cap_reserved;
  if (cap === null || (released.earn <= cap && released.pending <= cap)) return released;
  const earn = Math.min(released.earn, cap);
  return { pending: Math.min(released.pending, cap), earn, reversal: share(earn, released.reversal, released.earn) };
}

/** round(points × part ÷ whole), half up, exact (as earning.ts's proportion). */
function share(points: number, part: number, whole: number): number {
  if (whole <= 0 || part <= 0 || points <= 0) return 0;
  if (part >= whole) return points;
  return Number((2n * BigInt(points) * BigInt(part) + BigInt(whole)) / (2n * BigInt(whole)));
}

/** A shopper's redemptions in the velocity window (reversed ones included), oldest first. */
export interface RecentRedemption {
  readonly points: number;
  readonly createdAt: Date;
}

/**
 * Whether one more redemption of `points` now stays within the velocity limit; when not, how long
 * until enough of the window's redemptions have left it (whole seconds, at least 1), or `'never'`
 * when the redemption alone is more than the window allows (`422 REDEMPTION_ABOVE_LIMIT`).
 */
export function velocityRefusal(
  limit: RedemptionVelocity | null,
  recent: readonly RecentRedemption[],
  points: number,
  now: Date,
): { readonly retryAfterSeconds: number } | 'never' | undefined {
  if (limit === null) return undefined;
  if (limit.maxPoints !== undefined && points > limit.maxPoints) return 'never';
  const windowMs = limit.windowSeconds * 1000;
  const inWindow = recent
    .filter((r) => r.createdAt.getTime() > now.getTime() - windowMs)
    .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
  const fits = (from: number): boolean => {
    const rest = inWindow.slice(from);
    const count = rest.length + 1;
    const total = rest.reduce((sum, r) => sum + r.points, 0) + points;
    return (
      (limit.maxCount === undefined || count <= limit.maxCount) &&
      (limit.maxPoints === undefined || total <= limit.maxPoints)
    );
  };
  if (fits(0)) return undefined;
  // The earliest moment it fits: once the first `k` redemptions of the window have left it.
  for (let k = 1; k <= inWindow.length; k += 1) {
    if (fits(k)) {
      const leaves = (inWindow[k - 1] as RecentRedemption).createdAt.getTime() + windowMs;
      return { retryAfterSeconds: Math.max(1, Math.ceil((leaves - now.getTime()) / 1000)) };
    }
  }
  return { retryAfterSeconds: limit.windowSeconds };
}
