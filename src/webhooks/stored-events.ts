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
      return platformEvent(row.payload as PlatformPaymentEvent, row.event_key);
    case 'adyen':
      return adyenEvent(row.payload as AdyenItem, row.received_at, { stored: true });
    case 'stripe':
      return stripeEvent(row.payload as StripeEvent, { stored: true });
  }
}
