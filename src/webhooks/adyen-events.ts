/**
 * Adyen standard notifications as payment events: one per `NotificationRequestItem`.
 *
 * Event codes (see docs/webhooks in README): AUTHORISATION (by `success`), CAPTURE, CAPTURE_FAILED,
 * CANCELLATION and TECHNICAL_CANCEL, CANCEL_OR_REFUND (a cancel when nothing was captured, otherwise
 * a refund: decided by the payment's facts, not by arrival order), REFUND and REFUND_WITH_DATA
 * (partial refunds each have their own pspReference), REFUND_FAILED and REFUNDED_REVERSED, CHARGEBACK
 * and SECOND_CHARGEBACK, CHARGEBACK_REVERSED. Any other code is stored and acknowledged, no effect.
 */
import type { CardInput } from '../cards/vault-service.js';
import type { PaymentEffect, PaymentEventInput } from '../payments/payment-event.js';
import type { FactKind, PaymentChannel } from '../payments/payment-state.js';

export interface AdyenItem {
  readonly eventCode: string;
  readonly success: string;
  readonly pspReference: string;
  readonly originalReference?: string;
  readonly merchantAccountCode: string;
  readonly merchantReference?: string;
  readonly eventDate?: string;
  readonly amount?: { readonly value?: number; readonly currency?: string };
  readonly additionalData?: Readonly<Record<string, unknown>>;
  readonly [other: string]: unknown;
}

/** [fact kind when success is "true", when "false"]; undefined = no effect. */
const EVENT_CODES: Readonly<Record<string, readonly [FactKind | undefined, FactKind | undefined]>> = {
  AUTHORISATION: ['authorised', 'authorisation_failed'],
  CAPTURE: ['captured', 'capture_failed'],
  CAPTURE_FAILED: ['capture_failed', undefined],
  CANCELLATION: ['cancelled', undefined],
  TECHNICAL_CANCEL: ['cancelled', undefined],
  CANCEL_OR_REFUND: ['cancel_or_refund', undefined],
  REFUND: ['refunded', 'refund_failed'],
  REFUND_WITH_DATA: ['refunded', 'refund_failed'],
  REFUND_FAILED: ['refund_failed', undefined],
  REFUNDED_REVERSED: ['refund_failed', undefined],
  CHARGEBACK: ['chargeback', undefined],
  SECOND_CHARGEBACK: ['chargeback', undefined],
  CHARGEBACK_REVERSED: ['chargeback_reversed', undefined],
};

const CHANNELS: Readonly<Record<string, PaymentChannel>> = {
  Ecommerce: 'online',
  ContAuth: 'online',
  Moto: 'call_centre',
  POS: 'in_store',
};

/** `receivedAt` dates an item that carries no (valid) `eventDate`. */
export function adyenEvent(item: AdyenItem, receivedAt: Date): PaymentEventInput {
  const success = item.success === 'true';
  const kind = EVENT_CODES[item.eventCode]?.[success ? 0 : 1];
  const eventKey = `${item.pspReference}:${item.eventCode}:${item.success}`;
  const stored = { ...item, additionalData: withoutSignature(item.additionalData) };
  return {
    provider: 'adyen',
    eventKey,
    eventType: item.eventCode,
    effect: kind === undefined ? undefined : effect(item, kind, receivedAt),
    storedPayload: () => stored,
  };
}

function effect(item: AdyenItem, kind: FactKind, receivedAt: Date): PaymentEffect {
  const data = item.additionalData ?? {};
  const text = (name: string): string | undefined => {
    const value = data[name];
    return typeof value === 'string' && value.length > 0 ? value : undefined;
  };
  const isAuthorisation = item.eventCode === 'AUTHORISATION';
  const paymentExternalId = isAuthorisation ? item.pspReference : (item.originalReference ?? item.pspReference);
  // One authorisation per payment; each modification is keyed by its own pspReference.
  const key = kind === 'authorised' ? 'auth' : item.pspReference;
  const amount = typeof item.amount?.value === 'number' ? item.amount.value : null;
  const card: CardInput[] = [];
  const par = text('PaymentAccountReference');
  const alias = text('alias');
  if (par !== undefined) card.push({ kind: 'par', par });
  if (alias !== undefined) card.push({ kind: 'alias', namespace: 'adyen.alias', value: alias });
  const interaction = text('shopperInteraction');
  const summary = text('cardSummary');
  return {
    paymentExternalId,
    facts: [
      {
        kind,
        key,
        amount: kind === 'authorisation_failed' || kind === 'cancelled' ? null : amount,
        currency: kind === 'authorisation_failed' || kind === 'cancelled' ? null : (item.amount?.currency ?? null),
        occurredAt: parseDate(item.eventDate, receivedAt),
      },
    ],
    card,
    cardToken: undefined,
    last4: summary !== undefined && /^\d{4}$/.test(summary) ? summary : undefined,
    details: {
      channel: interaction === undefined ? undefined : CHANNELS[interaction],
      storeId: text('store') ?? (typeof item['store'] === 'string' ? item['store'] : undefined),
      terminalId: text('terminalId'),
      merchantReference: item.merchantReference,
    },
  };
}

function parseDate(value: string | undefined, fallback: Date): Date {
  const parsed = value === undefined ? Number.NaN : Date.parse(value);
  return Number.isNaN(parsed) ? fallback : new Date(parsed);
}

function withoutSignature(data: Readonly<Record<string, unknown>> | undefined): Record<string, unknown> | undefined {
  if (data === undefined) return undefined;
  const rest = { ...data };
  delete rest['hmacSignature'];
  return rest;
}
