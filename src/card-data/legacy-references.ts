/**
 * Which stored gateway reference holding card data may be re-keyed without breaking exactly-once
 * (migration 20261209300000, docs/card-data.md "Cleaning what was stored before"), and which must be
 * left and reported. A reference is a de-duplication key: it may be rewritten only when no delivery
 * can ever be matched against it again.
 * - platform and Stripe ids holding a card number are refused at the edge (422
 *   `CARD_NUMBER_NOT_ALLOWED`): a redelivery never reaches the de-duplication, so they may be re-keyed;
 * - an Adyen reference that is not 16 alphanumerics is stored `rejected` today, keyed by its signature:
 *   may be re-keyed;
 * - a 16-alphanumeric Adyen reference cannot be told from a real one and a redelivery of its item is
 *   matched by that very value: left, reported;
 * - a UUID-shaped platform `webhook-id` is accepted by the handler (as a keyed digest once the
 *   detector flags it): the legacy raw value in `webhook_inbox.event_key`, and a fact key equal to it
 *   (a platform fact keyed by its delivery), is neither clean nor re-keyable to what the handler
 *   stores: left, reported. Everywhere else (platform payment, refund and chargeback ids, Stripe ids)
 *   a UUID shape is no exception: re-keyed like any id holding a card number;
 * - a Stripe refund-total fact key (`total:<amount>`) is computed from the masked projection, so a
 *   redelivery gives `total:null`, never `total:<card number>`: re-keyed like any other;
 * - a client `Idempotency-Key` (`idempotency_keys.key`, `event_subscription_secrets.rotation_key`,
 *   role `idempotency-key`, whatever the provider): a bare UUID is accepted at the edge and a retry of
 *   a key an earlier release stored as sent replays that very row (src/loyalty/idempotency.ts,
 *   src/events/subscription-service.ts): left, reported; any other key holding card data is refused at
 *   the edge (422), so no retry can match it again: re-keyed.
 */
import { containsCardData } from './card-data-guard.js';

const ADYEN_REFERENCE = /^[A-Za-z0-9]{16}$/;
const UUID_ID = /^(?:msg_)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BARE_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export type LegacyReferenceVerdict = 'clean' | 'rekey' | 'report';

/**
 * What the value is: a delivery's `webhook-id` (a platform `webhook_inbox.event_key`, or a platform
 * fact key equal to its inbox event's key), a client `Idempotency-Key`, or any other reference.
 */
export type LegacyReferenceRole = 'webhook-id' | 'idempotency-key' | 'reference';

/** The verdict on one stored reference (`event_key`, `external_id`, `fact_key`, a payload reference). */
export function legacyReferenceVerdict(
  provider: string,
  value: string,
  role: LegacyReferenceRole = 'reference',
): LegacyReferenceVerdict {
  if (!containsCardData(value)) return 'clean';
  if (role === 'idempotency-key') return BARE_UUID.test(value) ? 'report' : 'rekey';
  if (provider === 'platform') return role === 'webhook-id' && UUID_ID.test(value) ? 'report' : 'rekey';
  if (provider !== 'adyen') return 'rekey';
  // An Adyen event key is `<pspReference>:<eventCode>:<success>`; a fact key is `auth` or a reference.
  return ADYEN_REFERENCE.test(value.split(':')[0] ?? '') ? 'report' : 'rekey';
}
