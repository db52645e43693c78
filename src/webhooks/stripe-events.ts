/**
 * Stripe events as payment events. The payment is the charge (`ch_…`); refunds and disputes name it.
 *
 * - `charge.succeeded` → authorised (and captured when `captured` is true);
 *   `charge.captured` → captured (`amount_captured`); `charge.failed` → authorisation failed;
 *   `charge.expired` → cancelled (an uncaptured authorisation lapsed);
 * - `charge.refunded` → the cumulative `amount_refunded` (refund objects are not always expanded);
 *   `refund.created|updated|failed`, `charge.refund.updated` → the refund by its id, failed when its
 *   status is `failed` or `canceled`;
 * - `charge.dispute.created` → chargeback; `charge.dispute.closed` with status `won` → reversed.
 * Identity: `payment_method_details.card(_present).fingerprint` as alias `stripe.fingerprint`;
 * channel `in_store` for card-present payments. Anything else is stored and acknowledged, no effect.
 *
 * Card data (docs/card-data.md): the event is **projected**, never kept whole. {@link projectStripeEvent}
 * lists what is stored; every kept text passes the card-data guard (masked to the last four, named in
 * `masked`); the fingerprint is replaced by the card token; billing details, receipt e-mail, unknown
 * metadata keys and everything else are dropped. The effect is computed from the masked projection,
 * so what is applied is what is stored.
 */
import { maskCardDataDeep } from '../card-data/card-data-guard.js';
import type { CardInput } from '../cards/vault-service.js';
import {
  lastFour,
  walletTypeOf,
  type EventFact,
  type PaymentEffect,
  type PaymentEventInput,
} from '../payments/payment-event.js';
import type { FactKind } from '../payments/payment-state.js';

export interface StripeEvent {
  readonly id: string;
  readonly type: string;
  readonly created: number;
  readonly data: { readonly object: Readonly<Record<string, unknown>> };
  readonly [other: string]: unknown;
}

type StripeObject = Readonly<Record<string, unknown>>;

export interface StripeEventOptions {
  /** The event comes from the inbox (already projected): its card is the stored token. */
  readonly stored?: boolean;
}

export function stripeEvent(event: StripeEvent, options: StripeEventOptions = {}): PaymentEventInput {
  const { value: stored, masked } = maskCardDataDeep(projectStripeEvent(event));
  if (event.type === CARD_UPDATED && options.stored !== true) {
    return { ...cardUpdateOf(event, stored), masked };
  }
  const storedToken = options.stored === true ? str((event['card'] as StripeObject | undefined)?.['token']) : undefined;
  const fingerprint = options.stored === true ? undefined : fingerprintOf(event.data?.object ?? {});
  return {
    provider: 'stripe',
    eventKey: stored.id,
    eventType: stored.type,
    effect: effectOf(stored, fingerprint, storedToken),
    masked,
    storedPayload: (cardToken) => (cardToken === undefined ? stored : { ...stored, card: { token: cardToken } }),
  };
}

const KEPT_METADATA = ['order_id', 'store_id', 'terminal_id'] as const;

/** Stripe's card updater: a saved payment method's card was reissued or its expiry changed. */
const CARD_UPDATED = 'payment_method.automatically_updated';

/**
 * `payment_method.automatically_updated`: `data.object` is the payment method with the new card, and
 * `data.previous_attributes.card` what changed (its `fingerprint` when the number changed; only the
 * expiry otherwise). The old card is the one the previous fingerprint names (the current one when the
 * number did not change: then only the expiry moves, never a new card). No fingerprint, no update.
 */
