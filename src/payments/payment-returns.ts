/**
 * A return recorded at a till against the original payment (issue 22): a `refunded` fact added to
 * the payment under its row lock, the payment's state derived again from its facts, and the
 * transition handed to the listeners (the loyalty ledger reverses the points proportionally, as for
 * a gateway's refund) in the caller's transaction.
 *
 * Matching the gateway: a refund at the till names the gateway's refund id (Adyen's refund
 * pspReference, Stripe's `re_…`, the platform's `refund.id`), and that id is the fact's key, which is
 * exactly the key the gateway's refund webhook stores its fact under. Facts are unique per (payment,
 * kind, key), so whichever arrives second is the same fact: counted once, in either order, however
 * many times the webhook is delivered. A store-credit return's key is `store-credit:<return id>`.
 */
import type { Knex } from 'knex';
import { AppError } from '../errors/app-error.js';
import { figuresOf, mergeFacts } from './payment-planner.js';
import { factOf, lockPaymentById, storeReturnFact } from './payment-return-store.js';
import { derivePayment, diffPayments, type PaymentFact } from './payment-state.js';
import { storedFacts } from './payment-store.js';
import type { PaymentRow, PaymentTransitionListener } from './payment-types.js';

export interface ReturnFactInput {
  readonly paymentId: string;
  readonly returnId: string;
  /** The gateway's refund id, or `store-credit:<return id>`. */
  readonly key: string;
  readonly amount: number;
  readonly currency: string;
}

/** What the payment says about a return: the refund it already holds under that key, if any. */
export type ReturnFactOutcome = { readonly matched: false } | { readonly matched: true; readonly amount: number };

/** What may still be returned: captured, less refunded and charged back. */
export function refundableOf(row: PaymentRow): number {
  return Math.max(0, row.captured_amount - row.refunded_amount - row.charged_back_amount);
}

/**
 * Whether the payment already holds a refund fact under `key` (the gateway's webhook came first).
 * The caller holds the payment's lock ({@link lockPaymentById}).
 */
export async function existingRefund(
  trx: Knex.Transaction,
  paymentId: string,
  key: string,
): Promise<ReturnFactOutcome> {
  for (const kind of ['refunded', 'cancel_or_refund'] as const) {
    const fact = await factOf(trx, paymentId, kind, key);
    if (fact !== undefined) return { matched: true, amount: Number(fact.amount ?? 0) };
  }
  return { matched: false };
}

export { lockPaymentById };

/**
 * Adds the return's `refunded` fact to the locked payment and tells the listeners. The caller has
 * checked the amount against {@link refundableOf} under the same lock.
 */
export async function addReturnFact(
  trx: Knex.Transaction,
  payment: PaymentRow,
  input: ReturnFactInput,
  context: {
    readonly now: Date;
    readonly autoCaptureChannels: readonly string[];
    readonly listeners: readonly PaymentTransitionListener[];
  },
): Promise<void> {
  if (payment.currency !== input.currency) throw new AppError('PAYMENT_CURRENCY_MISMATCH');
  const fact: PaymentFact = {
    kind: 'refunded',
    key: input.key,
    amount: input.amount,
    currency: input.currency,
    occurredAt: context.now,
  };
  const stored = (await storedFacts(trx, [payment.id])).get(payment.id) ?? [];
  const before = figuresOf(payment);
  const after = derivePayment(mergeFacts(stored, [fact]), {
    autoCapture: payment.channel !== null && context.autoCaptureChannels.includes(payment.channel),
  });
  await storeReturnFact(trx, payment.id, fact, input.returnId, after, context.now);
  const transition = diffPayments(before, after);
  if (transition === undefined) return;
  const event = {
    ...transition,
    paymentId: payment.id,
    provider: payment.provider,
    externalId: payment.external_id,
    shopperRef: payment.shopper_ref,
    cardToken: payment.card_token,
    channel: payment.channel,
    storeId: payment.store_id,
    inboxId: input.returnId,
    paymentCreated: false,
  };
  for (const listener of context.listeners) await listener(trx, [event]);
}
