/**
 * Tiers: status levels a shopper reaches by qualifying spend or points, as pure functions (no I/O,
 * no clock: the time is always given).
 *
 * The policy is part of a programme version (`rules.tiers`), versioned and never edited like the
 * rest of the rules. Which level a shopper holds is decided under the version in force *now* (the
 * version a review or a payment is judged by); the multiplier a payment earns with is the one of the
 * level the shopper held at its *authorisation*, under the version in force then, pinned on its lot.
 *
 * - **Upgrade at once**: when the figure of the current window reaches a higher level.
 * - **Held for a period**: a calendar policy (`months`: 1, 3, 6, 12… aligned on 1 January UTC) keeps
 *   a level reached in a period through the whole next one: it is reviewed at the end of the period it
 *   was reached in (plus grace) on that period's figure, then at each period end on the period that
 *   ended. A rolling policy (`days`) keeps a level `days` from when it was reached or last confirmed,
 *   then reviews it on the figure of those `days`.
 * - **Grace**: a review is due `graceDays` after the period end; qualifying payments authorised during
 *   the grace days count too (the review takes the better of the ended period and the window ending at
 *   the review).
 * - **Downgrade policy** at a review whose figure no longer supports the level: `one_level` (down one,
 *   never below what the figure supports) or `to_qualifying` (straight to what the figure supports).
 * - **Refunds**: an upgrade is provisional on the spend that earned it until its first review. A
 *   refund or chargeback that takes qualifying spend (or points) back so that the figure counted since
 *   the upgrade's window began no longer reaches the level drops the shopper at once to the better of
 *   what that figure supports and the level confirmed by the last review (the *floor*). A level
 *   confirmed by a review is not taken away by a later refund before the next review: that review
 *   counts the refund. Points a payment earned under a tier stay as earned (the multiplier was pinned
 *   at its authorisation); its own refund takes them back proportionally as always.
 */

export interface TierLevel {
  readonly name: string;
  /** The figure (minor units of `currency`, or points) from which this level is held. */
  readonly threshold: number;
  /** Points multiplier of payments authorised while the shopper holds this level (≥ 1). */
  readonly multiplier: number;
}

export type TierWindow =
  { readonly kind: 'calendar'; readonly months: number } | { readonly kind: 'rolling'; readonly days: number };

export interface TierPolicy {
  /** `spend`: net captured amount of payments in `currency`; `points`: net points earned. */
  readonly measure: 'spend' | 'points';
  readonly currency?: string;
  readonly window: TierWindow;
  /** Ascending thresholds; the first is 0 (every shopper holds at least it). */
  readonly levels: readonly TierLevel[];
  readonly downgrade: 'one_level' | 'to_qualifying';
  readonly graceDays: number;
}

/** The tier a payment earns with, pinned on its lot at authorisation. */
export interface PinnedTier {
  readonly name: string;
  readonly multiplier: number;
}

/** A shopper's tier as its newest change left it. */
export interface TierState {
  readonly seq: number;
  readonly tier: string;
  /** The level the last review confirmed (or the first level): what a refund cannot take away. */
  readonly floorTier: string;
  readonly periodStart: Date;
  /** When the level is next reviewed; null at the first level (nothing to review). */
  readonly reviewAt: Date | null;
  readonly changedAt: Date;
}

export type TierChangeReason = 'upgrade' | 'refund' | 'downgrade' | 'renewed';

/** A new state and why; `previousTier` differs from `state.tier` except for a renewal. */
export interface TierChange {
  readonly state: TierState;
  readonly previousTier: string;
  readonly reason: TierChangeReason;
  /** The qualifying figure the change was decided on. */
  readonly figure: number;
}

/** Half-open `[from, to)` on payments' authorisation times. */
export interface Window {
  readonly from: Date;
  readonly to: Date;
}

const DAY = 86_400_000;
/** The end of "open" windows (a date PostgreSQL and JavaScript both hold). */
export const OPEN_END = new Date(Date.UTC(9999, 11, 31));

export type TierProblem =
  | 'first_threshold_not_zero'
  | 'thresholds_not_ascending'
  | 'names_not_unique'
  | 'spend_needs_currency'
  | 'months_not_dividing_year';

