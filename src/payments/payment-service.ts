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
import { newId } from '../ids/prefixed-id.js';
import type { PaymentEffect, PaymentEventInput, Provider } from './payment-event.js';
import {
  derivePayment,
  diffPayments,
  type PaymentFact,
  type PaymentFigures,
  type PaymentState,
  type PaymentTransition,
} from './payment-state.js';

export type InboxState = 'applied' | 'parked' | 'failed' | 'ignored';

/** Handed to listeners inside the transaction that made the change: their writes commit with it. */
export interface PaymentTransitionEvent extends PaymentTransition {
  readonly paymentId: string;
  readonly shopperRef: string | null;
  readonly cardToken: string | null;
  readonly channel: string | null;
  /** The inbox event whose fact caused it. */
  readonly inboxId: string;
}

export type PaymentTransitionListener = (trx: Knex.Transaction, event: PaymentTransitionEvent) => Promise<void>;

export interface IngestResult {
  readonly inboxId: string;
  readonly duplicate: boolean;
  readonly state: InboxState;
}

export interface PaymentServiceOptions {
  readonly autoCaptureChannels: readonly string[];
  readonly listeners?: readonly PaymentTransitionListener[];
  readonly now?: () => Date;
}

export interface PaymentRow {
  readonly id: string;
  readonly provider: Provider;
  readonly external_id: string;
  readonly state: PaymentState;
  readonly card_token: string | null;
  readonly shopper_ref: string | null;
  readonly card_last4: string | null;
  readonly channel: string | null;
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

const WEBHOOK_CALLER: Caller = { subject: 'system:webhooks', shopperRef: undefined, origin: 'webhook' };

export class PaymentService {
  private readonly now: () => Date;
  private readonly listeners: readonly PaymentTransitionListener[];

  constructor(
    private readonly knex: Knex,
    private readonly vault: VaultService,
    private readonly options: PaymentServiceOptions,
  ) {
    this.now = options.now ?? (() => new Date());
    this.listeners = options.listeners ?? [];
  }

  async ingest(event: PaymentEventInput, secretIndex: number): Promise<IngestResult> {
    const card = await this.resolveCard(event.effect);
    const payload = JSON.stringify(event.storedPayload(card?.token));
    return this.knex.transaction(async (trx) => {
      const inbox = {
        id: newId('evt'),
        provider: event.provider,
        event_key: event.eventKey,
        event_type: event.eventType,
        secret_index: secretIndex,
        payload,
        received_at: this.now(),
      };
      const { effect } = event;
      // The payment row is locked before the inbox insert, so that every event of one payment (and
      // every redelivery of one event) is serialised on that lock, in every instance.
      const payment = effect === undefined ? undefined : await this.lockPayment(trx, event.provider, effect);
      const [inserted] = (await trx('webhook_inbox')
        // Stored as applied, the common outcome, so that it takes no second write; corrected below.
        .insert({
          ...inbox,
          state: payment === undefined ? 'ignored' : 'applied',
          applied_at: payment === undefined ? null : inbox.received_at,
          payment_id: payment?.id ?? null,
        })
        .onConflict(['provider', 'event_key'])
        .ignore()
        .returning('id')) as { id: string }[];
      if (inserted === undefined) {
        const existing = (await trx('webhook_inbox')
          .where({ provider: event.provider, event_key: event.eventKey })
          .first('id', 'state')) as { id: string; state: InboxState };
        return { inboxId: existing.id, duplicate: true, state: existing.state };
      }
      if (effect === undefined || payment === undefined)
        return { inboxId: inbox.id, duplicate: false, state: 'ignored' };
      const state = await this.applyFacts(trx, inbox.id, payment, effect, card);
      if (state === 'parked') {
        await trx('webhook_inbox').where({ id: inbox.id }).update({ state: 'parked', applied_at: null });
      }
      return { inboxId: inbox.id, duplicate: false, state };
    });
  }

