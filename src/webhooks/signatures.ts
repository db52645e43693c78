/**
 * The three signature schemes gateways use, verified over the exact bytes (or, for Adyen, the exact
 * fields) they signed, against every configured secret so that a rotation never drops a delivery.
 * Each returns which secret matched (its index in the configured list), as evidence for rotations.
 *
 * - Standard Webhooks: HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` with the base64
 *   secret after `whsec_`; header `webhook-signature` lists `v1,<base64>` entries; ±tolerance both ways.
 *   The HMAC is crypto/standard-webhooks.ts, the code outbound events are signed with.
 * - Stripe: HMAC-SHA256 hex over `{t}.{body}` keyed by the secret string; header `Stripe-Signature`
 *   `t=…,v1=…[,v1=…]`; every `v1` is tried (Stripe sends one per live secret); past tolerance refused.
 * - Adyen: per notification item, HMAC-SHA256 base64 with the hex-decoded key over
 *   `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`
 *   (missing fields empty), in `additionalData.hmacSignature`. No timestamp: dedupe is the replay defence.
 * The Adyen and Stripe HMACs are crypto/gateway-signatures.ts, the code `npm run simulate` signs with.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { adyenHmac, stripeHmac, type AdyenSignedFields } from '../crypto/gateway-signatures.js';
import { matchingSecret } from '../crypto/standard-webhooks.js';
import { AppError } from '../errors/app-error.js';

export interface Verified {
  readonly secretIndex: number;
}

type Headers = Readonly<Record<string, string | string[] | undefined>>;

export function verifyStandardWebhook(
  headers: Headers,
  body: Buffer,
  secrets: readonly string[],
  toleranceSeconds: number,
  now: Date,
): Verified & { readonly id: string; readonly timestamp: Date } {
  const id = single(headers, 'webhook-id');
  const timestamp = single(headers, 'webhook-timestamp');
  const signature = single(headers, 'webhook-signature');
  if (id === undefined || timestamp === undefined || signature === undefined) {
    throw new AppError('WEBHOOK_SIGNATURE_MISSING', {
      detail: 'Send webhook-id, webhook-timestamp and webhook-signature (Standard Webhooks).',
    });
  }
  const seconds = checkTimestamp(timestamp, toleranceSeconds, now);
  const index = matchingSecret(signature, secrets, id, timestamp, body);
  if (index === undefined) throw new AppError('WEBHOOK_SIGNATURE_INVALID');
  return { secretIndex: index, id, timestamp: new Date(seconds * 1000) };
}

export function verifyStripeSignature(
  headers: Headers,
  body: Buffer,
  secrets: readonly string[],
  toleranceSeconds: number,
  now: Date,
): Verified {
  const header = single(headers, 'stripe-signature');
  if (header === undefined) throw new AppError('WEBHOOK_SIGNATURE_MISSING', { detail: 'Send Stripe-Signature.' });
  let timestamp: string | undefined;
  const offered: Buffer[] = [];
  for (const part of header.split(',')) {
    const [name, value] = [part.slice(0, part.indexOf('=')), part.slice(part.indexOf('=') + 1)];
    if (name === 't') timestamp = value;
    if (name === 'v1' && /^[0-9a-f]{64}$/.test(value)) offered.push(Buffer.from(value, 'hex'));
  }
  if (timestamp === undefined || offered.length === 0) {
    throw new AppError('WEBHOOK_SIGNATURE_MISSING', { detail: 'Stripe-Signature needs t= and at least one v1=.' });
  }
  // Stripe's libraries refuse only old timestamps; a future one beyond tolerance is refused here too.
  checkTimestamp(timestamp, toleranceSeconds, now);
  for (const [index, secret] of secrets.entries()) {
    const expected = stripeHmac(secret, timestamp, body);
    if (offered.some((candidate) => safeEqual(candidate, expected))) return { secretIndex: index };
  }
  throw new AppError('WEBHOOK_SIGNATURE_INVALID');
}

export function verifyAdyenItem(item: AdyenSignedFields, hexKeys: readonly string[]): Verified {
  const signature = item.additionalData?.['hmacSignature'];
  if (typeof signature !== 'string' || signature.length === 0) {
    throw new AppError('WEBHOOK_SIGNATURE_MISSING', { detail: 'Every item needs additionalData.hmacSignature.' });
  }
  const offered = Buffer.from(signature, 'base64');
  for (const [index, hexKey] of hexKeys.entries()) {
    const expected = adyenHmac(item, hexKey);
    if (safeEqual(offered, expected)) return { secretIndex: index };
  }
  throw new AppError('WEBHOOK_SIGNATURE_INVALID');
}

/** Constant-time HTTP Basic check; both sides compared in full whatever the first mismatch. */
export function basicAuthMatches(
  header: string | undefined,
  expected: { username: string; password: string },
): boolean {
  const match = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header ?? '');
  const given = Buffer.from(match?.[1] ?? '', 'base64');
  const wanted = Buffer.from(`${expected.username}:${expected.password}`, 'utf8');
  const a = createHmac('sha256', 'basic').update(given).digest();
  const b = createHmac('sha256', 'basic').update(wanted).digest();
  return timingSafeEqual(a, b);
}

function checkTimestamp(value: string, toleranceSeconds: number, now: Date): number {
  if (!/^\d{1,12}$/.test(value))
    throw new AppError('WEBHOOK_SIGNATURE_INVALID', { detail: 'The timestamp is malformed.' });
  const seconds = Number(value);
  const skew = now.getTime() / 1000 - seconds;
  if (Math.abs(skew) > toleranceSeconds) {
    throw new AppError('WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE', {
      detail: `The signature timestamp is more than ${toleranceSeconds} s ${skew > 0 ? 'old' : 'in the future'}.`,
    });
  }
  return seconds;
}

function single(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
