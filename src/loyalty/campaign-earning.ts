/**
 * What each campaign pinned on a payment's lot earns in the payment's present state: judged once, on
 * the facts at authorisation ({@link evaluateCampaigns}) and what the shopper and the campaign had
 * been granted before, when the lot is created; then that grant is scaled like the base points
 * ({@link bonusTargets}) by every later effect. Pure: the same judgement and figures give the same
 * bookings, whatever the arrival order of the events that produced them.
 */
import type { PaymentFigures } from '../payments/payment-state.js';
import {
  evaluateCampaigns,
  NO_LEDGER_STATE,
  type CampaignLedgerState,
  type CampaignOutcome,
  type CampaignVersion,
} from './campaign-rules.js';
import { bonusTargets, NO_EARNING, type EarningTargets } from './earning.js';
import { pointsFor, type ProgrammeRules } from './programme.js';

/** A campaign's judgement on one payment and the targets its bonus is booked to (stored on the lot). */
export type CampaignBooking = CampaignOutcome & EarningTargets;

/** The payment facts a campaign is judged on besides the figures (unknown ones: absent or null). */
export interface PaymentPlace {
  readonly channel: string | null;
  readonly storeId: string | null;
  readonly merchantAccount?: string | null;
  readonly merchantCategoryCode?: string | null;
  readonly cardBrand?: string | null;
  /** The shopper's tier pinned at authorisation (tiers.ts; absent or null: none). */
  readonly shopperTier?: string | null;
}

/** Judges the campaigns on a payment (once: when its lot is created) and books their grants. */
export function campaignBookings(
  versions: readonly CampaignVersion[],
  payment: PaymentFigures,
  place: PaymentPlace,
  rules: ProgrammeRules,
  state: CampaignLedgerState = NO_LEDGER_STATE,
): CampaignBooking[] {
  const { currency, authorisedAt } = payment;
  if (versions.length === 0 || currency === null || authorisedAt === null) return [];
  const outcomes = evaluateCampaigns(
    versions,
    {
      authorisedAt,
      authorisedAmount: payment.authorisedAmount,
      currency,
      channel: place.channel,
      storeId: place.storeId,
      merchantAccount: place.merchantAccount ?? null,
      merchantCategoryCode: place.merchantCategoryCode ?? null,
      cardBrand: place.cardBrand ?? null,
      shopperTier: place.shopperTier ?? null,
      basePoints: pointsFor(payment.authorisedAmount, currency, place.channel, rules),
    },
    state,
  );
  return rebook(outcomes, payment, place.channel, rules);
}

/**
 * The bookings of judgements made before (the lot's), in the payment's present state: never judged
 * again, so a budget spent or a purchase counted since cannot change what this payment was granted.
 */
export function rebook(
  outcomes: readonly CampaignOutcome[],
  payment: PaymentFigures,
  channel: string | null,
  rules: ProgrammeRules,
): CampaignBooking[] {
  const autoCapture = channel !== null && rules.autoCaptureChannels.includes(channel);
  // The targets replace the ones stored with the judgement (every booking has all three).
  return outcomes.map((o) => ({ ...o, ...(o.bonus > 0 ? bonusTargets(payment, autoCapture, o.bonus) : NO_EARNING) }));
}

/** The sum of the bookings' targets. */
export function bookedTotal(bookings: readonly EarningTargets[]): EarningTargets {
  return bookings.reduce(
    (sum, b) => ({ pending: sum.pending + b.pending, earn: sum.earn + b.earn, reversal: sum.reversal + b.reversal }),
    NO_EARNING,
  );
}
