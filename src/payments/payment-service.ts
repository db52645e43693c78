/**
 * Stores verified gateway events and applies them to payments, exactly once.
 *
 * Effects are applied in the same transaction as the inbox insert (not by a worker reading the
 * inbox): the response is sent only after that transaction commits, so an acknowledged event is
 * durable and applied, and an unacknowledged one left nothing behind and will be redelivered. The
 * inbox's unique (provider, event key) makes a redelivery a no-op; the payment row lock serialises
 * concurrent events of one payment across any number of instances; facts keyed by business key make
 * the same modification delivered under two event ids count once.
 *
 * Card identity is resolved before that transaction, through the vault (tokenise is idempotent: a
 * delivery that fails afterwards and is retried finds the same card).
 *
 * Domain failures (a fact in another currency, say) do not fail the delivery: the event is stored as
 * `failed` with its code, acknowledged, listed for operators and replayable. Anything else rolls the
 * whole transaction back and the gateway retries.
 */
import type { Knex } from 'knex';
import { appendAuditEvent } from '../audit/audit-log.js';
import type { Caller, CardView, VaultService } from '../cards/vault-service.js';
import { AppError } from '../errors/app-error.js';
import { GroupCommit } from '../db/group-commit.js';
import type { Page } from '../db/keyset-cursor.js';
import { newId } from '../ids/prefixed-id.js';
import type { PaymentEffect, PaymentEventInput } from './payment-event.js';
import { purchasesSince } from './payment-return-store.js';
import {
  addReturnFact,
  existingRefund,
  lockPaymentById,
  type ReturnFactInput,
  type ReturnFactOutcome,
} from './payment-returns.js';
import { paymentKey, paymentsToLock, planEvent } from './payment-planner.js';
import {
  findInboxEvent,
  inboxEventHasFacts,
  inboxHoldsEventKey,
  listInbox,
  listPurchases,
  type InboxFilter,
  type InboxRow,
  type PurchaseFilter,
} from './payment-read-store.js';
import {
  lockInboxForReplay,
  lockPayments,
  moveShopperPayments,
  releaseParked,
  storedFacts,
  storePlans,
} from './payment-store.js';
import type { IngestResult, IngestWork, InboxState, PaymentRow, PaymentTransitionListener } from './payment-types.js';

export { refundableOf, type ReturnFactInput, type ReturnFactOutcome } from './payment-returns.js';
export type {
  IngestResult,
  InboxState,
  PaymentRow,
  PaymentTransitionEvent,
  PaymentTransitionListener,
} from './payment-types.js';

/**
 * Maps a stored (projected, PAN-free) inbox payload back to an event, by the adapter that first
 * received it. The webhooks feature provides it (composition root): payments knows no gateway.
 */
export type StoredEventDecoder = (row: InboxRow, stored: StoredEventContext) => Promise<PaymentEventInput>;

/** What the decoder of a replay is told about the stored event. */
export interface StoredEventContext {
  /** Whether the event wrote facts already (it was applied): a fact keyed by its delivery exists. */
  readonly hasFacts: boolean;
}

export interface PaymentServiceOptions {
  readonly autoCaptureChannels: readonly string[];
  readonly listeners?: readonly PaymentTransitionListener[];
  readonly now?: () => Date;
  /** Needed by {@link PaymentService.replayStored}; absent, stored events cannot be replayed. */
  readonly decodeStored?: StoredEventDecoder;
  /** Group commit of concurrent deliveries; absent: one transaction per delivery. */
  readonly batch?: {
    readonly maxBatch: number;
    readonly concurrency: number;
    readonly onBatch?: (size: number) => void;
  };
}

/**
 * Moves a shopper's payments in the caller's transaction (a loyalty merge), without the rest of the
 * service: the loyalty feature is composed before payments, whose listener it provides.
 */
export function shopperPaymentsMover(now: () => Date = () => new Date()): {
  moveShopperPayments(trx: Knex.Transaction, fromShopper: string, toShopper: string): Promise<number>;
} {
  return {
    moveShopperPayments: (trx, fromShopper, toShopper) => moveShopperPayments(trx, fromShopper, toShopper, now()),
  };
}

const WEBHOOK_CALLER: Caller = { subject: 'system:webhooks', shopperRef: undefined, origin: 'webhook' };

