/**
 * Realistic deliveries per provider and scenario, in the formats the service's adapters accept
 * (src/webhooks/*-events.ts): the platform's canonical payment events, Adyen standard notification
 * items (alias, cardSummary, shopperInteraction; modifications name the authorisation's pspReference
 * as `originalReference`), Stripe events (`charge.succeeded` uncaptured, `charge.captured`,
 * `refund.created`; the card's `fingerprint`, `card_present` in store).
 *
 * No PAN appears here except in the platform's `card` (its scheme sends one; the service tokenises
 * it on arrival). Ids are letters only: a run of digits that passes Luhn is refused by the service as
 * possible card data, whatever field it is in.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Money } from './amounts.js';

export const SCENARIOS = ['authorise', 'capture', 'refund', 'in-store'] as const;
export type Scenario = (typeof SCENARIOS)[number];

/** The card as a gateway names it, after the simulator resolved it through the API. */
export interface GatewayCard {
  /** The platform's `card` field: `{pan, expiryMonth, expiryYear}`, `{token}` or `{par}`. */
  readonly platform: Readonly<Record<string, unknown>>;
  /** The card token the service gave it: Adyen's alias and Stripe's fingerprint are derived from it. */
  readonly token: string;
  readonly brand: string | undefined;
  readonly last4: string | undefined;
  readonly par: string | undefined;
}

export interface DeliveryInit {
  readonly scenario: Scenario;
  /** The provider's id of the payment: platform payment id, Adyen pspReference of the authorisation, Stripe charge id. */
  readonly payment: string;
  readonly amount: Money;
  readonly card: GatewayCard;
  readonly now: Date;
}

/** Random letters: ids that no card-number check can mistake for a PAN. */
export function letters(count: number, alphabet = 'abcdefghijklmnopqrstuvwxyz'): string {
  return [...randomBytes(count)].map((b) => alphabet.charAt(b % alphabet.length)).join('');
}

const UPPER = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
const MIXED = `${UPPER}abcdefghijklmnopqrstuvwxyz`;

/** A new payment id in the provider's own shape. */
export function newPaymentId(provider: 'platform' | 'adyen' | 'stripe'): string {
  switch (provider) {
    case 'platform':
      return `pay-sim-${letters(12)}`;
    case 'adyen':
      return letters(16, UPPER); // a pspReference: 16 alphanumerics
    case 'stripe':
      return `ch_${letters(24, MIXED)}`;
  }
}

/** The gateway's stable name for a card (one per card token, as Adyen's alias and Stripe's fingerprint are). */
export function derivedAlias(provider: 'adyen' | 'stripe', token: string): string {
  const digest = [...createHash('sha256').update(`simulate:${provider}:${token}`).digest()];
  const pick = (alphabet: string, n: number) => digest.slice(0, n).map((b) => alphabet.charAt(b % alphabet.length));
  return provider === 'adyen' ? `A${pick(UPPER, 15).join('')}` : pick(MIXED, 16).join('');
}

const PLATFORM_TYPES: Readonly<Record<Scenario, string>> = {
  authorise: 'payment.authorised',
  'in-store': 'payment.authorised',
  capture: 'payment.captured',
  refund: 'payment.refunded',
};

export function platformEvent(init: DeliveryInit): Record<string, unknown> {
  const inStore = init.scenario === 'in-store';
  const opens = init.scenario === 'authorise' || inStore;
  return {
    type: PLATFORM_TYPES[init.scenario],
    occurredAt: init.now.toISOString(),
    payment: {
      id: init.payment,
      merchantReference: `order-${init.payment}`,
      amount: init.amount,
      channel: inStore ? 'in_store' : 'online',
      ...(inStore ? { storeId: 'store-amsterdam-central', terminalId: 'till-a' } : {}),
    },
    ...(opens ? { card: init.card.platform } : {}),
    ...(init.scenario === 'refund' ? { refund: { id: `rf-sim-${letters(12)}`, amount: init.amount.value } } : {}),
  };
}

const ADYEN_CODES: Readonly<Record<Scenario, string>> = {
  authorise: 'AUTHORISATION',
  'in-store': 'AUTHORISATION',
  capture: 'CAPTURE',
  refund: 'REFUND',
};

