/**
 * Decides what each event of a batch does to its (locked) payment, before anything is written. Pure:
 * no database, no clock, no id generation (the inbox id and the time are given), so every rule here
 * is unit-tested on its own (test/payments/payment-planner.test.ts).
 */
import type { PaymentEffect, PaymentEventInput, Provider } from './payment-event.js';
import { derivePayment, diffPayments, type PaymentFact, type PaymentFigures } from './payment-state.js';
import type { IngestWork, LockedPayment, PaymentRow, PaymentUpdate, Plan } from './payment-types.js';

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
  if (work.cardUpdate !== undefined && effect === undefined) {
    return { work, inboxId, state: work.cardUpdate.state, errorCode: work.cardUpdate.errorCode, payment: undefined };
  }
  if (effect === undefined || payment === undefined) {
    return { work, inboxId, state: 'ignored', errorCode: null, payment };
  }
  if (effect.facts.some((f) => payment.currency !== null && f.currency !== null && f.currency !== payment.currency)) {
    return { work, inboxId, state: 'failed', errorCode: 'PAYMENT_CURRENCY_MISMATCH', payment };
  }
  const before = figuresOf(payment);
  const channel = channelOf(payment, effect, isAuthorisationOf(effect));
  const after = derivePayment(mergeFacts(stored, effect.facts), {
    autoCapture: channel !== null && context.autoCaptureChannels.includes(channel),
  });
  const parked = after.state === 'awaiting_authorisation';
  const update = updateOf(work, payment, after, channel, context.now);
  const transition = diffPayments(before, after);
  return {
    work,
    inboxId,
    state: parked ? 'parked' : 'applied',
    errorCode: null,
    payment,
    apply: {
      update,
      transition:
        transition === undefined
          ? undefined
          : {
              ...transition,
              paymentId: payment.id,
              provider: payment.provider,
              externalId: payment.external_id,
              shopperRef: update.shopper_ref,
              cardToken: update.card_token,
              channel,
              storeId: update.store_id,
              inboxId,
              paymentCreated: payment.inserted,
            },
      // A payment created by this batch has no event parked behind it (its events never share a batch).
      releasesParked: before.state === 'awaiting_authorisation' && !parked && !payment.inserted,
    },
  };
}

function isAuthorisationOf(effect: PaymentEffect): boolean {
  return effect.facts.some((f) => f.kind === 'authorised');
}

/** The authorisation describes the payment; other events only fill what is still unknown. */
function pick<V>(isAuthorisation: boolean, current: V | null, incoming: V | undefined): V | null {
  return isAuthorisation ? (incoming ?? current) : (current ?? incoming ?? null);
}

/** A channel from unsigned data (a hint) may set a missing channel, never change a known one. */
function channelOf(payment: PaymentRow, effect: PaymentEffect, isAuthorisation: boolean): string | null {
  return effect.details.channelIsHint === true
    ? (payment.channel ?? effect.details.channel ?? null)
    : pick(isAuthorisation, payment.channel, effect.details.channel);
}

/** The payment row's new columns: the derived figures, and details filled in from the event and card. */
function updateOf(
  work: IngestWork,
  payment: LockedPayment,
  after: PaymentFigures,
  channel: string | null,
  now: Date,
): PaymentUpdate {
  const effect = work.event.effect as PaymentEffect;
  const isAuthorisation = isAuthorisationOf(effect);
  return {
    id: payment.id,
    state: after.state,
    currency: after.currency ?? payment.currency ?? effect.facts.find((f) => f.currency !== null)?.currency ?? null,
    authorised_amount: after.authorisedAmount,
    captured_amount: after.capturedAmount,
    refunded_amount: after.refundedAmount,
    charged_back_amount: after.chargedBackAmount,
    authorised_at: after.authorisedAt,
    card_token: payment.card_token ?? work.card?.token ?? null,
    shopper_ref: payment.shopper_ref ?? work.card?.shopperReference ?? null,
    // A wallet payment's token last 4 are never the card's: adapters give them as wallet.tokenLast4.
    card_last4: payment.card_last4 ?? effect.last4 ?? work.card?.last4 ?? null,
    wallet_type: payment.wallet_type ?? effect.wallet?.type ?? null,
    token_last4: payment.token_last4 ?? effect.wallet?.tokenLast4 ?? null,
    channel,
    store_id: pick(isAuthorisation, payment.store_id, effect.details.storeId),
    terminal_id: pick(isAuthorisation, payment.terminal_id, effect.details.terminalId),
    merchant_reference: pick(isAuthorisation, payment.merchant_reference, effect.details.merchantReference),
    updated_at: now,
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