export class PaymentService {
  private readonly now: () => Date;
  private readonly listeners: readonly PaymentTransitionListener[];
  private readonly group: GroupCommit<IngestWork, IngestResult, Knex.Transaction>;

  constructor(
    private readonly knex: Knex,
    private readonly vault: VaultService,
    private readonly options: PaymentServiceOptions,
  ) {
    this.now = options.now ?? (() => new Date());
    this.listeners = options.listeners ?? [];
    this.group = new GroupCommit(
      (work) => this.knex.transaction(work),
      (trx, works) => this.applyBatch(trx, works),
      {
        maxBatch: options.batch?.maxBatch ?? 1,
        concurrency: options.batch?.concurrency ?? 1,
        // Events of one payment (and redeliveries of one event) never share a batch.
        keyOf: ({ event }) =>
          event.effect === undefined
            ? `inbox ${event.provider} ${event.eventKey}`
            : `payment ${event.provider} ${event.effect.paymentExternalId}`,
        ...(options.batch?.onBatch === undefined ? {} : { onBatch: options.batch.onBatch }),
      },
    );
  }

  /**
   * Whether a delivery of `provider` is already stored under exactly `eventKey`. The webhooks ask it
   * for one case only: a UUID webhook-id that reads as a card number, which an earlier release stored
   * as sent and this one stores as its keyed digest; its redelivery must still be a duplicate.
   */
  async holdsDelivery(provider: PaymentEventInput['provider'], eventKey: string): Promise<boolean> {
    return inboxHoldsEventKey(this.knex, provider, eventKey);
  }

  /**
   * Stores a verified event and applies it; resolves once committed. Concurrent calls are committed
   * together (group commit), each answered only after the shared transaction commits.
   */
  async ingest(event: PaymentEventInput, secretIndex: number): Promise<IngestResult> {
    if (event.cardUpdate !== undefined && event.rejection === undefined) {
      // Idempotent by state in the vault (a redelivery changes nothing there), then recorded once. A
      // payment that carries an update (Adyen's Real Time Account Updater) then resolves its card as
      // usual, finding the new card where the update put it; its facts decide the inbox row's state.
      const { state, errorCode, card } = await this.vault.updateCard({ ...event.cardUpdate, source: event.provider });
      if (event.effect === undefined) {
        return this.group.submit({ event, card, secretIndex, cardUpdate: { state, errorCode } });
      }
    }
    const card = await this.resolveCard(event.effect);
    return this.group.submit({ event, card, secretIndex });
  }

  /**
   * Applies a stored event again (after a fix for what made it fail, say). Idempotent: facts already
   * present are not added twice, so replaying an applied event changes nothing.
   */
  async replay(inboxId: string, event: PaymentEventInput, actor: Caller): Promise<InboxState> {
    const card = await this.resolveCard(event.effect);
    return this.knex.transaction(async (trx) => {
      if (!(await lockInboxForReplay(trx, inboxId)))
        throw new AppError('NOT_FOUND', { detail: 'No such inbox event.' });
      if (event.effect === undefined || event.rejection !== undefined) throw new AppError('INBOX_EVENT_NOT_REPLAYABLE');
      const [result] = await this.applyBatch(trx, [{ event, card, secretIndex: 0, replayOf: inboxId }]);
      const state = (result as IngestResult).state;
      await appendAuditEvent(
        trx,
        {
          actor: actor.subject,
          actorType: 'client',
          action: 'webhook.replay',
          outcome: state === 'failed' ? 'failure' : 'success',
          origin: actor.origin,
          resource: inboxId,
          details: { state },
        },
        this.now(),
      );
      return state;
    });
  }

  /** Replays a stored inbox event by id (the admin action); answers the inbox event as it is after. */
  async replayStored(inboxId: string, actor: Caller): Promise<InboxRow> {
    const row = await findInboxEvent(this.knex, inboxId);
    if (row === undefined) throw new AppError('NOT_FOUND', { detail: 'No such inbox event.' });
    if (row.state === 'rejected') throw new AppError('INBOX_EVENT_NOT_REPLAYABLE');
    if (this.options.decodeStored === undefined) throw new Error('no stored-event decoder configured');
    const decoded = await this.options.decodeStored(row, { hasFacts: await inboxEventHasFacts(this.knex, inboxId) });
    await this.replay(inboxId, decoded, actor);
    return (await findInboxEvent(this.knex, inboxId)) as InboxRow;
  }