function cardUpdateOf(event: StripeEvent, stored: StripeEvent): PaymentEventInput {
  const card = (event.data?.object?.['card'] ?? {}) as StripeObject;
  const previousAttributes = (event.data as { previous_attributes?: StripeObject }).previous_attributes;
  const previousCard = (previousAttributes?.['card'] ?? {}) as StripeObject;
  const current = str(card['fingerprint']);
  const previous = str(previousCard['fingerprint']) ?? current;
  const alias = (value: string) => ({ kind: 'alias', namespace: 'stripe.fingerprint', value }) as const;
  const month = card['exp_month'];
  const year = card['exp_year'];
  return {
    provider: 'stripe',
    eventKey: stored.id,
    eventType: stored.type,
    effect: undefined,
    ...(current === undefined || previous === undefined
      ? {}
      : {
          cardUpdate: {
            previous: alias(previous),
            next: alias(current),
            ...(typeof month === 'number' && typeof year === 'number' ? { expiry: { month, year } } : {}),
          },
        }),
    storedPayload: (cardToken) => (cardToken === undefined ? stored : { ...stored, card: { token: cardToken } }),
  };
}

/** The allow-list: what the service needs of an event, nothing else (fingerprint excluded). */
export function projectStripeEvent(event: StripeEvent): StripeEvent {
  const object = (event.data?.object ?? {}) as StripeObject;
  const pick = (source: StripeObject | undefined, names: readonly string[]): Record<string, unknown> =>
    Object.fromEntries(
      names.flatMap((name) => {
        const value = source?.[name];
        return typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean'
          ? [[name, value]]
          : [];
      }),
    );
  const details = object['payment_method_details'] as StripeObject | undefined;
  const present = details?.['card_present'] as StripeObject | undefined;
  const card = details?.['card'] as StripeObject | undefined;
  const cardFields = ['brand', 'last4'];
  // A wallet (Apple Pay, Google Pay…): its type and the device token's last 4, nothing else of it.
  const walletOf = (source: StripeObject | undefined): Record<string, unknown> => {
    const wallet = source?.['wallet'] as StripeObject | undefined;
    return wallet === undefined || wallet === null ? {} : { wallet: pick(wallet, ['type', 'dynamic_last4']) };
  };
  const projectedDetails =
    details === undefined
      ? undefined
      : {
          ...pick(details, ['type']),
          ...(present === undefined
            ? {}
            : { card_present: { ...pick(present, [...cardFields, 'terminal_id']), ...walletOf(present) } }),
          ...(card === undefined ? {} : { card: { ...pick(card, cardFields), ...walletOf(card) } }),
        };
  const metadata = object['metadata'] as StripeObject | undefined;
  return {
    ...(pick(event as unknown as StripeObject, ['id', 'type', 'created', 'livemode']) as {
      id: string;
      type: string;
      created: number;
    }),
    data: {
      object: {
        ...pick(object, [
          'id',
          'object',
          'amount',
          'amount_captured',
          'amount_refunded',
          'captured',
          'currency',
          'status',
          'charge',
          'description',
        ]),
        ...(metadata === undefined ? {} : { metadata: pick(metadata, KEPT_METADATA) }),
        ...(projectedDetails === undefined ? {} : { payment_method_details: projectedDetails }),
        // A payment method (card updater): its card's display data, never its fingerprint.
        ...(event.type === CARD_UPDATED && object['card'] !== undefined
          ? { card: pick(object['card'] as StripeObject, ['brand', 'last4', 'exp_month', 'exp_year']) }
          : {}),
      },
    },
  };
}

function fingerprintOf(object: StripeObject): string | undefined {
  const details = (object['payment_method_details'] ?? {}) as StripeObject;
  const card = (details['card_present'] ?? details['card']) as StripeObject | undefined;
  return str(card?.['fingerprint']);
}

