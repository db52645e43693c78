/**
 * Field crypto: the two primitives every encrypted column uses (cards, member e-mails, subscription
 * secrets), both from node:crypto (OpenSSL, AES-NI). A leaf module: it imports nothing from src/.
 *
 * Fingerprints: HMAC-SHA256 under an `identifier-mac` key over a domain-separated encoding of the
 * identifier (PCI DSS 3.5.1.1: a keyed hash of the entire PAN). The kind and namespace are part of the
 * input, length-prefixed, so a PAN and an alias with the same digits can never collide.
 *
 * Encryption: AES-256-GCM under a `pan-encryption` key, random 96-bit IV per value, output
 * `iv ‖ tag ‖ ciphertext`. The AAD binds the ciphertext to its row and key version, so a ciphertext
 * copied to another card, or relabelled with another version, fails authentication.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, type KeyObject } from 'node:crypto';

export type IdentifierKind = 'pan' | 'par' | 'alias';

export interface Identifier {
  readonly kind: IdentifierKind;
  /** For aliases only: `adyen.alias`, `stripe.fingerprint`, … */
  readonly namespace?: string | undefined;
  readonly value: string;
}

function field(value: string): string {
  return `${Buffer.byteLength(value, 'utf8')}:${value}`;
}

export function fingerprint(macKey: KeyObject, identifier: Identifier): Buffer {
  return createHmac('sha256', macKey)
    .update(
      `loyalty-vault/identifier/v1|${field(identifier.kind)}|${field(identifier.namespace ?? '')}|${field(identifier.value)}`,
    )
    .digest();
}

const IV_BYTES = 12;
const TAG_BYTES = 16;

export function encryptValue(key: KeyObject, aad: string, plaintext: string): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]);
}

export function decryptValue(key: KeyObject, aad: string, sealed: Buffer): string {
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES));
  decipher.setAAD(Buffer.from(aad, 'utf8'));
  decipher.setAuthTag(sealed.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
  return Buffer.concat([decipher.update(sealed.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
}

export function panAad(token: string, keyVersion: number): string {
  return `loyalty-vault/pan/v1|${token}|${keyVersion}`;
}

export function identifierAad(identifierId: string, keyVersion: number): string {
  return `loyalty-vault/identifier-value/v1|${identifierId}|${keyVersion}`;
}

/** A loyalty member's e-mail address, bound to its shopper and key version. */
export function emailAad(shopperRef: string, keyVersion: number): string {
  return `loyalty-vault/member-email/v1|${shopperRef}|${keyVersion}`;
}
