/**
 * What a payment should have earned, as a pure function of its derived state and the rules it earns
 * under. The ledger never adds "the delta of this event": it compares these targets with what the
 * payment's lot already holds and books the difference, so a duplicate books nothing and any arrival
 * order of the same facts ends with the same totals.
 */
import type { PaymentFigures } from '../payments/payment-state.js';
import { pointsFor, type ProgrammeRules } from './programme.js';

export interface EarningTargets {
  /** Points waiting for capture. */
  readonly pending: number;
  /** Points the payment earns once captured (or on authorisation, on an auto-capture channel). */
  readonly earn: number;
  /** Of `earn`, how many refunds and chargebacks take back: round(earn × taken back ÷ captured). */
  readonly reversal: number;
}

export const NO_EARNING: EarningTargets = { pending: 0, earn: 0, reversal: 0 };

export function earningTargets(
  payment: PaymentFigures,
  channel: string | null,
  rules: ProgrammeRules,
  /** The tier multiplier pinned on the payment's lot (1: none). */
  tierMultiplier = 1,
): EarningTargets {
  const currency = payment.currency;
  if (currency === null) return NO_EARNING;
  const autoCapture = channel !== null && rules.autoCaptureChannels.includes(channel);
  switch (payment.state) {
    case 'awaiting_authorisation':
    case 'authorisation_failed':
    case 'cancelled':
      return NO_EARNING;
    case 'authorised': {
      const points = pointsFor(payment.authorisedAmount, currency, channel, rules, tierMultiplier);
      return autoCapture ? { pending: 0, earn: points, reversal: 0 } : { pending: points, earn: 0, reversal: 0 };
    }
    case 'captured':
    case 'partially_refunded':
    case 'refunded':
    case 'charged_back': {
      const earn = pointsFor(payment.capturedAmount, currency, channel, rules, tierMultiplier);
      const takenBack = payment.refundedAmount + payment.chargedBackAmount;
      return { pending: 0, earn, reversal: proportion(earn, takenBack, payment.capturedAmount) };
    }
  }
}

/**
 * What a campaign's bonus (decided at authorisation, on the authorised amount) earns in this state:
 * pending or earned in full while authorised, then scaled to what was captured and taken back exactly
 * as the base points' reversal is (`proportion`), so a full capture earns it all and a full refund
 * takes it all back.
 */
export function bonusTargets(payment: PaymentFigures, autoCapture: boolean, bonus: number): EarningTargets {
  if (bonus <= 0) return NO_EARNING;
  switch (payment.state) {
    case 'awaiting_authorisation':
    case 'authorisation_failed':
    case 'cancelled':
      return NO_EARNING;
    case 'authorised':
      return autoCapture ? { pending: 0, earn: bonus, reversal: 0 } : { pending: bonus, earn: 0, reversal: 0 };
    case 'captured':
    case 'partially_refunded':
    case 'refunded':
    case 'charged_back': {
      const earn = proportion(bonus, payment.capturedAmount, payment.authorisedAmount);
      const takenBack = payment.refundedAmount + payment.chargedBackAmount;
      return { pending: 0, earn, reversal: proportion(earn, takenBack, payment.capturedAmount) };
    }
  }
}

/**
 * round(points × part ÷ whole), half up, exact for any sizes (BigInt: points × part can pass 2^53).
 * Cumulative by construction: the caller books the difference to what was reversed before, so a
 * full refund reverses exactly every point and partial refunds never sum to more than the earn.
 */
export function proportion(points: number, part: number, whole: number): number {
  if (whole <= 0 || part <= 0 || points <= 0) return 0;
  if (part >= whole) return points;
  const p = BigInt(points);
  return Number((2n * p * BigInt(part) + BigInt(whole)) / (2n * BigInt(whole)));
}
