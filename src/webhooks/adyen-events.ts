/**
 * Adyen standard notifications as payment events: one per `NotificationRequestItem`.
 *
 * Event codes (see docs/webhooks in README): AUTHORISATION (by `success`), CAPTURE, CAPTURE_FAILED,
 * CANCELLATION and TECHNICAL_CANCEL, CANCEL_OR_REFUND (a cancel when nothing was captured, otherwise
 * a refund: decided by the payment's facts, not by arrival order), REFUND and REFUND_WITH_DATA
 * (partial refunds each have their own pspReference), REFUND_FAILED and REFUNDED_REVERSED, CHARGEBACK
 * and SECOND_CHARGEBACK, CHARGEBACK_REVERSED. Any other code is stored and acknowledged, no effect.
 *
 * Card data (docs/card-data.md): the item is **projected**, never kept: only the fields listed in
 * {@link projectAdyenItem} are stored, every kept text field passes the card-data guard (a PAN is
 * masked to its last four and the field named in `masked`), the card identifiers (`alias`, PAR) are
 * replaced by the card token they resolved to, and everything else (cardHolderName, cardBin, cvc
 * results, track data, unknown fields) is dropped.
 *
 * Re-split forgery: the HMAC joins eight fields with `:` and no escaping, so an item is applied only
 * when `pspReference`/`originalReference` are Adyen references (16 alphanumerics) and no signed text
 * field holds `:` or `\`; then the signed string parses back one way only. Anything else is stored as
 * `rejected` with its code (acknowledged so that Adyen stops retrying, never applied). So is an item
 * whose `eventCode` is not upper-case letters and `_` (`ADYEN_EVENT_CODE_INVALID`): the code is part
 * of the event key, which is exempt from the database guard, and a rejected item is keyed by its
 * signature only.
 *
 * `additionalData` is not signed: what it says (alias, PAR, shopperInteraction, store, terminal) is a
 * hint. It can name the card of a payment seen for the first time, never move a payment to another
 * shopper afterwards, and never change the channel of a payment that already has one
 * (`channelIsHint`).
 */
import { luhnValid, maskCardData, maskCardDataDeep } from '../card-data/card-data-guard.js';
import type { CardInput } from '../cards/vault-service.js';
import { lastFour, type PaymentEffect, type PaymentEventInput, type WalletType } from '../payments/payment-event.js';
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

