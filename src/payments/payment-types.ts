/**
 * The shapes the payment service, its planner and its store share: a payment row as stored, an
 * event on its way into the inbox, and what the planner decides for it.
 */
import type { Knex } from 'knex';
import type { CardView } from '../cards/vault-service.js';
import type { PaymentEventInput, Provider, WalletType } from './payment-event.js';
import type { PaymentChannel, PaymentState, PaymentTransition } from './payment-state.js';

export type InboxState = 'applied' | 'parked' | 'failed' | 'ignored' | 'rejected';

/** Handed to listeners inside the transaction that made the change: their writes commit with it. */
export interface PaymentTransitionEvent extends PaymentTransition {
  readonly paymentId: string;
  /** The gateway and its id for the payment (what a missing-points claim names). */
  readonly provider: string;
  readonly externalId: string;
  readonly shopperRef: string | null;
  readonly cardToken: string | null;
  readonly channel: string | null;
  /** The store the payment was made in (the authorisation's, when it says). */
  readonly storeId: string | null;
  /** The inbox event whose fact caused it. */
  readonly inboxId: string;
  /**
   * The payment row was created by this transaction: nothing can refer to it yet (no lot, no parked
   * event), so a listener may skip looking.
   */
  readonly paymentCreated: boolean;
}

/**
 * Receives every transition of a committed-together batch at once (at most one per payment), inside
 * that batch's transaction, so a listener can do its work set-based.
 */
export type PaymentTransitionListener = (
  trx: Knex.Transaction,
  events: readonly PaymentTransitionEvent[],
) => Promise<void>;

export interface IngestResult {
  readonly inboxId: string;
  readonly duplicate: boolean;
  readonly state: InboxState;
}

export interface PaymentRow {
  readonly id: string;
  readonly provider: Provider;
  readonly external_id: string;
  readonly state: PaymentState;
  readonly card_token: string | null;
  readonly shopper_ref: string | null;
  readonly card_last4: string | null;
  readonly wallet_type: WalletType | null;
  readonly token_last4: string | null;
  readonly channel: PaymentChannel | null;
  readonly store_id: string | null;
  readonly terminal_id: string | null;
  readonly merchant_reference: string | null;
  readonly currency: string | null;
  readonly authorised_amount: number;
  readonly captured_amount: number;
  readonly refunded_amount: number;
  readonly charged_back_amount: number;
  readonly authorised_at: Date | null;
  readonly created_at: Date;
  readonly updated_at: Date;
}

/** A payment row locked (or created) by the batch's transaction. */
export type LockedPayment = PaymentRow & { readonly inserted: boolean };

/** One event on its way into the inbox (or a stored one being replayed). */
export interface IngestWork {
  readonly event: PaymentEventInput;
  readonly card: CardView | undefined;
  readonly secretIndex: number;
  /** The vault's outcome of a card-updater event (PaymentEventInput.cardUpdate). */
  readonly cardUpdate?: { readonly state: 'applied' | 'ignored' | 'failed'; readonly errorCode: string | null };
  /** Set when replaying: the inbox row exists and is locked by the caller. */
  readonly replayOf?: string;
}

/** What one event does, decided before anything of the batch is written. */
export interface Plan {
  readonly work: IngestWork;
  readonly inboxId: string;
  readonly state: InboxState;
  readonly errorCode: string | null;
  readonly payment: LockedPayment | undefined;
  /** Present when the event's facts are applied (not ignored, not failed). */
  readonly apply?: {
    readonly update: PaymentUpdate;
    readonly transition: PaymentTransitionEvent | undefined;
    /** The authorisation arrived: events parked behind it are applied now. */
    readonly releasesParked: boolean;
  };
}

/** The columns a plan writes to its payment row. */
export type PaymentUpdate = {
  readonly id: string;
  readonly state: PaymentState;
  readonly currency: string | null;
  readonly authorised_amount: number;
  readonly captured_amount: number;
  readonly refunded_amount: number;
  readonly charged_back_amount: number;
  readonly authorised_at: Date | null;
  readonly card_token: string | null;
  readonly shopper_ref: string | null;
  readonly card_last4: string | null;
  readonly wallet_type: WalletType | null;
  readonly token_last4: string | null;
  readonly channel: string | null;
  readonly store_id: string | null;
  readonly terminal_id: string | null;
  readonly merchant_reference: string | null;
  readonly updated_at: Date;
};
