/**
 * The stored (projected, PAN-free) inbox payload mapped again by the adapter that first received it:
 * what a replay of an inbox event applies. Handed to the payment service by the composition root,
 * so payments never reaches into the gateway adapters.
 *
 * A platform event's fact keys derive from its delivery's `webhook-id` (a failed authorisation, a
 * chargeback or refund without its own id). Today that id is stored as its keyed digest when it reads
 * as a card number (keys/reference-digests.ts); an earlier release stored it as sent, and such a row
 * still holds the raw id as `event_key` (recorded in `card_data_legacy_findings`). Replaying it must
 * write no new fact keyed by that raw id (issue 16, third review), and must not apply it twice:
 * - not applied yet (no fact): the facts are keyed by the id's digest, as a delivery today would be;
 * - applied (its facts exist, keyed by the raw id): the raw key is kept, so every fact is found
 *   already there and nothing is written (a digest key would add the chargeback a second time).
 */
import type { PaymentEventInput, StoredInboxEvent } from '../payments/payment-event.js';
import { adyenEvent, type AdyenItem } from './adyen-events.js';
import { platformEvent, type PlatformPaymentEvent } from './platform-events.js';
import { stripeEvent, type StripeEvent } from './stripe-events.js';

export interface StoredEventDecoderDeps {
  /** keys/reference-digests.ts `storedReference`: the id, or its digest when it reads as a card number. */
  readonly storedReference: (id: string) => Promise<string>;
}

export function storedEventDecoder(
  deps: StoredEventDecoderDeps,
): (row: StoredInboxEvent, stored: { readonly hasFacts: boolean }) => Promise<PaymentEventInput> {
  return async (row, stored) => {
    switch (row.provider) {
      case 'platform': {
        if ((row.payload as { type?: unknown }).type === 'card.updated') return storedCardUpdate(row);
        const digest = await deps.storedReference(row.event_key);
        const key = digest !== row.event_key && stored.hasFacts ? row.event_key : digest;
        return platformEvent(row.payload as PlatformPaymentEvent, key);
      }
      case 'adyen':
        return adyenEvent(row.payload as AdyenItem, row.received_at, { stored: true });
      case 'stripe':
        if ((row.payload as { type?: unknown }).type === 'payment_method.automatically_updated') {
          return storedCardUpdate(row);
        }
        return stripeEvent(row.payload as StripeEvent, { stored: true });
    }
  };
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
