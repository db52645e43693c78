/**
 * SQL of returns made at a till against a payment (issue 22): the purchases a presented card's
 * shopper may return, the payment locked for a return, and the `refunded` fact a return adds. The
 * fact is keyed like a gateway's (payment, kind, key), so the gateway's refund webhook for the same
 * refund id is the same fact whichever arrives first.
 */
import type { Knex } from 'knex';
import type { PaymentFact, PaymentFigures } from './payment-state.js';
import type { PaymentRow } from './payment-types.js';

/** States a purchase can be returned from (something was captured and may be left to return). */
const RETURNABLE_STATES = ['captured', 'partially_refunded', 'refunded', 'charged_back'];

/** The shoppers' purchases authorised since `since`, newest first, at most `limit`. */
export async function purchasesSince(
  db: Knex,
  shopperRefs: readonly string[],
  since: Date,
  limit: number,
): Promise<PaymentRow[]> {
  if (shopperRefs.length === 0) return [];
  return (await db('payments')
    .whereIn('shopper_ref', shopperRefs)
    .whereIn('state', RETURNABLE_STATES)
    .where('authorised_at', '>=', since)
    .orderBy([
      { column: 'authorised_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])
    .limit(limit)) as PaymentRow[];
}

/** The payment, locked (payments are the first lock every writer takes), or undefined. */
export async function lockPaymentById(trx: Knex.Transaction, id: string): Promise<PaymentRow | undefined> {
  return (await trx('payments').where({ id }).forUpdate().first()) as PaymentRow | undefined;
}

/** One stored fact of a payment by kind and key. */
export async function factOf(
  trx: Knex.Transaction,
  paymentId: string,
  kind: string,
  key: string,
): Promise<PaymentFact | undefined> {
  return (await trx('payment_facts')
    .where({ payment_id: paymentId, kind, fact_key: key })
    .first('kind', 'fact_key as key', 'amount', 'currency', 'occurred_at as occurredAt')) as PaymentFact | undefined;
}

/** Adds a return's fact and writes the payment's derived figures. */
export async function storeReturnFact(
  trx: Knex.Transaction,
  paymentId: string,
  fact: PaymentFact,
  returnId: string,
  figures: PaymentFigures,
  now: Date,
): Promise<void> {
  await trx('payment_facts').insert({
    payment_id: paymentId,
    kind: fact.kind,
    fact_key: fact.key,
    amount: fact.amount,
    currency: fact.currency,
    occurred_at: fact.occurredAt,
    return_id: returnId,
  });
  await trx('payments').where({ id: paymentId }).update({
    state: figures.state,
    refunded_amount: figures.refundedAmount,
    charged_back_amount: figures.chargedBackAmount,
    updated_at: now,
  });
}
