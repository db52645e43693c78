/**
 * A payment's state is derived, never stored as the result of applying events in arrival order.
 *
 * Gateways deliver at least once and in any order. Each delivery becomes a *fact* keyed by its
 * business identity (payment, kind, modification id), stored once; the payment's state is a pure
 * function of the set of its facts. So:
 * - a duplicate is the same fact and changes nothing;
 * - every arrival order of the same facts ends in the same state (the function sees a set);
 * - a capture, refund or chargeback that arrives before its authorisation is simply a fact with no
 *   authorisation yet: the payment is `awaiting_authorisation` (parked) until the parent arrives;
 * - a failed authorisation never downgrades a successful one (success wins when both exist);
 * - refunds accumulate and are capped at the captured amount; chargebacks at what is left.
 *
 * {@link diffPayments} is the one place that decides "payment X moved from A to B by N": the
 * loyalty ledger hangs its effects on those transitions.
 */

export const PAYMENT_CHANNELS = ['online', 'in_store', 'mobile', 'call_centre'] as const;
export type PaymentChannel = (typeof PAYMENT_CHANNELS)[number];

export const FACT_KINDS = [
  'authorised',
  'authorisation_failed',
  'captured',
  'capture_failed',
  'cancelled',
  /** Adyen CANCEL_OR_REFUND: a cancel when nothing was captured, otherwise a refund of its amount. */
  'cancel_or_refund',
  'refunded',
  'refund_failed',
  /** A cumulative "at least this much is refunded" (Stripe `charge.refunded` without refund objects). */
  'refund_total',
  'chargeback',
  'chargeback_reversed',
] as const;
export type FactKind = (typeof FACT_KINDS)[number];

export interface PaymentFact {
  readonly kind: FactKind;
  /** Business key within the payment: the modification's id (refund id, capture reference, …). */
  readonly key: string;
  /** Minor units; null for facts without an amount (a failed authorisation, a cancel). */
  readonly amount: number | null;
  readonly currency: string | null;
  readonly occurredAt: Date;
}

export type PaymentState =
  | 'awaiting_authorisation'
  | 'authorisation_failed'
  | 'authorised'
  | 'cancelled'
  | 'captured'
  | 'partially_refunded'
  | 'refunded'
  | 'charged_back';

export interface PaymentFigures {
  readonly state: PaymentState;
  readonly currency: string | null;
  readonly authorisedAmount: number;
  readonly capturedAmount: number;
  readonly refundedAmount: number;
  readonly chargedBackAmount: number;
  readonly authorisedAt: Date | null;
}

export const EMPTY_FIGURES: PaymentFigures = {
  state: 'awaiting_authorisation',
  currency: null,
  authorisedAmount: 0,
  capturedAmount: 0,
  refundedAmount: 0,
  chargedBackAmount: 0,
  authorisedAt: null,
};

export interface DeriveOptions {
  /** An authorisation on an auto-capture channel (POS) is also its capture. */
  readonly autoCapture: boolean;
}

/** The state of a payment with exactly these facts. Pure; independent of the facts' order. */
export function derivePayment(facts: readonly PaymentFact[], options: DeriveOptions): PaymentFigures {
  const authorisation = earliest(facts.filter((f) => f.kind === 'authorised'));
  if (authorisation === undefined) {
    const failed = facts.some((f) => f.kind === 'authorisation_failed');
    return { ...EMPTY_FIGURES, state: failed ? 'authorisation_failed' : 'awaiting_authorisation' };
  }
  const currency = authorisation.currency;
  // Facts in another currency cannot be netted against this payment; the inbox marks them failed.
  const same = facts.filter((f) => f.amount === null || f.currency === currency);
  const sum = (kind: FactKind, except: ReadonlySet<string> = new Set()): number =>
    same.filter((f) => f.kind === kind && !except.has(f.key)).reduce((total, f) => total + (f.amount ?? 0), 0);
  const keysOf = (kind: FactKind): Set<string> => new Set(same.filter((f) => f.kind === kind).map((f) => f.key));

  const authorised = authorisation.amount ?? 0;
  const captureSum = options.autoCapture ? authorised : sum('captured', keysOf('capture_failed'));
  const captured = Math.min(authorised, captureSum);
  const cancelRequested = same.some((f) => f.kind === 'cancelled' || f.kind === 'cancel_or_refund');
  if (captured === 0 && cancelRequested) {
    return {
      ...EMPTY_FIGURES,
      state: 'cancelled',
      currency,
      authorisedAmount: authorised,
      authorisedAt: authorisation.occurredAt,
    };
  }

  const refundFailed = keysOf('refund_failed');
  const individual = sum('refunded', refundFailed) + sum('cancel_or_refund', refundFailed);
  const cumulative = Math.max(0, ...same.filter((f) => f.kind === 'refund_total').map((f) => f.amount ?? 0));
  const refunded = Math.min(captured, Math.max(individual, cumulative));
  const netChargeback = sum('chargeback') - sum('chargeback_reversed');
  const chargedBack = Math.max(0, Math.min(captured - refunded, netChargeback));

  let state: PaymentState = 'authorised';
  if (chargedBack > 0) state = 'charged_back';
  else if (captured > 0 && refunded === captured) state = 'refunded';
  else if (refunded > 0) state = 'partially_refunded';
  else if (captured > 0) state = 'captured';
  return {
    state,
    currency,
    authorisedAmount: authorised,
    capturedAmount: captured,
    refundedAmount: refunded,
    chargedBackAmount: chargedBack,
    authorisedAt: authorisation.occurredAt,
  };
}

/** What changed between two derivations of one payment; undefined when nothing did. */
export interface PaymentTransition {
  readonly from: PaymentState;
  readonly to: PaymentState;
  /** Signed changes, in minor units of the payment's currency. */
  readonly delta: {
    readonly authorised: number;
    readonly captured: number;
    readonly refunded: number;
    readonly chargedBack: number;
  };
  readonly before: PaymentFigures;
  readonly after: PaymentFigures;
}

export function diffPayments(before: PaymentFigures, after: PaymentFigures): PaymentTransition | undefined {
  const delta = {
    authorised: after.authorisedAmount - before.authorisedAmount,
    captured: after.capturedAmount - before.capturedAmount,
    refunded: after.refundedAmount - before.refundedAmount,
    chargedBack: after.chargedBackAmount - before.chargedBackAmount,
  };
  const moved = Object.values(delta).some((d) => d !== 0);
  if (!moved && before.state === after.state) return undefined;
  return { from: before.state, to: after.state, delta, before, after };
}

function earliest(facts: readonly PaymentFact[]): PaymentFact | undefined {
  // Deterministic whatever the order: earliest occurrence, then key.
  return [...facts].sort((a, b) => a.occurredAt.getTime() - b.occurredAt.getTime() || a.key.localeCompare(b.key))[0];
}
