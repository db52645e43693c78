/**
 * Helpers for loyalty tests: a card and its shopper made through the vault API, payment events sent
 * as signed platform webhooks, and the figures a test compares.
 */
import { expect } from 'chai';
import { signToken } from '../support/auth.js';
import type { TestService } from '../support/harness.js';
import { paymentId, platformEvent, postPlatform, type PlatformEventInit } from '../support/webhooks.js';

export interface Shopper {
  readonly shopperRef: string;
  readonly cardToken: string;
  readonly pan: string;
}

export async function newShopper(svc: TestService, pan: string): Promise<Shopper> {
  const res = await svc.request('POST', '/v1/tokens', {
    token: await signToken({ scope: 'tokens:write' }),
    json: { pan },
  });
  expect(res.status, res.text).to.be.oneOf([200, 201]);
  return { shopperRef: res.body.shopperReference, cardToken: res.body.token, pan };
}

export type PaymentStep =
  | { readonly type: 'authorised'; readonly amount?: number }
  | { readonly type: 'captured'; readonly amount?: number }
  | { readonly type: 'cancelled' }
  | { readonly type: 'refunded'; readonly id: string; readonly amount: number }
  | { readonly type: 'refund_failed'; readonly id: string; readonly amount: number }
  | { readonly type: 'chargeback'; readonly id: string; readonly amount: number }
  | { readonly type: 'chargeback_reversed'; readonly id: string; readonly amount: number };

/** One payment of a card: each step becomes a signed platform webhook with a fresh delivery id. */
export function payment(
  card: Shopper,
  options: {
    amount?: number;
    currency?: string;
    channel?: PlatformEventInit['channel'];
    storeId?: string;
    occurredAt?: string;
  } = {},
) {
  const id = paymentId('loy');
  const base = {
    paymentId: id,
    amount: options.amount ?? 10_000,
    currency: options.currency ?? 'GBP',
    channel: options.channel ?? 'online',
    card: { token: card.cardToken },
    ...(options.storeId === undefined ? {} : { storeId: options.storeId }),
    ...(options.occurredAt === undefined ? {} : { occurredAt: options.occurredAt }),
  } as const;
  const event = (step: PaymentStep): Record<string, unknown> => {
    switch (step.type) {
      case 'authorised':
      case 'captured':
        return platformEvent({ ...base, type: `payment.${step.type}`, amount: step.amount ?? base.amount });
      case 'cancelled':
        return platformEvent({ ...base, type: 'payment.cancelled' });
      case 'refunded':
      case 'refund_failed':
        return platformEvent({ ...base, type: `payment.${step.type}`, refund: { id: step.id, amount: step.amount } });
      case 'chargeback':
      case 'chargeback_reversed':
        return platformEvent({
          ...base,
          type: `payment.${step.type}`,
          chargeback: { id: step.id, amount: step.amount },
        });
    }
  };
  return {
    id,
    event,
    async send(svc: TestService, step: PaymentStep, deliveryId?: string): Promise<void> {
      const res = await postPlatform(svc, event(step), deliveryId === undefined ? {} : { id: deliveryId });
      expect(res.status, res.text).to.equal(200);
    },
  };
}

export async function balance(svc: TestService, shopperRef: string) {
  const res = await svc.request('GET', `/v1/shoppers/${shopperRef}/balance`, {
    token: await signToken({ scope: 'loyalty:admin' }),
  });
  expect(res.status, res.text).to.equal(200);
  return res.body as {
    available: number;
    pending: number;
    lifetimeEarned: number;
    expiringSoon: { points: number; expiresAt: string }[];
  };
}

export async function redeem(svc: TestService, shopperRef: string, points: number, key: string, token?: string) {
  return svc.request('POST', `/v1/shoppers/${shopperRef}/redemptions`, {
    token: token ?? (await signToken({ scope: 'loyalty:redeem', shopperRef })),
    headers: { 'idempotency-key': key },
    json: { points, reference: `order-${key}` },
  });
}

/** A payment's lot, as the figures a test compares (bigint columns read as numbers). */
export interface LotFigures {
  readonly pending: number;
  readonly earnTarget: number;
  readonly reversalTarget: number;
  readonly credited: number;
  readonly recovered: number;
  readonly writtenOff: number;
  readonly remaining: number;
}

/**
 * What the ledger holds for one payment (by its gateway id): its lot, or undefined when it never had
 * one, and the net points of every entry that names the payment.
 */
export async function paymentLedger(
  svc: TestService,
  externalId: string,
): Promise<{ lot: LotFigures | undefined; netPoints: number; entries: number }> {
  const knex = svc.db.knex;
  const row = (await knex('payments').where({ external_id: externalId }).first('id')) as { id: string } | undefined;
  expect(row, `payment ${externalId}`).to.not.equal(undefined);
  const paymentRow = (row as { id: string }).id;
  const lot = (await knex('loyalty_lots').where({ payment_id: paymentRow }).first()) as
    Record<string, number | string> | undefined;
  const sums = (await knex('loyalty_entries')
    .where({ payment_id: paymentRow })
    .first(knex.raw('coalesce(sum(points), 0) as net'), knex.raw('count(*) as n'))) as {
    net: number | string;
    n: number | string;
  };
  return {
    lot:
      lot === undefined
        ? undefined
        : {
            pending: Number(lot['pending']),
            earnTarget: Number(lot['earn_target']),
            reversalTarget: Number(lot['reversal_target']),
            credited: Number(lot['credited']),
            recovered: Number(lot['recovered']),
            writtenOff: Number(lot['written_off']),
            remaining: Number(lot['remaining']),
          },
    netPoints: Number(sums.net),
    entries: Number(sums.n),
  };
}
