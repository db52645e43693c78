/**
 * Signs deliveries exactly as the gateways do, with their own libraries: `standardwebhooks`
 * (`Webhook.sign`), `@adyen/api-library` (`hmacValidator`), `stripe` (`generateTestHeaderString`).
 * Secrets are made per test run; nothing here is written to disk.
 */
import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { hmacValidator } from '@adyen/api-library';
import Stripe from 'stripe';
import type { TestService, TestResponse } from './harness.js';

export const WEBHOOK_SECRETS = {
  platform: [`whsec_${randomBytes(32).toString('base64')}`, `whsec_${randomBytes(32).toString('base64')}`],
  adyen: [randomBytes(32).toString('hex').toUpperCase(), randomBytes(32).toString('hex').toUpperCase()],
  stripe: [`whsec_${randomBytes(24).toString('hex')}`, `whsec_${randomBytes(24).toString('hex')}`],
} as const;

/** Environment for a service that trusts the first secret of each provider (rotation tests add the second). */
export function webhookEnv(which: 'first' | 'both' = 'first'): Record<string, string> {
  const pick = (list: readonly string[]): string => (which === 'first' ? (list[0] as string) : list.join(','));
  return {
    WEBHOOK_PLATFORM_SECRETS: pick(WEBHOOK_SECRETS.platform),
    WEBHOOK_ADYEN_HMAC_KEYS: pick(WEBHOOK_SECRETS.adyen),
    WEBHOOK_STRIPE_SECRETS: pick(WEBHOOK_SECRETS.stripe),
  };
}

export interface PlatformSignOptions {
  readonly id?: string;
  readonly timestamp?: Date;
  readonly secrets?: readonly string[];
}

/** Hex with its digits turned into letters: an id no card-number check can ever flag. */
export function lettersOnly(hex: string): string {
  return hex.replace(/[0-9]/g, (d) => 'ghijklmnop'.charAt(Number(d)));
}

export function platformHeaders(body: string, options: PlatformSignOptions = {}): Record<string, string> {
  // Letters only: a UUID's digit groups can chain across its dashes into a Luhn-valid run, which the
  // service refuses in a webhook-id (issue 16).
  const id = options.id ?? `msg_${lettersOnly(randomBytes(16).toString('hex'))}`;
  const timestamp = options.timestamp ?? new Date();
  const signatures = (options.secrets ?? [WEBHOOK_SECRETS.platform[0]]).map((secret) =>
    new Webhook(secret).sign(id, timestamp, body),
  );
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
    'webhook-signature': signatures.join(' '),
  };
}

export function postPlatform(
  svc: TestService,
  event: unknown,
  options: PlatformSignOptions = {},
): Promise<TestResponse> {
  const body = JSON.stringify(event);
  return svc.request('POST', '/v1/webhooks/platform', { body, headers: platformHeaders(body, options) });
}

let paymentCounter = 0;
export function paymentId(prefix = 'pay-ext'): string {
  // Letters between the numbers: no digit run a card number could hide in (a platform id holding one
  // is refused, issue 16).
  return `${prefix}-p${process.pid}-n${++paymentCounter}-h${randomBytes(3).toString('hex')}`;
}

export interface PlatformEventInit {
  readonly type?: string;
  readonly paymentId: string;
  readonly amount?: number;
  readonly currency?: string;
  readonly channel?: 'online' | 'in_store' | 'mobile' | 'call_centre';
  readonly card?: Record<string, unknown>;
  readonly refund?: { id: string; amount: number };
  readonly chargeback?: { id: string; amount: number };
  readonly occurredAt?: string;
  readonly storeId?: string;
}

export function platformEvent(init: PlatformEventInit): Record<string, unknown> {
  return {
    type: init.type ?? 'payment.authorised',
    occurredAt: init.occurredAt ?? new Date().toISOString(),
    payment: {
      id: init.paymentId,
      merchantReference: `order-${init.paymentId}`,
      amount: { value: init.amount ?? 10_000, currency: init.currency ?? 'GBP' },
      channel: init.channel ?? 'online',
      ...(init.storeId === undefined ? {} : { storeId: init.storeId, terminalId: 'T-1' }),
    },
    ...(init.card === undefined ? {} : { card: init.card }),
    ...(init.refund === undefined ? {} : { refund: init.refund }),
    ...(init.chargeback === undefined ? {} : { chargeback: init.chargeback }),
  };
}

export type AdyenItemInit = Record<string, unknown> & {
  eventCode: string;
  pspReference: string;
  success?: 'true' | 'false';
  amount?: { value: number; currency: string };
  additionalData?: Record<string, string>;
};

/** A notification item signed with the Adyen library's own HMAC code. */
export function adyenItem(init: AdyenItemInit, key: string = WEBHOOK_SECRETS.adyen[0]): Record<string, unknown> {
  const item = {
    merchantAccountCode: 'TestMerchant',
    merchantReference: `order-${init.pspReference}`,
    success: 'true',
    eventDate: new Date().toISOString(),
    amount: { value: 10_000, currency: 'EUR' },
    ...init,
    additionalData: { ...init.additionalData },
  };
  const signature = new hmacValidator().calculateHmac(item as never, key);
  return { ...item, additionalData: { ...item.additionalData, hmacSignature: signature } };
}

export function postAdyen(
  svc: TestService,
  items: readonly Record<string, unknown>[],
  headers: Record<string, string> = {},
): Promise<TestResponse> {
  const body = JSON.stringify({ live: 'false', notificationItems: items.map((i) => ({ NotificationRequestItem: i })) });
  return svc.request('POST', '/v1/webhooks/adyen', {
    body,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

const stripe = new Stripe('sk_test_not_used_for_network');

export function stripeHeader(body: string, secret: string = WEBHOOK_SECRETS.stripe[0], timestamp?: number): string {
  return stripe.webhooks.generateTestHeaderString({
    payload: body,
    secret,
    ...(timestamp === undefined ? {} : { timestamp }),
  });
}

export function postStripe(
  svc: TestService,
  event: unknown,
  options: { secret?: string; timestamp?: number; header?: string } = {},
): Promise<TestResponse> {
  const body = JSON.stringify(event);
  return svc.request('POST', '/v1/webhooks/stripe', {
    body,
    headers: {
      'content-type': 'application/json',
      'stripe-signature': options.header ?? stripeHeader(body, options.secret, options.timestamp),
    },
  });
}

export function stripeChargeEvent(
  type: string,
  charge: {
    id: string;
    amount?: number;
    fingerprint?: string;
    present?: boolean;
    captured?: boolean;
    refunded?: number;
  },
): Record<string, unknown> {
  const card = { brand: 'visa', last4: '4242', fingerprint: charge.fingerprint ?? 'fpAAAA1111BBBB22' };
  return {
    // Letters only, as Stripe's base62 ids practically are: a Luhn-valid digit run in an id is refused.
    id: `evt_${lettersOnly(randomBytes(12).toString('hex'))}`,
    object: 'event',
    type,
    created: Math.floor(Date.now() / 1000),
    data: {
      object: {
        id: charge.id,
        object: 'charge',
        amount: charge.amount ?? 5_000,
        amount_captured: charge.captured === false ? 0 : (charge.amount ?? 5_000),
        amount_refunded: charge.refunded ?? 0,
        captured: charge.captured ?? true,
        currency: 'usd',
        payment_method_details:
          charge.present === true ? { type: 'card_present', card_present: card } : { type: 'card', card },
        metadata: {},
      },
    },
  };
}
