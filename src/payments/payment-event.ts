/**
 * What every gateway adapter turns a verified delivery into: one provider event, with at most one
 * payment fact, the card identifiers it carries (best first) and the payment's descriptive details.
 * Adapters are pure mappings; the payment service stores and applies.
 */
import type { CardInput, CardUpdateInput } from '../cards/vault-service.js';
import type { FactKind, PaymentChannel } from './payment-state.js';

export type Provider = 'platform' | 'adyen' | 'stripe';

export interface PaymentEventInput {
  readonly provider: Provider;
  /** The provider's idempotency key for this event (unique per provider). */
  readonly eventKey: string;
  readonly eventType: string;
  /** Absent for events with no payment effect (unknown types): stored, acknowledged, ignored. */
  readonly effect: PaymentEffect | undefined;
  /**
   * The delivery as it is stored in the inbox, given the card token it resolved to. A PAN never
   * reaches this: adapters replace card data by the token.
   */
  storedPayload(cardToken: string | undefined): unknown;
  /** JSON pointers of the fields the card-data guard masked or dropped (shown in the admin inbox). */
  readonly masked?: readonly string[];
  /**
   * Set when the verified delivery must not be applied (an Adyen item that could be re-split, say):
   * stored as `rejected` with this code, acknowledged, never applied nor replayed.
   */
  readonly rejection?: string;
  /**
   * A card-updater event (no payment): `next` replaces `previous` in the vault before the inbox row is
   * written; the row records the outcome (`applied`, or `ignored`/`failed` with its code).
   */
  readonly cardUpdate?: Omit<CardUpdateInput, 'source'>;
}

export interface PaymentEffect {
  /** The gateway's payment reference; unique per provider. */
  readonly paymentExternalId: string;
  /** Usually one; a Stripe charge that succeeded already captured is two. */
  readonly facts: readonly EventFact[];
  /** Card identifiers, best first (PAN, then PAR, then gateway aliases); empty when none is sent. */
  readonly card: readonly CardInput[];
  /** An already-issued card token (platform events may carry one instead of card data). */
  readonly cardToken: string | undefined;
  readonly last4: string | undefined;
  /**
   * Set when the payment was made with a device/network token (a phone wallet): the card is the
   * plastic one its PAR names, the token's last 4 and the wallet are kept on the payment only.
   */
  readonly wallet?: WalletUse;
  readonly details: PaymentDetails;
}

/** The wallets a payment may name (payments.wallet_type's check constraint, migration 20261210500000). */
export const WALLET_TYPES = [
  'apple_pay',
  'google_pay',
  'samsung_pay',
  'click_to_pay',
  'masterpass',
  'visa_checkout',
  'amex_express_checkout',
  'link',
  'other',
] as const;

export type WalletType = (typeof WALLET_TYPES)[number];

export interface WalletUse {
  readonly type: WalletType;
  /** The last four digits of the device/network token (never of the card). */
  readonly tokenLast4: string | undefined;
}

/** A wallet name as a gateway spells it, mapped to ours (`other` for one we do not list). */
export function walletTypeOf(name: string): WalletType {
  const normalised = name.toLowerCase().replace(/[^a-z]/g, '');
  const known: Record<string, WalletType> = {
    applepay: 'apple_pay',
    googlepay: 'google_pay',
    paywithgoogle: 'google_pay',
    androidpay: 'google_pay',
    samsungpay: 'samsung_pay',
    clicktopay: 'click_to_pay',
    masterpass: 'masterpass',
    visacheckout: 'visa_checkout',
    amexexpresscheckout: 'amex_express_checkout',
    link: 'link',
  };
  return known[normalised] ?? 'other';
}

/** Four digits, or undefined. */
export function lastFour(value: unknown): string | undefined {
  return typeof value === 'string' && /^[0-9]{4}$/.test(value) ? value : undefined;
}

export interface EventFact {
  readonly kind: FactKind;
  readonly key: string;
  readonly amount: number | null;
  readonly currency: string | null;
  readonly occurredAt: Date;
}

export interface PaymentDetails {
  readonly channel: PaymentChannel | undefined;
  /**
   * The channel comes from unsigned data (Adyen `additionalData`): it may set the channel of a
   * payment that has none, never change one already known.
   */
  readonly channelIsHint?: boolean;
  readonly storeId: string | undefined;
  readonly terminalId: string | undefined;
  readonly merchantReference: string | undefined;
}

/** An event as the inbox stored it (projected, PAN-free), to be mapped again for a replay. */
export interface StoredInboxEvent {
  readonly provider: Provider;
  readonly event_key: string;
  readonly payload: unknown;
  readonly received_at: Date;
}

/**
 * Maps a stored event again by the adapter that first received it. The adapters live in src/webhooks,
 * above payments: the composition root hands this to the inbox's replay.
 */
export type StoredEventMapper = (
  event: StoredInboxEvent,
  stored: { readonly hasFacts: boolean },
) => Promise<PaymentEventInput>;
