/**
 * The stored (projected, PAN-free) inbox payload mapped again by the adapter that first received it:
 * what a replay of an inbox event applies. Handed to the payment service by the composition root,
 * so payments never reaches into the gateway adapters.
 */
import type { PaymentEventInput, StoredInboxEvent } from '../payments/payment-event.js';
import { adyenEvent, type AdyenItem } from './adyen-events.js';
import { platformEvent, type PlatformPaymentEvent } from './platform-events.js';
import { stripeEvent, type StripeEvent } from './stripe-events.js';

export function decodeStoredEvent(row: StoredInboxEvent): PaymentEventInput {
  switch (row.provider) {
    case 'platform':
      if ((row.payload as { type?: unknown }).type === 'card.updated') return storedCardUpdate(row);
      return platformEvent(row.payload as PlatformPaymentEvent, row.event_key);
    case 'adyen':
      return adyenEvent(row.payload as AdyenItem, row.received_at, { stored: true });
    case 'stripe':
      if ((row.payload as { type?: unknown }).type === 'payment_method.automatically_updated') {
        return storedCardUpdate(row);
      }
      return stripeEvent(row.payload as StripeEvent, { stored: true });
  }
}

/**
 * A stored card-updater event: no payment effect, so not replayable (`INBOX_EVENT_NOT_REPLAYABLE`). Its
 * stored payload no longer names the old card (only the new card's token); a redelivery is the way to
 * apply it again, and it is idempotent.
 */
function storedCardUpdate(row: StoredInboxEvent): PaymentEventInput {
  const type = (row.payload as { type: string }).type;
  return {
    provider: row.provider,
    eventKey: row.event_key,
    eventType: type,
    effect: undefined,
    storedPayload: () => row.payload,
  };
}
