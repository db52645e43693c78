/**
 * The outbound events: their types, their stable ids and the JSON a subscriber receives.
 *
 * A body names the shopper by reference and cards by token; it never holds a card number or an
 * e-mail address (the builders here take no such field, and {@link eventBody} refuses a body with a
 * PAN-like digit run as a last resort, as the audit trail does).
 */
import { createHash } from 'node:crypto';
import { maskPans } from '../logging/pan-redactor.js';

export const EVENT_TYPES = [
  'points.pending',
  'points.available',
  'points.reversed',
  'points.redeemed',
  'points.expired',
  'points.expiring',
  'shopper.created',
  'shopper.enrolled',
  'shopper.merged',
  'card.linked',
  'tier.changed',
  'store_credit.issued',
  'store_credit.spent',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

/** An event as the outbox stores it: `body` is the exact JSON that is signed and sent. */
export interface OutboundEvent {
  readonly id: string;
  readonly type: EventType;
  readonly shopperRef: string;
  readonly body: string;
  readonly createdAt: Date;
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

/**
 * `msg_` and 26 base32 characters of SHA-256 over the type and the business key of the change that
 * caused the event (a ledger entry's unique key, a merge's absorbed reference…). The same change
 * always gives the same id, so a rerun transaction or a redelivered gateway webhook can never add a
 * second event, and a subscriber dedupes on `webhook-id`. Like random ids, a candidate holding 12 or
 * more consecutive digits is derived again (with a counter), so no id can look like a card number.
 */
export function eventId(type: EventType, businessKey: string): string {
  for (let round = 0; ; round++) {
    const digest = createHash('sha256').update(`${type}\n${businessKey}\n${round}`).digest();
    let out = '';
    for (let i = 0; i < 26; i++) out += ALPHABET.charAt((digest[i] as number) & 31);
    if (!/\d{12,}/.test(out)) return `msg_${out}`;
  }
}

/** Builds an event: `{ id, type, timestamp, data }`, the payload shape Standard Webhooks recommends. */
export function eventBody(
  type: EventType,
  businessKey: string,
  shopperRef: string,
  data: Readonly<Record<string, unknown>>,
  at: Date,
): OutboundEvent {
  const id = eventId(type, businessKey);
  const body = JSON.stringify({
    id,
    type,
    timestamp: at.toISOString(),
    data: { shopperReference: shopperRef, ...data },
  });
  if (maskPans(body) !== body) throw new Error('refusing to write a PAN-like value into an outbound event');
  return { id, type, shopperRef, body, createdAt: at };
}
