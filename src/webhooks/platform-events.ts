/**
 * The platform gateway's canonical event (`PlatformPaymentEvent` in openapi.yaml) as a payment event.
 * The body has already been verified (Standard Webhooks) and validated against the contract.
 *
 * Card data (docs/card-data.md): the card leaves here (the inbox keeps the token it resolved to); the
 * free text (`merchantReference`, `storeId`, `terminalId`) passes the card-data guard, masked to its
 * last four and named in `masked`, and the effect is computed from the masked text. The ids
 * (`payment.id`, refund and chargeback ids) are identifiers, not free text, and are kept as sent: a
 * numeric order id passes Luhn one time in ten, and masking it would lose what it identifies (the
 * database guard exempts exactly these paths; docs/card-data.md). An id holding a card number never
 * reaches here: the handler refuses the delivery (422 CARD_NUMBER_NOT_ALLOWED, webhook-handlers.ts).
 */
import { maskCardDataDeep } from '../card-data/card-data-guard.js';
import type { CardInput, CardUpdateRef } from '../cards/vault-service.js';
import { AppError } from '../errors/app-error.js';
import type { Schemas } from '../http/contract.js';
import type { EventFact, PaymentEventInput } from '../payments/payment-event.js';
import type { FactKind } from '../payments/payment-state.js';

/** The body as openapi.yaml declares it (generated: src/http/api-types.ts). */
export type PlatformPaymentEvent = Schemas['PlatformPaymentEvent'];
export type PlatformCardUpdatedEvent = Schemas['PlatformCardUpdatedEvent'];
export type PlatformWebhookEvent = Schemas['PlatformWebhookEvent'];
type PlatformCardRef = Schemas['PlatformCardRef'];

/**
 * A wallet payment names the plastic card by PAR (or token): a PAN sent with a wallet is the device
 * token's number, which must never become a card. The platform is bound by our contract: refused.
 */
export function refuseWalletPan(event: PlatformPaymentEvent): void {
  if (event.payment.wallet !== undefined && event.card !== undefined && 'pan' in event.card) {
    throw new AppError('WALLET_PAYMENT_NEEDS_PAR', {
      detail: 'A wallet payment names its card by PAR or token; the device token is never a card.',
    });
  }
}

/**
 * A `card.updated` event (card updater): no payment; `card` replaces `previous` in the vault. The inbox
 * keeps the type, the time, the reason and, once applied, the new card's token: never a PAN or a PAR.
 */
export function platformCardUpdate(raw: PlatformCardUpdatedEvent, webhookId: string): PaymentEventInput {
  const stored = {
    type: raw.type,
    occurredAt: raw.occurredAt,
    ...(raw.reason === undefined ? {} : { reason: raw.reason }),
  };
  return {
    provider: 'platform',
    eventKey: webhookId,
    eventType: raw.type,
    effect: undefined,
    cardUpdate: { previous: cardRef(raw.previous), next: cardRef(raw.card) },
    storedPayload: (cardToken) => (cardToken === undefined ? stored : { ...stored, card: { token: cardToken } }),
  };
}

function cardRef(ref: PlatformCardRef): CardUpdateRef {
  if ('token' in ref) return { kind: 'token', token: ref.token };
  if ('par' in ref) return { kind: 'par', par: ref.par };
  return {
    kind: 'pan',
    pan: ref.pan,
    ...(ref.expiryMonth === undefined ? {} : { expiryMonth: ref.expiryMonth }),
    ...(ref.expiryYear === undefined ? {} : { expiryYear: ref.expiryYear }),
  };
}

type PlatformEventType = PlatformPaymentEvent['type'];

const ID_POINTERS: ReadonlySet<string> = new Set(['/payment/id', '/refund/id', '/chargeback/id']);

export function platformEvent(raw: PlatformPaymentEvent, webhookId: string): PaymentEventInput {
  const rest: Omit<PlatformPaymentEvent, 'card'> & { card?: unknown } = { ...raw };
  delete rest.card;
  const { value: masking, masked: maskedAnywhere } = maskCardDataDeep(rest);
  const masked = maskedAnywhere.filter((pointer) => !ID_POINTERS.has(pointer));
  // Ids are identifiers, not free text: kept as sent (a numeric order id may well pass Luhn).
  const projected: Omit<PlatformPaymentEvent, 'card'> = {
    ...masking,
    payment: { ...masking.payment, id: raw.payment.id },
    ...(raw.refund === undefined ? {} : { refund: { ...raw.refund } }),
    ...(raw.chargeback === undefined ? {} : { chargeback: { ...raw.chargeback } }),
  };
  const body: PlatformPaymentEvent = { ...projected, ...(raw.card === undefined ? {} : { card: raw.card }) };
  const { payment } = body;
  const value = payment.amount.value;
  const fact = (kind: FactKind, key: string, amount: number | null): EventFact => ({
    kind,
    key,
    amount,
    currency: amount === null ? null : payment.amount.currency,
    occurredAt: new Date(body.occurredAt),
  });
  // The schema requires `refund` for the refund types; a chargeback without its own id is keyed by
  // this delivery, so two distinct chargeback deliveries stay two facts.
  const refund = body.refund ?? { id: webhookId, amount: value };
  const chargeback = body.chargeback ?? { id: webhookId, amount: value };
  const facts: Record<PlatformEventType, EventFact> = {
    'payment.authorised': fact('authorised', 'auth', value),
    'payment.authorisation_failed': fact('authorisation_failed', webhookId, null),
    'payment.captured': fact('captured', 'capture', value),
    'payment.cancelled': fact('cancelled', 'cancel', null),
    'payment.refunded': fact('refunded', refund.id, refund.amount),
    'payment.refund_failed': fact('refund_failed', refund.id, refund.amount),
    'payment.chargeback': fact('chargeback', chargeback.id, chargeback.amount),
    'payment.chargeback_reversed': fact('chargeback_reversed', chargeback.id, chargeback.amount),
  };
  const card = body.card;
  const identifiers: CardInput[] = [];
  if (card !== undefined && 'pan' in card) {
    identifiers.push({
      kind: 'pan',
      pan: card.pan,
      ...(card.expiryMonth === undefined ? {} : { expiryMonth: card.expiryMonth }),
      ...(card.expiryYear === undefined ? {} : { expiryYear: card.expiryYear }),
    });
  } else if (card !== undefined && 'par' in card) {
    identifiers.push({ kind: 'par', par: card.par });
  }
  return {
    provider: 'platform',
    eventKey: webhookId,
    eventType: body.type,
    masked,
    effect: {
      paymentExternalId: payment.id,
      facts: [facts[body.type]],
      card: identifiers,
      cardToken: card !== undefined && 'token' in card ? card.token : undefined,
      // The vault keeps the PAN's last 4 on the card itself.
      last4: undefined,
      ...(payment.wallet === undefined
        ? {}
        : { wallet: { type: payment.wallet.type, tokenLast4: payment.wallet.tokenLast4 } }),
      details: {
        channel: payment.channel,
        storeId: payment.storeId,
        terminalId: payment.terminalId,
        merchantReference: payment.merchantReference,
      },
    },
    storedPayload(cardToken) {
      // The PAN leaves here: the inbox keeps the token it resolved to, never card data.
      return cardToken === undefined ? projected : { ...projected, card: { token: cardToken } };
    },
  };
}
