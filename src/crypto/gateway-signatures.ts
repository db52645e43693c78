/**
 * The HMACs of the two gateway schemes other than Standard Webhooks (crypto/standard-webhooks.ts),
 * computed in one place: the webhook adapters verify deliveries with them (webhooks/signatures.ts)
 * and `npm run simulate` signs its deliveries with them (simulate/), so what the simulator sends is
 * signed by the very code that checks it.
 *
 * - Adyen: per notification item, HMAC-SHA256 with the hex-decoded key over
 *   `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`
 *   (a missing field empty), sent base64 in `additionalData.hmacSignature`.
 * - Stripe: HMAC-SHA256 over `{t}.{body}` keyed by the endpoint secret string (`whsec_…` as is),
 *   sent hex in `Stripe-Signature: t=…,v1=…`.
 */
import { createHmac } from 'node:crypto';

export interface AdyenSignedFields {
  readonly pspReference?: unknown;
  readonly originalReference?: unknown;
  readonly merchantAccountCode?: unknown;
  readonly merchantReference?: unknown;
  readonly amount?: { readonly value?: unknown; readonly currency?: unknown };
  readonly eventCode?: unknown;
  readonly success?: unknown;
  readonly additionalData?: Readonly<Record<string, unknown>>;
}

/** Exactly as Adyen (and its libraries) build it: eight fields joined by `:`, a missing one empty. */
export function adyenSigningString(item: AdyenSignedFields): string {
  const field = (value: unknown): string =>
    typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' ? String(value) : '';
  return [
    item.pspReference,
    item.originalReference,
    item.merchantAccountCode,
    item.merchantReference,
    item.amount?.value,
    item.amount?.currency,
    item.eventCode,
    item.success,
  ]
    .map(field)
    .join(':');
}

/** The raw HMAC of one item under one hex key (`additionalData.hmacSignature` is its base64). */
export function adyenHmac(item: AdyenSignedFields, hexKey: string): Buffer {
  return createHmac('sha256', Buffer.from(hexKey, 'hex')).update(adyenSigningString(item), 'utf8').digest();
}

/** The raw HMAC of a Stripe delivery: `{t}.{body}` under the endpoint secret. */
export function stripeHmac(secret: string, timestamp: string, body: Buffer | string): Buffer {
  return createHmac('sha256', secret)
    .update(Buffer.concat([Buffer.from(`${timestamp}.`), Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8')]))
    .digest();
}

/** The `Stripe-Signature` header value: `t=…` and one `v1=<hex>` per secret. */
export function stripeSignatureHeader(secrets: readonly string[], timestamp: string, body: string): string {
  return [
    `t=${timestamp}`,
    ...secrets.map((secret) => `v1=${stripeHmac(secret, timestamp, body).toString('hex')}`),
  ].join(',');
}