const ADYEN_METHODS: Readonly<Record<string, string>> = {
  visa: 'visa',
  mastercard: 'mc',
  amex: 'amex',
  discover: 'discover',
  jcb: 'jcb',
};

/** One notification item, unsigned (deliveries.ts adds `additionalData.hmacSignature`). */
export function adyenItem(init: DeliveryInit): Record<string, unknown> & { additionalData: Record<string, string> } {
  const opens = init.scenario === 'authorise' || init.scenario === 'in-store';
  const card = init.card;
  const additionalData: Record<string, string> = opens
    ? {
        alias: derivedAlias('adyen', card.token),
        aliasType: 'Default',
        ...(card.last4 === undefined ? {} : { cardSummary: card.last4 }),
        ...(card.par === undefined ? {} : { PaymentAccountReference: card.par }),
        shopperInteraction: init.scenario === 'in-store' ? 'POS' : 'Ecommerce',
        ...(init.scenario === 'in-store' ? { store: 'store-amsterdam-central', terminalId: 'V400m-sim' } : {}),
      }
    : {};
  return {
    eventCode: ADYEN_CODES[init.scenario],
    success: 'true',
    pspReference: opens ? init.payment : letters(16, UPPER),
    ...(opens ? {} : { originalReference: init.payment }),
    merchantAccountCode: 'SimulatorMerchantECOM',
    merchantReference: `order-${init.payment.toLowerCase()}`,
    eventDate: init.now.toISOString(),
    amount: init.amount,
    paymentMethod: ADYEN_METHODS[card.brand ?? ''] ?? 'scheme',
    ...(opens ? { operations: ['CANCEL', 'CAPTURE', 'REFUND'] } : {}),
    additionalData,
  };
}

export function adyenNotification(item: Record<string, unknown>, live: boolean): Record<string, unknown> {
  return { live: String(live), notificationItems: [{ NotificationRequestItem: item }] };
}

const STRIPE_TYPES: Readonly<Record<Scenario, string>> = {
  authorise: 'charge.succeeded',
  'in-store': 'charge.succeeded',
  capture: 'charge.captured',
  refund: 'refund.created',
};

export function stripeEvent(init: DeliveryInit): Record<string, unknown> {
  const created = Math.floor(init.now.getTime() / 1000);
  return {
    id: `evt_${letters(24, MIXED)}`,
    object: 'event',
    api_version: '2024-06-20',
    created,
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type: STRIPE_TYPES[init.scenario],
    data: { object: init.scenario === 'refund' ? stripeRefund(init, created) : stripeCharge(init, created) },
  };
}

function stripeCharge(init: DeliveryInit, created: number): Record<string, unknown> {
  const captured = init.scenario !== 'authorise';
  const card = {
    brand: init.card.brand ?? 'unknown',
    ...(init.card.last4 === undefined ? {} : { last4: init.card.last4 }),
    fingerprint: derivedAlias('stripe', init.card.token),
    exp_month: 12,
    exp_year: init.now.getUTCFullYear() + 3,
    funding: 'credit',
  };
  const inStore = init.scenario === 'in-store';
  return {
    id: init.payment,
    object: 'charge',
    amount: init.amount.value,
    amount_captured: captured ? init.amount.value : 0,
    amount_refunded: 0,
    captured,
    currency: init.amount.currency.toLowerCase(),
    created,
    description: `order-${init.payment}`,
    livemode: false,
    paid: true,
    status: 'succeeded',
    metadata: { order_id: `order-${init.payment}`, ...(inStore ? { store_id: 'store-amsterdam-central' } : {}) },
    payment_method_details: inStore
      ? { type: 'card_present', card_present: { ...card, terminal_id: 'tmr_simulator' } }
      : { type: 'card', card },
  };
}

function stripeRefund(init: DeliveryInit, created: number): Record<string, unknown> {
  return {
    id: `re_${letters(24, MIXED)}`,
    object: 'refund',
    amount: init.amount.value,
    charge: init.payment,
    currency: init.amount.currency.toLowerCase(),
    created,
    reason: 'requested_by_customer',
    status: 'succeeded',
  };
}