function effectOf(
  event: StripeEvent,
  fingerprint: string | undefined,
  storedToken: string | undefined,
): PaymentEffect | undefined {
  const object = event.data.object;
  const occurredAt = new Date(event.created * 1000);
  const amount = (name: string): number | null => (typeof object[name] === 'number' ? object[name] : null);
  const currency = typeof object['currency'] === 'string' ? object['currency'].toUpperCase() : null;
  const fact = (kind: FactKind, key: string, value: number | null): EventFact => ({
    kind,
    key,
    amount: value,
    currency: value === null ? null : currency,
    occurredAt,
  });
  const id = str(object['id']);
  const card = { fingerprint, storedToken };
  switch (event.type) {
    case 'charge.succeeded': {
      if (id === undefined) return undefined;
      const authorised = fact('authorised', 'auth', amount('amount'));
      const captured = object['captured'] === true ? [fact('captured', 'capture', amount('amount_captured'))] : [];
      return charge(object, card, id, authorised, ...captured);
    }
    case 'charge.captured':
      return id === undefined
        ? undefined
        : charge(object, card, id, fact('captured', 'capture', amount('amount_captured')));
    case 'charge.failed':
      return id === undefined ? undefined : charge(object, card, id, fact('authorisation_failed', event.id, null));
    case 'charge.expired':
      return id === undefined ? undefined : charge(object, card, id, fact('cancelled', 'expired', null));
    case 'charge.refunded': {
      const total = amount('amount_refunded');
      return id === undefined ? undefined : charge(object, card, id, fact('refund_total', `total:${total}`, total));
    }
    case 'refund.created':
    case 'refund.updated':
    case 'refund.failed':
    case 'charge.refund.updated': {
      const chargeId = str(object['charge']);
      if (chargeId === undefined || id === undefined) return undefined;
      const failed = object['status'] === 'failed' || object['status'] === 'canceled';
      return related(chargeId, fact(failed ? 'refund_failed' : 'refunded', id, amount('amount')));
    }
    case 'charge.dispute.created':
    case 'charge.dispute.closed': {
      const chargeId = str(object['charge']);
      if (chargeId === undefined || id === undefined) return undefined;
      if (event.type === 'charge.dispute.created') return related(chargeId, fact('chargeback', id, amount('amount')));
      return object['status'] === 'won'
        ? related(chargeId, fact('chargeback_reversed', id, amount('amount')))
        : undefined;
    }
    default:
      return undefined;
  }
}

/** A charge event: it carries the card and the channel. */
function charge(
  object: StripeObject,
  { fingerprint, storedToken }: { fingerprint: string | undefined; storedToken: string | undefined },
  id: string,
  ...facts: EventFact[]
): PaymentEffect {
  const details = (object['payment_method_details'] ?? {}) as StripeObject;
  const present = details['card_present'] as StripeObject | undefined;
  const card = (present ?? details['card']) as StripeObject | undefined;
  const identifiers: CardInput[] =
    fingerprint === undefined ? [] : [{ kind: 'alias', namespace: 'stripe.fingerprint', value: fingerprint }];
  const metadata = (object['metadata'] ?? {}) as StripeObject;
  // Stripe's `last4` is the card's, `wallet.dynamic_last4` the device token's (card-present wallets
  // have none); the fingerprint is the card's, so a wallet payment lands on the card's shopper.
  const wallet = card?.['wallet'] as StripeObject | undefined;
  const walletType = str(wallet?.['type']);
  return {
    paymentExternalId: id,
    facts,
    card: identifiers,
    cardToken: storedToken,
    last4: lastFour(card?.['last4']),
    ...(walletType === undefined || walletType === 'unknown'
      ? {}
      : { wallet: { type: walletTypeOf(walletType), tokenLast4: lastFour(wallet?.['dynamic_last4']) } }),
    details: {
      channel: present === undefined ? 'online' : 'in_store',
      storeId: str(metadata['store_id']),
      terminalId: str(present?.['terminal_id'] ?? metadata['terminal_id']),
      merchantReference: str(metadata['order_id'] ?? object['description']),
    },
  };
}

/** A refund or dispute: it names the charge, and knows nothing of card or channel. */
function related(chargeId: string, fact: EventFact): PaymentEffect {
  return {
    paymentExternalId: chargeId,
    facts: [fact],
    card: [],
    cardToken: undefined,
    last4: undefined,
    details: { channel: undefined, storeId: undefined, terminalId: undefined, merchantReference: undefined },
  };
}

function str(value: unknown): string | undefined {
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}
