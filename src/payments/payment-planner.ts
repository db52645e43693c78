/**
 * Decides what each event of a batch does to its (locked) payment, before anything is written. Pure:
 * no database, no clock, no id generation (the inbox id and the time are given), so every rule here
 * is unit-tested on its own (test/payments/payment-planner.test.ts).
 */
import type { PaymentEventInput, Provider } from './payment-event.js';
import { derivePayment, diffPayments, type PaymentFact, type PaymentFigures } from './payment-state.js';
import type { IngestWork, LockedPayment, PaymentRow, Plan } from './payment-types.js';

export interface PlanContext {
  readonly now: Date;
  /** The id the event's inbox row gets if it is new (a replay keeps its own). */
  readonly newInboxId: string;
  readonly autoCaptureChannels: readonly string[];
}

/**
 * What one event does. A domain refusal (another currency) is decided here, before anything is
 * written: the event is stored as `failed` with nothing applied.
 */
export function planEvent(
  work: IngestWork,
  payment: LockedPayment | undefined,
  stored: readonly PaymentFact[],
  context: PlanContext,
): Plan {
  const inboxId = work.replayOf ?? context.newInboxId;
  const { effect } = work.event;
  if (work.event.rejection !== undefined) {
    return { work, inboxId, state: 'rejected', errorCode: work.event.rejection, payment: undefined };
  }
  if (effect === undefined || payment === undefined) {
    return { work, inboxId, state: 'ignored', errorCode: null, payment };
  }
  if (effect.facts.some((f) => payment.currency !== null && f.currency !== null && f.currency !== payment.currency)) {
    return { work, inboxId, state: 'failed', errorCode: 'PAYMENT_CURRENCY_MISMATCH', payment };
  }
  const isAuthorisation = effect.facts.some((f) => f.kind === 'authorised');
  // The authorisation describes the payment; other events only fill what is still unknown.
  const pick = <V>(current: V | null, incoming: V | undefined): V | null =>
    isAuthorisation ? (incoming ?? current) : (current ?? incoming ?? null);
  const channel =
    effect.details.channelIsHint === true
      ? (payment.channel ?? effect.details.channel ?? null)
      : pick(payment.channel, effect.details.channel);
  const before = figuresOf(payment);
  const after = derivePayment(mergeFacts(stored, effect.facts), {
    autoCapture: channel !== null && context.autoCaptureChannels.includes(channel),
  });
  const cardToken = payment.card_token ?? work.card?.token ?? null;
  const shopperRef = payment.shopper_ref ?? work.card?.shopperReference ?? null;
  const transition = diffPayments(before, after);
  const parked = after.state === 'awaiting_authorisation';
  return {
    work,
    inboxId,
    state: parked ? 'parked' : 'applied',
    errorCode: null,
    payment,
    apply: {
      update: {
        id: payment.id,
        state: after.state,
        currency: after.currency ?? payment.currency ?? effect.facts.find((f) => f.currency !== null)?.currency ?? null,
        authorised_amount: after.authorisedAmount,
        captured_amount: after.capturedAmount,
        refunded_amount: after.refundedAmount,
        charged_back_amount: after.chargedBackAmount,
        authorised_at: after.authorisedAt,
        card_token: cardToken,
        shopper_ref: shopperRef,
        card_last4: payment.card_last4 ?? effect.last4 ?? work.card?.last4 ?? null,
        channel,
        store_id: pick(payment.store_id, effect.details.storeId),
        terminal_id: pick(payment.terminal_id, effect.details.terminalId),
        merchant_reference: pick(payment.merchant_reference, effect.details.merchantReference),
        updated_at: context.now,
      },
      transition:
        transition === undefined
          ? undefined
          : {
              ...transition,
              paymentId: payment.id,
              shopperRef,
              cardToken,
              channel,
              inboxId,
              paymentCreated: payment.inserted,
            },
      // A payment created by this batch has no event parked behind it (its events never share a batch).
      releasesParked: before.state === 'awaiting_authorisation' && !parked && !payment.inserted,
    },
  };
}

/** The stored facts plus the event's, each (kind, key) once: the stored one wins, as in the table. */
export function mergeFacts(stored: readonly PaymentFact[], incoming: readonly PaymentFact[]): PaymentFact[] {
  const seen = new Set(stored.map((f) => `${f.kind} ${f.key}`));
  return [...stored, ...incoming.filter((f) => !seen.has(`${f.kind} ${f.key}`))];
}

/** The derived figures a payment row holds (what a transition is measured against). */
export function figuresOf(row: PaymentRow): PaymentFigures {
  return {
    state: row.state,
    currency: row.currency,
    authorisedAmount: row.authorised_amount,
    capturedAmount: row.captured_amount,
    refundedAmount: row.refunded_amount,
    chargedBackAmount: row.charged_back_amount,
    authorisedAt: row.authorised_at,
  };
}

/** The key a payment is locked and looked up by within a batch. */
export function paymentKey(event: PaymentEventInput): string {
  return `${event.provider} ${event.effect?.paymentExternalId ?? ''}`;
}

/** The batch's payments, each once, in lock order (key order: no deadlocks between batches). */
export function paymentsToLock(works: readonly IngestWork[]): [string, [Provider, string]][] {
  return [
    ...new Map(
      works.flatMap(({ event }): [string, [Provider, string]][] =>
        event.effect === undefined ? [] : [[paymentKey(event), [event.provider, event.effect.paymentExternalId]]],
      ),
    ),
  ].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