  /** A shopper's purchases (under these references: the shopper and those merged into it). */
  listPurchases(shopperRefs: readonly string[], filter: PurchaseFilter): Promise<Page<PaymentRow>> {
    return listPurchases(this.knex, shopperRefs, filter);
  }

  /** The shoppers' returnable purchases authorised since `since`, newest first (a till's return lookup). */
  purchasesForReturn(shopperRefs: readonly string[], since: Date, limit: number): Promise<PaymentRow[]> {
    return purchasesSince(this.knex, shopperRefs, since, limit);
  }

  /** Locks a payment for a till return, in the caller's transaction (payments are locked first). */
  lockForReturn(trx: Knex.Transaction, paymentId: string): Promise<PaymentRow | undefined> {
    return lockPaymentById(trx, paymentId);
  }

  /** The refund the locked payment already holds under this gateway refund id (its webhook came first). */
  existingRefund(trx: Knex.Transaction, paymentId: string, key: string): Promise<ReturnFactOutcome> {
    return existingRefund(trx, paymentId, key);
  }

  /**
   * Adds a till return's `refunded` fact to the locked payment, derives it again and tells the
   * listeners (points reversed proportionally), in the caller's transaction (payment-returns.ts).
   */
  addReturnFact(trx: Knex.Transaction, payment: PaymentRow, input: ReturnFactInput): Promise<void> {
    return addReturnFact(trx, payment, input, {
      now: this.now(),
      autoCaptureChannels: this.options.autoCaptureChannels,
      listeners: this.listeners,
    });
  }

  listInbox(filter: InboxFilter): Promise<Page<InboxRow>> {
    return listInbox(this.knex, filter);
  }

  /**
   * Moves every payment of one shopper to another (a loyalty merge), in the caller's transaction.
   * The lock order every writer keeps is payments, then accounts.
   */
  async moveShopperPayments(trx: Knex.Transaction, fromShopper: string, toShopper: string): Promise<number> {
    return moveShopperPayments(trx, fromShopper, toShopper, this.now());
  }

  private async resolveCard(effect: PaymentEffect | undefined): Promise<CardView | undefined> {
    if (effect === undefined) return undefined;
    if (effect.cardToken !== undefined) {
      try {
        return await this.vault.getCard(effect.cardToken, WEBHOOK_CALLER);
      } catch (error) {
        if (error instanceof AppError && error.code === 'NOT_FOUND') throw new AppError('CARD_TOKEN_UNKNOWN');
        throw error;
      }
    }
    return effect.card.length === 0 ? undefined : this.vault.resolve(effect.card, WEBHOOK_CALLER);
  }

  /**
   * Every event of the batch, in one transaction and a fixed number of statements whatever its size:
   * lock-or-create the payments, read the facts of those that existed, plan each event (pure), store
   * the inbox rows (a conflict = a redelivery: nothing more is done for it), add the facts, update the
   * payments, tell the listeners, release events parked behind an authorisation that just arrived.
   * The batch never holds two events of one payment.
   */
  private async applyBatch(trx: Knex.Transaction, works: readonly IngestWork[]): Promise<IngestResult[]> {
    const now = this.now();
    const payments = await lockPayments(trx, paymentsToLock(works), now);
    const stored = await storedFacts(
      trx,
      [...payments.values()].filter((p) => !p.inserted).map((p) => p.id),
    );
    const plans = works.map((work) => {
      const payment = work.event.effect === undefined ? undefined : payments.get(paymentKey(work.event));
      return planEvent(work, payment, payment === undefined ? [] : (stored.get(payment.id) ?? []), {
        now,
        newInboxId: newId('evt'),
        autoCaptureChannels: this.options.autoCaptureChannels,
      });
    });
    const duplicates = await storePlans(trx, plans, now);
    const applied = plans.filter((p) => !duplicates.has(p.inboxId) && p.apply !== undefined);
    const transitions = applied.flatMap((p) => (p.apply?.transition === undefined ? [] : [p.apply.transition]));
    if (transitions.length > 0) for (const listener of this.listeners) await listener(trx, transitions);
    await releaseParked(
      trx,
      applied.filter((p) => p.apply?.releasesParked === true).map((p) => p.payment?.id as string),
      now,
    );
    return plans.map(
      (p) => duplicates.get(p.inboxId) ?? { inboxId: p.work.replayOf ?? p.inboxId, duplicate: false, state: p.state },
    );
  }
}