  /**
   * Applies a stored event again (after a fix for what made it fail, say). Idempotent: facts already
   * present are not added twice, so replaying an applied event changes nothing.
   */
  async replay(inboxId: string, event: PaymentEventInput, actor: Caller): Promise<InboxState> {
    const card = await this.resolveCard(event.effect);
    return this.knex.transaction(async (trx) => {
      const row = (await trx('webhook_inbox').where({ id: inboxId }).forUpdate().first('id')) as
        { id: string } | undefined;
      if (row === undefined) throw new AppError('NOT_FOUND', { detail: 'No such inbox event.' });
      if (event.effect === undefined) throw new AppError('INBOX_EVENT_NOT_REPLAYABLE');
      await trx('webhook_inbox').where({ id: inboxId }).increment('replays', 1);
      const payment = await this.lockPayment(trx, event.provider, event.effect);
      const state = await this.applyFacts(trx, inboxId, payment, event.effect, card);
      if (state !== 'failed') {
        await trx('webhook_inbox')
          .where({ id: inboxId })
          .update({
            state,
            payment_id: payment.id,
            error_code: null,
            applied_at: state === 'applied' ? trx.raw('coalesce(applied_at, ?)', [this.now()]) : null,
          });
      }
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

  /** Creates the payment on its first event; locks it; says whether this call created it. */
  private async lockPayment(
    trx: Knex.Transaction,
    provider: Provider,
    effect: PaymentEffect,
  ): Promise<PaymentRow & { readonly inserted: boolean }> {
    const now = this.now();
    // An upsert whose conflict branch rewrites nothing still takes the row lock and returns the row:
    // one round trip instead of insert-or-ignore plus select-for-update.
    const result: unknown = await trx.raw(
      `insert into payments (id, provider, external_id, state, created_at, updated_at)
       values (?, ?, ?, 'awaiting_authorisation', ?, ?)
       on conflict (provider, external_id) do update set updated_at = payments.updated_at
       returning *, (xmax = 0) as inserted`,
      [newId('pay'), provider, effect.paymentExternalId, now, now],
    );
    return (result as { rows: (PaymentRow & { inserted: boolean })[] }).rows[0] as PaymentRow & { inserted: boolean };
  }

  /**
   * Adds the event's facts to the locked payment, derives its state again, records the transition
   * and tells the listeners; returns the inbox state. A domain refusal (another currency) is
   * detected before anything is written, so the event is stored as `failed` with nothing applied.
   */
  private async applyFacts(
    trx: Knex.Transaction,
    inboxId: string,
    payment: PaymentRow & { readonly inserted: boolean },
    effect: PaymentEffect,
    card: CardView | undefined,
  ): Promise<InboxState> {
    const now = this.now();
    const mismatch = effect.facts.some(
      (f) => payment.currency !== null && f.currency !== null && f.currency !== payment.currency,
    );
    if (mismatch) {
      await trx('webhook_inbox')
        .where({ id: inboxId })
        .update({ state: 'failed', error_code: 'PAYMENT_CURRENCY_MISMATCH', applied_at: null });
      return 'failed';
    }
    const isAuthorisation = effect.facts.some((f) => f.kind === 'authorised');
    await trx('payment_facts')
      .insert(
        effect.facts.map((f) => ({
          payment_id: payment.id,
          kind: f.kind,
          fact_key: f.key,
          amount: f.amount,
          currency: f.currency,
          occurred_at: f.occurredAt,
          inbox_id: inboxId,
        })),
      )
      .onConflict(['payment_id', 'kind', 'fact_key'])
      .ignore();

    // The authorisation describes the payment; other events only fill what is still unknown.
    const pick = <T>(current: T | null, incoming: T | undefined): T | null =>
      isAuthorisation ? (incoming ?? current) : (current ?? incoming ?? null);
    const channel = pick(payment.channel, effect.details.channel);
    // A payment this very event created has exactly this event's facts: no need to read them back.
    const facts = payment.inserted
      ? effect.facts
      : ((await trx('payment_facts')
          .where({ payment_id: payment.id })
          .select('kind', 'fact_key as key', 'amount', 'currency', 'occurred_at as occurredAt')) as PaymentFact[]);
    const before = figuresOf(payment);
    const after = derivePayment(facts, {
      autoCapture: channel !== null && this.options.autoCaptureChannels.includes(channel),
    });
    const cardToken = payment.card_token ?? card?.token ?? null;
    const shopperRef = payment.shopper_ref ?? card?.shopperReference ?? null;
    await trx('payments')
      .where({ id: payment.id })
      .update({
        state: after.state,
        currency: after.currency ?? payment.currency ?? effect.facts.find((f) => f.currency !== null)?.currency ?? null,
        authorised_amount: after.authorisedAmount,
        captured_amount: after.capturedAmount,
        refunded_amount: after.refundedAmount,
        charged_back_amount: after.chargedBackAmount,
        authorised_at: after.authorisedAt,
        card_token: cardToken,
        shopper_ref: shopperRef,
        card_last4: payment.card_last4 ?? effect.last4 ?? card?.last4 ?? null,
        channel,
        store_id: pick(payment.store_id, effect.details.storeId),
        terminal_id: pick(payment.terminal_id, effect.details.terminalId),
        merchant_reference: pick(payment.merchant_reference, effect.details.merchantReference),
        updated_at: now,
      });

    const transition = diffPayments(before, after);
    if (transition !== undefined) {
      for (const listener of this.listeners) {
        await listener(trx, { ...transition, paymentId: payment.id, shopperRef, cardToken, channel, inboxId });
      }
    }
    const parked = after.state === 'awaiting_authorisation';
    if (before.state === 'awaiting_authorisation' && !parked) {
      // The parent arrived: what was parked behind it is applied now (by this very derivation).
      await trx('webhook_inbox')
        .where({ payment_id: payment.id, state: 'parked' })
        .update({ state: 'applied', applied_at: now });
    }
    return parked ? 'parked' : 'applied';
  }
}

function figuresOf(row: PaymentRow): PaymentFigures {
  return {
    state: row.state,
    currency: row.currency,
    authorisedAmount: row.authorised_amount,
    capturedAmount: row.captured_amount,
    refundedAmount: row.refunded_amount,
    chargedBackAmount: row.charged_back_amount,
    authorisedAt: row.authorised_at,
  };
}
