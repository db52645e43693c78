/**
 * What each campaign pinned on a payment's lot earns in the payment's present state: judged on the
 * facts at authorisation ({@link evaluateCampaigns}), then scaled like the base points
 * ({@link bonusTargets}). Pure: the same facts and versions give the same bookings, whatever the
 * arrival order of the events that produced them.
 */
import type { PaymentFigures } from '../payments/payment-state.js';
import { evaluateCampaigns, type CampaignOutcome, type CampaignVersion } from './campaign-rules.js';
import { bonusTargets, NO_EARNING, type EarningTargets } from './earning.js';
import { pointsFor, type ProgrammeRules } from './programme.js';

/** A campaign's judgement on one payment and the targets its bonus is booked to (stored on the lot). */
export type CampaignBooking = CampaignOutcome & EarningTargets;

/** The payment facts a campaign is judged on besides the figures. */
export interface PaymentPlace {
  readonly channel: string | null;
  readonly storeId: string | null;
  /** The shopper's tier pinned at authorisation (tiers.ts; absent or null: none). */
  readonly shopperTier?: string | null;
}

export function campaignBookings(
  versions: readonly CampaignVersion[],
  payment: PaymentFigures,
  place: PaymentPlace,
  rules: ProgrammeRules,
): CampaignBooking[] {
  const { currency, authorisedAt } = payment;
  if (versions.length === 0 || currency === null || authorisedAt === null) return [];
  const outcomes = evaluateCampaigns(versions, {
    authorisedAt,
    authorisedAmount: payment.authorisedAmount,
    currency,
    channel: place.channel,
    storeId: place.storeId,
    basePoints: pointsFor(payment.authorisedAmount, currency, place.channel, rules),
    shopperTier: place.shopperTier ?? null,
  });
  const autoCapture = place.channel !== null && rules.autoCaptureChannels.includes(place.channel);
  return outcomes.map((o) => ({ ...o, ...(o.bonus > 0 ? bonusTargets(payment, autoCapture, o.bonus) : NO_EARNING) }));
}

/** The sum of the bookings' targets. */
export function bookedTotal(bookings: readonly EarningTargets[]): EarningTargets {
  return bookings.reduce(
    (sum, b) => ({ pending: sum.pending + b.pending, earn: sum.earn + b.earn, reversal: sum.reversal + b.reversal }),
    NO_EARNING,
  );
}
