/**
 * Standard Webhooks signatures (https://www.standardwebhooks.com/), the one implementation this
 * service signs with (outbound events, events/signing.ts) and verifies with (the platform gateway's
 * deliveries, webhooks/signatures.ts): HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`
 * keyed by the secret's bytes (the base64 after `whsec_`), sent as `v1,<base64>` entries separated by
 * spaces (one per live secret during a rotation).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SECRET_PREFIX = 'whsec_';

/** The secret's key bytes: the base64 after `whsec_` (a bare base64 secret is accepted too). */
export function secretKey(secret: string): Buffer {
  return Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, 'base64');
}

/** The raw HMAC of one message under one secret. */
export function standardSignature(secret: string, id: string, timestamp: string, body: Buffer | string): Buffer {
  return createHmac('sha256', secretKey(secret))
    .update(
      Buffer.concat([Buffer.from(`${id}.${timestamp}.`), Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8')]),
    )
    .digest();
}

/** The `webhook-signature` header value: one `v1,<base64>` per secret. */
export function signatureHeaderValue(secrets: readonly string[], id: string, timestamp: string, body: string): string {
  return secrets.map((secret) => `v1,${standardSignature(secret, id, timestamp, body).toString('base64')}`).join(' ');
}

/**
 * The index of the first secret one of the header's `v1` signatures verifies under, compared in
 * constant time; undefined when none does.
 */
export function matchingSecret(
  header: string,
  secrets: readonly string[],
  id: string,
  timestamp: string,
  body: Buffer,
): number | undefined {
  const offered = header
    .split(' ')
    .filter((part) => part.startsWith('v1,'))
    .map((part) => Buffer.from(part.slice(3), 'base64'));
  for (const [index, secret] of secrets.entries()) {
    const expected = standardSignature(secret, id, timestamp, body);
    if (offered.some((candidate) => candidate.length === expected.length && timingSafeEqual(candidate, expected))) {
      return index;
    }
  }
  return undefined;
}