/** Why a policy is refused (openapi.yaml checks types and ranges); empty when acceptable. */
export function tierPolicyProblems(p: TierPolicy): TierProblem[] {
  const problems: TierProblem[] = [];
  if (p.levels[0]?.threshold !== 0) problems.push('first_threshold_not_zero');
  if (p.levels.some((l, i) => i > 0 && l.threshold <= (p.levels[i - 1] as TierLevel).threshold)) {
    problems.push('thresholds_not_ascending');
  }
  if (new Set(p.levels.map((l) => l.name)).size !== p.levels.length) problems.push('names_not_unique');
  if (p.measure === 'spend' && p.currency === undefined) problems.push('spend_needs_currency');
  if (p.window.kind === 'calendar' && 12 % p.window.months !== 0) problems.push('months_not_dividing_year');
  return problems;
}

/** The index of a level by name (a name the policy no longer has counts as the first level). */
export function levelIndex(policy: TierPolicy, name: string): number {
  return Math.max(
    0,
    policy.levels.findIndex((l) => l.name === name),
  );
}

/** The highest level whose threshold the figure reaches. */
export function levelFor(policy: TierPolicy, figure: number): number {
  let found = 0;
  policy.levels.forEach((l, i) => {
    if (figure >= l.threshold) found = i;
  });
  return found;
}

function nameOf(policy: TierPolicy, index: number): string {
  return (policy.levels[index] as TierLevel).name;
}

/** The start of the period a level reached at `at` is counted in. */
export function periodStartOf(window: TierWindow, at: Date): Date {
  if (window.kind === 'rolling') return at;
  const month = Math.floor(at.getUTCMonth() / window.months) * window.months;
  return new Date(Date.UTC(at.getUTCFullYear(), month, 1));
}

export function periodEndOf(window: TierWindow, start: Date): Date {
  if (window.kind === 'rolling') return new Date(start.getTime() + window.days * DAY);
  return new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + window.months, start.getUTCDate()));
}

export function reviewAtOf(policy: TierPolicy, periodStart: Date): Date {
  return new Date(periodEndOf(policy.window, periodStart).getTime() + policy.graceDays * DAY);
}

/** The window an upgrade at `now` is judged on: the calendar period so far, or the last `days`. */
export function currentWindow(window: TierWindow, now: Date): Window {
  if (window.kind === 'rolling') return { from: new Date(now.getTime() - window.days * DAY), to: OPEN_END };
  const from = periodStartOf(window, now);
  return { from, to: periodEndOf(window, from) };
}

/**
 * Where a provisional level's spend is counted from (a refund check): the start of the window it
 * was reached on, to now. Only refunds lower it; time passing does not.
 */
export function grantWindow(window: TierWindow, state: TierState): Window {
  const from =
    window.kind === 'rolling' ? new Date(state.periodStart.getTime() - window.days * DAY) : state.periodStart;
  return { from, to: OPEN_END };
}

/** The windows a review is judged on: the period that ended and the one ending at the review. */
export function reviewWindows(policy: TierPolicy, state: TierState): { ended: Window; grace: Window } {
  const end = periodEndOf(policy.window, state.periodStart);
  const at = reviewAtOf(policy, state.periodStart);
  const graceFrom =
    policy.window.kind === 'rolling' ? new Date(at.getTime() - policy.window.days * DAY) : new Date(end.getTime());
  return { ended: { from: state.periodStart, to: end }, grace: { from: graceFrom, to: at } };
}

/** A shopper's state before any change: the first level, nothing to review. */
export function initialState(policy: TierPolicy, at: Date): TierState {
  const first = nameOf(policy, 0);
  return { seq: 0, tier: first, floorTier: first, periodStart: at, reviewAt: null, changedAt: at };
}

/**
 * After a payment of the shopper changed its qualifying figures: a refund check of a provisional
 * level (on the figure since its window began), then an upgrade (on the current window's figure).
 * At most one change: a drop and a re-upgrade in one step is just the level the figures support.
 */
export function onQualifyingChange(
  policy: TierPolicy,
  state: TierState,
  figures: { readonly sinceGrant: number; readonly current: number },
  now: Date,
): TierChange | undefined {
  const held = levelIndex(policy, state.tier);
  const floor = Math.min(levelIndex(policy, state.floorTier), held);
  let level = held;
  let reason: TierChangeReason | undefined;
  let figure = figures.current;
  if (held > floor && levelFor(policy, figures.sinceGrant) < held) {
    level = Math.max(levelFor(policy, figures.sinceGrant), floor);
    reason = 'refund';
    figure = figures.sinceGrant;
  }
  const target = levelFor(policy, figures.current);
  if (target > level) {
    const periodStart = periodStartOf(policy.window, now);
    if (target === held) return undefined;
    return {
      previousTier: state.tier,
      reason: 'upgrade',
      figure: figures.current,
      state: {
        seq: state.seq + 1,
        tier: nameOf(policy, target),
        floorTier: nameOf(policy, floor),
        periodStart,
        reviewAt: reviewAtOf(policy, periodStart),
        changedAt: now,
      },
    };
  }
  if (reason === undefined) return undefined;
  return {
    previousTier: state.tier,
    reason,
    figure,
    state: {
      ...state,
      seq: state.seq + 1,
      tier: nameOf(policy, level),
      reviewAt: level === 0 ? null : state.reviewAt,
      changedAt: now,
    },
  };
}