/** The notification envelope as validated against openapi.yaml (AdyenNotification). */
export interface AdyenNotification {
  readonly live?: string;
  readonly notificationItems: readonly { readonly NotificationRequestItem: AdyenItem }[];
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

/** Adyen's PSP reference: 16 alphanumerics. */
export const ADYEN_REFERENCE = /^[A-Za-z0-9]{16}$/;

/**
 * Adyen's event codes are upper-case words joined by `_` (AUTHORISATION, CANCEL_OR_REFUND,
 * REPORT_AVAILABLE, NOTIFICATIONTEST…): anything else is no Adyen event code, and a code is part of the
 * stored event key, so a digit (a card number) never reaches it.
 */
export const ADYEN_EVENT_CODE = /^[A-Z_]{1,64}$/;

/** The `additionalData` entries kept (as hints), after the guard. Card identifiers are never kept. */
const KEPT_ADDITIONAL_DATA = ['shopperInteraction', 'store', 'terminalId', 'paymentMethodVariant'] as const;

/** Adyen's stored payment method (token) reference, as the additional data names it. */
const RECURRING_REFERENCE = 'recurring.recurringDetailReference';

/**
 * Adyen's Real Time Account Updater result on a successful authorisation (`additionalData.
 * realtimeAccountUpdaterStatus`, "Realtime Account Updater Status" in the Customer Area's additional
 * data): `CardChanged` (a new card number behind the same stored token) or `CardExpiryChanged`. The old
 * card is the one holding the stored token's reference (`adyen.recurring`), the new one the item's
 * PAR or alias. Unsigned, like all of additionalData: see docs/card-data.md for what it may decide.
 */
function accountUpdate(
  item: Record<string, unknown>,
  rawData: Readonly<Record<string, unknown>> | undefined,
  card: readonly CardInput[],
): PaymentEventInput['cardUpdate'] {
  const status = rawData?.['realtimeAccountUpdaterStatus'];
  if (typeof status !== 'string' || !/CardChanged|CardExpiryChanged/.test(status)) return undefined;
  if (item['eventCode'] !== 'AUTHORISATION' || item['success'] !== 'true') return undefined;
  const previous = card.find((c) => c.kind === 'alias' && c.namespace === 'adyen.recurring');
  const next = card.find((c) => c !== previous);
  if (previous === undefined || next === undefined) return undefined;
  const expiry = /^(\d{1,2})\/(\d{4})$/.exec(typeof rawData?.['expiryDate'] === 'string' ? rawData['expiryDate'] : '');
  return {
    previous,
    next,
    ...(expiry === null ? {} : { expiry: { month: Number(expiry[1]), year: Number(expiry[2]) } }),
  };
}

/** An EMVCo Payment Account Reference: 29 upper-case alphanumerics. Anything else is not used. */
const PAR = /^[A-Z0-9]{29}$/;

/**
 * The wallet a payment method variant names (`visa_applepay`, `mc_googlepay`, `paywithgoogle`,
 * `amex_samsungpay`…), or undefined for a plain card.
 */
export function adyenWallet(variant: string | undefined): WalletType | undefined {
  if (variant === undefined) return undefined;
  const v = variant.toLowerCase();
  if (v.includes('applepay')) return 'apple_pay';
  if (v.includes('googlepay') || v.includes('paywithgoogle')) return 'google_pay';
  if (v.includes('samsungpay')) return 'samsung_pay';
  if (v.includes('clicktopay')) return 'click_to_pay';
  return undefined;
}

/**
 * The item's references that may be a PAN: all digits and Luhn-valid (real Adyen references are often
 * 16 digits, one in ten Luhn-valid, so these are asked of the vault, never refused as such).
 */
export function referencesThatMayBeCards(item: AdyenItem): string[] {
  return [item.pspReference, item.originalReference].filter(
    (ref): ref is string => typeof ref === 'string' && /^[0-9]{12,19}$/.test(ref) && luhnValid(ref),
  );
}

/** Why an item cannot be applied, or undefined. Checked after its signature verified. */
export function adyenRejection(item: AdyenItem): string | undefined {
  if (typeof item.pspReference !== 'string' || !ADYEN_REFERENCE.test(item.pspReference)) {
    return 'ADYEN_REFERENCE_INVALID';
  }
  const original = item.originalReference;
  if (original !== undefined && original !== '' && (typeof original !== 'string' || !ADYEN_REFERENCE.test(original))) {
    return 'ADYEN_REFERENCE_INVALID';
  }
  if (typeof item.eventCode !== 'string' || !ADYEN_EVENT_CODE.test(item.eventCode)) {
    return 'ADYEN_EVENT_CODE_INVALID';
  }
  const signedText = [
    item.merchantAccountCode,
    item.merchantReference,
    item.amount?.currency,
    item.eventCode,
    item.success,
  ];
  if (signedText.some((value) => typeof value === 'string' && /[:\\]/.test(value))) {
    return 'ADYEN_SIGNED_FIELD_SEPARATOR';
  }
  return undefined;
}

export interface AdyenEventOptions {
  /** The item comes from the inbox (already projected): its card is the stored token. */
  readonly stored?: boolean;
  /**
   * The item's pspReference or originalReference is the PAN of a card in the vault (the handler asked
   * the vault): rejected as ADYEN_REFERENCE_IS_CARD_NUMBER, its references stored masked.
   */
  readonly referenceIsKnownCard?: boolean;
}

/** `receivedAt` dates an item that carries no (valid) `eventDate`. */
export function adyenEvent(item: AdyenItem, receivedAt: Date, options: AdyenEventOptions = {}): PaymentEventInput {
  const rejection =
    adyenRejection(item) ?? (options.referenceIsKnownCard === true ? 'ADYEN_REFERENCE_IS_CARD_NUMBER' : undefined);
  const { value: projected, masked } = maskCardDataDeep(projectAdyenItem(item, receivedAt));
  const stored: Record<string, unknown> = {
    ...projected,
    // Validated references are ids, not free text: a 16-digit reference stays as Adyen sent it.
    ...(rejection === undefined ? { pspReference: item.pspReference } : {}),
    ...(rejection === undefined && typeof item.originalReference === 'string' && item.originalReference !== ''
      ? { originalReference: item.originalReference }
      : {}),
  };
  const success = item.success === 'true';
  const kind = rejection === undefined ? EVENT_CODES[item.eventCode]?.[success ? 0 : 1] : undefined;
  const storedToken = options.stored === true ? storedCardToken(item) : undefined;
  const paymentEffect =
    kind === undefined
      ? undefined
      : effect(stored, options.stored === true ? {} : item.additionalData, kind, receivedAt, storedToken);
  const cardUpdate =
    paymentEffect === undefined || options.stored === true
      ? undefined
      : accountUpdate(stored, item.additionalData, paymentEffect.card);
  return {
    provider: 'adyen',
    eventKey: rejection === undefined ? `${item.pspReference}:${item.eventCode}:${item.success}` : rejectedKey(item),
    ...(cardUpdate === undefined ? {} : { cardUpdate }),
    eventType: typeof stored['eventCode'] === 'string' ? stored['eventCode'] : 'UNKNOWN',
    effect: paymentEffect,
    masked,
    ...(rejection === undefined ? {} : { rejection }),
    storedPayload: (cardToken) => (cardToken === undefined ? stored : { ...stored, card: { token: cardToken } }),
  };
}

/**
 * The allow-list: what the service needs of an item, nothing else. The references are re-added by
 * the caller once validated; here they pass the guard like any text (a rejected item keeps them masked).
 */
export function projectAdyenItem(item: AdyenItem, receivedAt: Date): Record<string, unknown> {
  const data = item.additionalData ?? {};
  const hints: Record<string, string> = {};
  for (const name of KEPT_ADDITIONAL_DATA) {
    const value = data[name];
    if (typeof value === 'string' && value.length > 0) hints[name] = value;
  }
  const summary = data['cardSummary'];
  if (typeof summary === 'string' && /^\d{4}$/.test(summary)) hints['cardSummary'] = summary;
  const text = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
  const amount = item.amount;
  return dropUndefined({
    eventCode: text(item.eventCode),
    success: text(item.success),
    pspReference: text(item.pspReference),
    originalReference: text(item.originalReference),
    merchantAccountCode: text(item.merchantAccountCode),
    merchantReference: text(item.merchantReference),
    eventDate: parseDate(text(item.eventDate), receivedAt).toISOString(),
    amount:
      amount === undefined
        ? undefined
        : dropUndefined({
            value: typeof amount.value === 'number' ? amount.value : undefined,
            currency: text(amount.currency),
          }),
    paymentMethod: text(item['paymentMethod']),
    additionalData: hints,
  });
}

function effect(
  item: Record<string, unknown>,
  rawData: Readonly<Record<string, unknown>> | undefined,
  kind: FactKind,
  receivedAt: Date,
  storedToken: string | undefined,
): PaymentEffect {
  const hints = (item['additionalData'] ?? {}) as Record<string, unknown>;
  const text = (source: Readonly<Record<string, unknown>> | undefined, name: string): string | undefined => {
    const value = source?.[name];
    return typeof value === 'string' && value.length > 0 ? value : undefined;
  };
  const eventCode = item['eventCode'] as string;
  const pspReference = item['pspReference'] as string;
  const originalReference = text(item, 'originalReference');
  const isAuthorisation = eventCode === 'AUTHORISATION';
  const paymentExternalId = isAuthorisation ? pspReference : (originalReference ?? pspReference);
  // One authorisation per payment; each modification is keyed by its own pspReference.
  const key = kind === 'authorised' ? 'auth' : pspReference;
  const amountOf = item['amount'] as { value?: number; currency?: string } | undefined;
  const amount = typeof amountOf?.value === 'number' ? amountOf.value : null;
  const card: CardInput[] = [];
  // Identifiers are read from the delivery itself (they are never stored): hints, see the header.
  // Adyen documents `paymentAccountReference`; earlier integrations sent `PaymentAccountReference`.
  const parHint = text(rawData, 'paymentAccountReference') ?? text(rawData, 'PaymentAccountReference');
  const par = parHint !== undefined && PAR.test(parHint) ? parHint : undefined;
  const alias = text(rawData, 'alias');
  const wallet = adyenWallet(text(hints, 'paymentMethodVariant'));
  const summary = lastFour(text(hints, 'cardSummary'));
  if (par !== undefined) card.push({ kind: 'par', par });
  // A wallet payment's alias and card summary are the device token's: the token is never a card, so
  // only the PAR (the plastic card's) names the card; without one the payment has no card.
  if (alias !== undefined && wallet === undefined) card.push({ kind: 'alias', namespace: 'adyen.alias', value: alias });
  // Adyen's stored-card token stays the same when the Account Updater changes the card behind it.
  const recurring = text(rawData, RECURRING_REFERENCE);
  if (recurring !== undefined && ADYEN_REFERENCE.test(recurring) && wallet === undefined) {
    card.push({ kind: 'alias', namespace: 'adyen.recurring', value: recurring });
  }
  const interaction = text(hints, 'shopperInteraction');
  return {
    paymentExternalId,
    facts: [
      {
        kind,
        key,
        amount: kind === 'authorisation_failed' || kind === 'cancelled' ? null : amount,
        currency: kind === 'authorisation_failed' || kind === 'cancelled' ? null : (amountOf?.currency ?? null),
        occurredAt: parseDate(text(item, 'eventDate'), receivedAt),
      },
    ],
    card,
    cardToken: storedToken,
    last4: wallet === undefined ? summary : undefined,
    ...(wallet === undefined ? {} : { wallet: { type: wallet, tokenLast4: summary } }),
    details: {
      channel: interaction === undefined ? undefined : CHANNELS[interaction],
      channelIsHint: true,
      storeId: text(hints, 'store'),
      terminalId: text(hints, 'terminalId'),
      merchantReference: text(item, 'merchantReference'),
    },
  };
}

function storedCardToken(item: AdyenItem): string | undefined {
  const card = item['card'] as { token?: unknown } | undefined;
  return typeof card?.token === 'string' ? card.token : undefined;
}

/**
 * A rejected item is keyed by its signature (verified, so base64 of an HMAC): a redelivery of it is a
 * duplicate, never a new row. Never by its references or its event code, which may hold a card
 * number; the signature passes the guard too (masking is deterministic: a redelivery keeps its key).
 */
function rejectedKey(item: AdyenItem): string {
  const signature = item.additionalData?.['hmacSignature'];
  return `rejected:${typeof signature === 'string' ? maskCardData(signature) : ''}`;
}

function parseDate(value: string | undefined, fallback: Date): Date {
  const parsed = value === undefined ? Number.NaN : Date.parse(value);
  return Number.isNaN(parsed) ? fallback : new Date(parsed);
}

function dropUndefined<T extends Record<string, unknown>>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
