/**
 * Signing outbound deliveries per Standard Webhooks (crypto/standard-webhooks.ts, the same code that
 * verifies the platform gateway's deliveries). During a rotation every live secret signs,
 * space-separated, so a receiver holding either secret verifies. Receivers verify with any Standard
 * Webhooks library (tests use the `standardwebhooks` package).
 */
import { randomBytes } from 'node:crypto';
import { SECRET_PREFIX, signatureHeaderValue } from '../crypto/standard-webhooks.js';

/** A new secret: 256 random bits, `whsec_<base64>`. */
export function newSigningSecret(): string {
  return `${SECRET_PREFIX}${randomBytes(32).toString('base64')}`;
}

export function signatureHeader(
  secrets: readonly string[],
  id: string,
  timestampSeconds: number,
  body: string,
): string {
  if (secrets.length === 0) throw new Error('a delivery needs at least one signing secret');
  return signatureHeaderValue(secrets, id, String(timestampSeconds), body);
}

/** The three Standard Webhooks headers of one delivery. */
export function signedHeaders(
  secrets: readonly string[],
  id: string,
  at: Date,
  body: string,
): Record<'webhook-id' | 'webhook-timestamp' | 'webhook-signature', string> {
  const timestamp = Math.floor(at.getTime() / 1000);
  return {
    'webhook-id': id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': signatureHeader(secrets, id, timestamp, body),
  };
}