/**
 * The review due at `state.reviewAt`: the level the better of the two windows' figures supports, or
 * the policy's step down from the held one. The level becomes the floor, and the next period starts
 * where this one ended. `at` is when the change is recorded (a review run late records it then).
 */
export function review(
  policy: TierPolicy,
  state: TierState,
  figures: { readonly ended: number; readonly grace: number },
  at: Date,
): TierChange {
  const held = levelIndex(policy, state.tier);
  const figure = Math.max(figures.ended, figures.grace);
  const supported = levelFor(policy, figure);
  const level =
    supported >= held ? supported : policy.downgrade === 'one_level' ? Math.max(supported, held - 1) : supported;
  const periodStart = periodEndOf(policy.window, state.periodStart);
  const tier = nameOf(policy, level);
  return {
    previousTier: state.tier,
    reason: level < held ? 'downgrade' : level > held ? 'upgrade' : 'renewed',
    figure,
    state: {
      seq: state.seq + 1,
      tier,
      floorTier: tier,
      periodStart,
      reviewAt: level === 0 ? null : reviewAtOf(policy, periodStart),
      changedAt: at,
    },
  };
}

/**
 * The tier a payment authorised at `authorisedAt` earns with: the level the shopper held then (the
 * newest change at or before it; the first level before any), with its multiplier under the version
 * in force at authorisation. Null when that version has no tiers.
 */
export function tierAt(
  policy: TierPolicy | undefined,
  history: readonly { readonly tier: string; readonly changedAt: Date; readonly seq: number }[],
  authorisedAt: Date,
): PinnedTier | null {
  if (policy === undefined) return null;
  let held: { tier: string; seq: number } | undefined;
  for (const h of history) {
    if (h.changedAt <= authorisedAt && (held === undefined || h.seq > held.seq)) held = h;
  }
  const name = held?.tier ?? nameOf(policy, 0);
  return { name, multiplier: policy.levels.find((l) => l.name === name)?.multiplier ?? 1 };
}

/** What the shopper sees: the level, what the next one needs, until when the level is held. */
export interface TierProgress {
  readonly tier: string;
  readonly multiplier: number;
  readonly figure: number;
  readonly window: Window;
  readonly next?: { readonly tier: string; readonly threshold: number; readonly remaining: number };
  readonly heldUntil: Date | null;
}

export function progressOf(policy: TierPolicy, state: TierState, figure: number, now: Date): TierProgress {
  const index = levelIndex(policy, state.tier);
  const level = policy.levels[index] as TierLevel;
  const next = policy.levels[index + 1];
  const window = currentWindow(policy.window, now);
  return {
    tier: level.name,
    multiplier: level.multiplier,
    figure,
    // A rolling window, as shown, ends now.
    window: policy.window.kind === 'rolling' ? { from: window.from, to: now } : window,
    ...(next === undefined
      ? {}
      : { next: { tier: next.name, threshold: next.threshold, remaining: Math.max(0, next.threshold - figure) } }),
    heldUntil: state.reviewAt,
  };
}

/**
 * The spend a payment qualifies with: what was captured (or authorised, on an auto-capture channel)
 * less what refunds and chargebacks took back. Pure, like the points.
 */
export function qualifyingSpend(
  payment: {
    readonly state: string;
    readonly authorisedAmount: number;
    readonly capturedAmount: number;
    readonly refundedAmount: number;
    readonly chargedBackAmount: number;
  },
  autoCapture: boolean,
): number {
  switch (payment.state) {
    case 'authorised':
      return autoCapture ? payment.authorisedAmount : 0;
    case 'captured':
    case 'partially_refunded':
    case 'refunded':
    case 'charged_back':
      return Math.max(0, payment.capturedAmount - payment.refundedAmount - payment.chargedBackAmount);
    default:
      return 0;
  }
}
