/* eslint max-lines: ["error", 600] -- payment transitions, inbox and projection with their SQL; a payment store is being split out (issue 20) */
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
import { updateRowsPart } from '../db/update-rows.js';
import { partOf, writeTogether, type WritePart } from '../db/write-together.js';
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

export type InboxState = 'applied' | 'parked' | 'failed' | 'ignored' | 'rejected';

/** Handed to listeners inside the transaction that made the change: their writes commit with it. */
export interface PaymentTransitionEvent extends PaymentTransition {
  readonly paymentId: string;
  readonly shopperRef: string | null;
  readonly cardToken: string | null;
  readonly channel: string | null;
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

export interface PaymentServiceOptions {
  readonly autoCaptureChannels: readonly string[];
  readonly listeners?: readonly PaymentTransitionListener[];
  readonly now?: () => Date;
  /** Group commit of concurrent deliveries; absent: one transaction per delivery. */
  readonly batch?: {
    readonly maxBatch: number;
    readonly concurrency: number;
    readonly onBatch?: (size: number) => void;
  };
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

/** One event on its way into the inbox (or a stored one being replayed). */
interface Work {
  readonly event: PaymentEventInput;
  readonly card: CardView | undefined;
  readonly secretIndex: number;
  /** Set when replaying: the inbox row exists and is locked by the caller. */
  readonly replayOf?: string;
}

/** What one event does, decided before anything of the batch is written. */
interface Plan {
  readonly work: Work;
  readonly inboxId: string;
  readonly state: InboxState;
  readonly errorCode: string | null;
  readonly payment: LockedPayment | undefined;
  /** Present when the event's facts are applied (not ignored, not failed). */
  readonly apply?: {
    readonly update: Readonly<Record<string, unknown>>;
    readonly transition: PaymentTransitionEvent | undefined;
    /** The authorisation arrived: events parked behind it are applied now. */
    readonly releasesParked: boolean;
  };
}

type LockedPayment = PaymentRow & { readonly inserted: boolean };

export class PaymentService {
  private readonly now: () => Date;
  private readonly listeners: readonly PaymentTransitionListener[];
  private readonly group: GroupCommit<Work, IngestResult, Knex.Transaction>;

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
   * Stores a verified event and applies it; resolves once committed. Concurrent calls are committed
   * together (group commit), each answered only after the shared transaction commits.
   */
  async ingest(event: PaymentEventInput, secretIndex: number): Promise<IngestResult> {
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
      const row = (await trx('webhook_inbox').where({ id: inboxId }).forUpdate().first('id')) as
        { id: string } | undefined;
      if (row === undefined) throw new AppError('NOT_FOUND', { detail: 'No such inbox event.' });
      if (event.effect === undefined || event.rejection !== undefined) throw new AppError('INBOX_EVENT_NOT_REPLAYABLE');
      await trx('webhook_inbox').where({ id: inboxId }).increment('replays', 1);
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

  /**
   * Moves every payment of one shopper to another (a loyalty merge), in the caller's transaction.
   * Payment rows are locked first, in the order a webhook batch locks them (provider, external id):
   * the lock order every writer keeps is payments, then accounts.
   */
  async moveShopperPayments(trx: Knex.Transaction, fromShopper: string, toShopper: string): Promise<number> {
    await trx('payments')
      .where({ shopper_ref: fromShopper })
      .orderBy([{ column: 'provider' }, { column: 'external_id' }])
      .forUpdate()
      .select('id');
    return trx('payments')
      .where({ shopper_ref: fromShopper })
      .update({ shopper_ref: toShopper, updated_at: this.now() });
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
   * lock-or-create the payments, read the facts of those that existed, decide each event (pure), store
   * the inbox rows (a conflict = a redelivery: nothing more is done for it), add the facts, update the
   * payments, tell the listeners, release events parked behind an authorisation that just arrived.
   * The batch never holds two events of one payment.
   */
  private async applyBatch(trx: Knex.Transaction, works: readonly Work[]): Promise<IngestResult[]> {
    const now = this.now();
    const payments = await this.lockPayments(trx, works, now);
    const stored = await this.storedFacts(
      trx,
      [...payments.values()].filter((p) => !p.inserted),
    );
    const plans = works.map((work) => {
      const payment = work.event.effect === undefined ? undefined : payments.get(paymentKey(work.event));
      return this.plan(work, payment, payment === undefined ? [] : (stored.get(payment.id) ?? []), now);
    });

    const duplicates = await this.store(trx, plans, now);
    const live = plans.filter((p) => !duplicates.has(p.inboxId));
    const applied = live.filter((p) => p.apply !== undefined);
    const transitions = applied.flatMap((p) => (p.apply?.transition === undefined ? [] : [p.apply.transition]));
    if (transitions.length > 0) for (const listener of this.listeners) await listener(trx, transitions);
    const released = applied.filter((p) => p.apply?.releasesParked === true).map((p) => p.payment?.id as string);
    if (released.length > 0) {
      await trx('webhook_inbox')
        .whereIn('payment_id', released)
        .where({ state: 'parked' })
        .update({ state: 'applied', applied_at: now });
    }
    return plans.map(
      (p) => duplicates.get(p.inboxId) ?? { inboxId: p.work.replayOf ?? p.inboxId, duplicate: false, state: p.state },
    );
  }

  /** Creates each payment on its first event and locks it, in key order (no deadlocks between batches). */
  private async lockPayments(
    trx: Knex.Transaction,
    works: readonly Work[],
    now: Date,
  ): Promise<Map<string, LockedPayment>> {
    const keys = [
      ...new Map(
        works.flatMap(({ event }): [string, [Provider, string]][] =>
          event.effect === undefined ? [] : [[paymentKey(event), [event.provider, event.effect.paymentExternalId]]],
        ),
      ),
    ].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const locked = new Map<string, LockedPayment>();
    if (keys.length === 0) return locked;
    // An upsert whose conflict branch rewrites nothing still takes the row lock and returns the row:
    // one round trip for the whole batch instead of insert-or-ignore plus select-for-update per event.
    const result: unknown = await trx.raw(
      `insert into payments (id, provider, external_id, state, created_at, updated_at)
       values ${keys.map(() => `(?, ?, ?, 'awaiting_authorisation', ?, ?)`).join(', ')}
       on conflict (provider, external_id) do update set updated_at = payments.updated_at
       returning *, (xmax = 0) as inserted`,
      keys.flatMap(([, [provider, externalId]]) => [newId('pay'), provider, externalId, now, now]),
    );
    for (const row of (result as { rows: LockedPayment[] }).rows) {
      locked.set(`${row.provider} ${row.external_id}`, row);
    }
    return locked;
  }

  private async storedFacts(
    trx: Knex.Transaction,
    existing: readonly LockedPayment[],
  ): Promise<Map<string, PaymentFact[]>> {
    const byPayment = new Map<string, PaymentFact[]>();
    if (existing.length === 0) return byPayment;
    const rows = (await trx('payment_facts')
      .whereIn(
        'payment_id',
        existing.map((p) => p.id),
      )
      .select(
        'payment_id',
        'kind',
        'fact_key as key',
        'amount',
        'currency',
        'occurred_at as occurredAt',
      )) as (PaymentFact & { payment_id: string })[];
    for (const { payment_id: id, ...fact } of rows) {
      byPayment.set(id, [...(byPayment.get(id) ?? []), fact]);
    }
    return byPayment;
  }

  /**
   * Decides what one event does to its (locked) payment. A domain refusal (another currency) is
   * decided here, before anything is written: the event is stored as `failed` with nothing applied.
   */
  private plan(work: Work, payment: LockedPayment | undefined, stored: readonly PaymentFact[], now: Date): Plan {
    const inboxId = work.replayOf ?? newId('evt');
    const { effect } = work.event;
    if (work.event.rejection !== undefined) {
      return { work, inboxId, state: 'rejected', errorCode: work.event.rejection, payment: undefined };
    }
    if (effect === undefined || payment === undefined) {
      return { work, inboxId, state: 'ignored', errorCode: null, payment };
    }
    if (effect.facts.some((f) => payment.currency !== null && f.currency !== null && f.currency !== payment.currency)) {
      return { work, inboxId, state: 'failed', errorCode: 'PAYMENT_CURRENCY_MISMATCH', payment };
    }
    const isAuthorisation = effect.facts.some((f) => f.kind === 'authorised');
    // The authorisation describes the payment; other events only fill what is still unknown.
    const pick = <V>(current: V | null, incoming: V | undefined): V | null =>
      isAuthorisation ? (incoming ?? current) : (current ?? incoming ?? null);
    const channel =
      effect.details.channelIsHint === true
        ? (payment.channel ?? effect.details.channel ?? null)
        : pick(payment.channel, effect.details.channel);
    const facts = mergeFacts(stored, effect.facts);
    const before = figuresOf(payment);
    const after = derivePayment(facts, {
      autoCapture: channel !== null && this.options.autoCaptureChannels.includes(channel),
    });
    const cardToken = payment.card_token ?? work.card?.token ?? null;
    const shopperRef = payment.shopper_ref ?? work.card?.shopperReference ?? null;
    const transition = diffPayments(before, after);
    const parked = after.state === 'awaiting_authorisation';
    return {
      work,
      inboxId,
      state: parked ? 'parked' : 'applied',
      errorCode: null,
      payment,
      apply: {
        update: {
          id: payment.id,
          state: after.state,
          currency:
            after.currency ?? payment.currency ?? effect.facts.find((f) => f.currency !== null)?.currency ?? null,
          authorised_amount: after.authorisedAmount,
          captured_amount: after.capturedAmount,
          refunded_amount: after.refundedAmount,
          charged_back_amount: after.chargedBackAmount,
          authorised_at: after.authorisedAt,
          card_token: cardToken,
          shopper_ref: shopperRef,
          card_last4: payment.card_last4 ?? effect.last4 ?? work.card?.last4 ?? null,
          channel,
          store_id: pick(payment.store_id, effect.details.storeId),
          terminal_id: pick(payment.terminal_id, effect.details.terminalId),
          merchant_reference: pick(payment.merchant_reference, effect.details.merchantReference),
          updated_at: now,
        },
        transition:
          transition === undefined
            ? undefined
            : {
                ...transition,
                paymentId: payment.id,
                shopperRef,
                cardToken,
                channel,
                inboxId,
                paymentCreated: payment.inserted,
              },
        // A payment created by this batch has no event parked behind it (its events never share a batch).
        releasesParked: before.state === 'awaiting_authorisation' && !parked && !payment.inserted,
      },
    };
  }

  /**
   * Stores the batch in one statement: the new inbox rows with their final state, and the facts and
   * payment updates of the events that apply, each gated on its event's inbox row having been
   * inserted by this statement. An inbox row that already exists is a redelivery: nothing of it is
   * written, and it is answered with the stored outcome. A replayed event updates its existing row
   * instead, and its effects are not gated. Returns the redeliveries by the inbox id planned for them.
   */
  private async store(trx: Knex.Transaction, plans: readonly Plan[], now: Date): Promise<Map<string, IngestResult>> {
    const duplicates = new Map<string, IngestResult>();
    const replays = plans.filter((p) => p.work.replayOf !== undefined);
    for (const plan of replays.filter((p) => p.state !== 'failed')) {
      await trx('webhook_inbox')
        .where({ id: plan.inboxId })
        .update({
          state: plan.state,
          payment_id: plan.payment?.id ?? null,
          error_code: null,
          applied_at: plan.state === 'applied' ? trx.raw('coalesce(applied_at, ?)', [now]) : null,
        });
    }
    const fresh = plans.filter((p) => p.work.replayOf === undefined);
    const applying = plans.filter((p) => p.apply !== undefined);
    // Facts are gated on their own event's row; a payment update on its payment's, which is exact
    // because a batch holds one event per payment (GroupCommit keyOf), checked here.
    const paymentIds = applying.map((p) => p.payment?.id);
    if (new Set(paymentIds).size !== paymentIds.length) throw new Error('a batch holds two events of one payment');
    const gate = (column: string, returned: 'id' | 'payment_id', replayed: readonly string[]) => ({
      sql:
        `${column} in (select ${returned} from inbox)` +
        (replayed.length === 0 ? '' : ` or ${column} in (${replayed.map(() => '?').join(', ')})`),
      bindings: replayed,
    });
    const inserted = await writeTogether<{ id: string }>(
      trx,
      [
        fresh.length === 0
          ? { name: 'inbox', statement: 'select null::text as id, null::text as payment_id where false', bindings: [] }
          : partOf(
              trx('webhook_inbox')
                .insert(
                  fresh.map(({ work, inboxId, state, errorCode, payment }) => ({
                    id: inboxId,
                    provider: work.event.provider,
                    event_key: work.event.eventKey,
                    event_type: work.event.eventType,
                    secret_index: work.secretIndex,
                    payload: JSON.stringify(work.event.storedPayload(work.card?.token)),
                    masked: JSON.stringify(work.event.masked ?? []),
                    received_at: now,
                    state,
                    error_code: errorCode,
                    applied_at: state === 'applied' ? now : null,
                    payment_id: payment?.id ?? null,
                  })),
                )
                .onConflict(['provider', 'event_key'])
                .ignore()
                .returning(['id', 'payment_id']),
              'inbox',
            ),
        factsPart(
          applying,
          gate(
            'v.inbox_id',
            'id',
            replays.map((p) => p.inboxId),
          ),
        ),
        updateRowsPart(
          'payments',
          'id',
          PAYMENT_COLUMNS,
          applying.map((p) => p.apply?.update ?? {}),
          gate(
            't.id',
            'payment_id',
            replays.flatMap((p) => (p.payment === undefined ? [] : [p.payment.id])),
          ),
        ),
      ],
      'select id from inbox',
    );
    if (inserted.length === fresh.length) return duplicates;
    const insertedIds = new Set(inserted.map((r) => r.id));
    const redelivered = fresh.filter((p) => !insertedIds.has(p.inboxId));
    const existing = (await trx('webhook_inbox')
      .whereIn(
        ['provider', 'event_key'],
        redelivered.map((p) => [p.work.event.provider, p.work.event.eventKey]),
      )
      .select('id', 'provider', 'event_key', 'state')) as {
      id: string;
      provider: string;
      event_key: string;
      state: InboxState;
    }[];
    for (const plan of redelivered) {
      const row = existing.find(
        (r) => r.provider === plan.work.event.provider && r.event_key === plan.work.event.eventKey,
      );
      if (row === undefined) throw new Error('an inbox insert conflicted but the row is not there');
      duplicates.set(plan.inboxId, { inboxId: row.id, duplicate: true, state: row.state });
    }
    return duplicates;
  }
}

/** The facts of the applying events, inserted where `where` lets them (a fact already there stays). */
function factsPart(
  plans: readonly Plan[],
  where: { readonly sql: string; readonly bindings: readonly Knex.RawBinding[] },
): WritePart | undefined {
  const rows = plans.flatMap(({ work, inboxId, payment }) =>
    (work.event.effect?.facts ?? []).map((f) => [
      payment?.id ?? null,
      f.kind,
      f.key,
      f.amount,
      f.currency,
      f.occurredAt,
      inboxId,
    ]),
  );
  if (rows.length === 0) return undefined;
  return {
    statement: `insert into payment_facts (payment_id, kind, fact_key, amount, currency, occurred_at, inbox_id)
      select v.payment_id, v.kind, v.fact_key, v.amount::bigint, v.currency, v.occurred_at::timestamptz, v.inbox_id
      from (values ${rows.map(() => '(?, ?, ?, ?, ?, ?, ?)').join(', ')})
        as v (payment_id, kind, fact_key, amount, currency, occurred_at, inbox_id)
      where ${where.sql}
      on conflict (payment_id, kind, fact_key) do nothing`,
    bindings: [...(rows.flat() as Knex.RawBinding[]), ...where.bindings],
  };
}

const PAYMENT_COLUMNS = {
  state: 'text',
  currency: 'text',
  authorised_amount: 'bigint',
  captured_amount: 'bigint',
  refunded_amount: 'bigint',
  charged_back_amount: 'bigint',
  authorised_at: 'timestamptz',
  card_token: 'text',
  shopper_ref: 'text',
  card_last4: 'text',
  channel: 'text',
  store_id: 'text',
  terminal_id: 'text',
  merchant_reference: 'text',
  updated_at: 'timestamptz',
} as const;

function paymentKey(event: PaymentEventInput): string {
  return `${event.provider} ${event.effect?.paymentExternalId ?? ''}`;
}

/** The stored facts plus the event's, each (kind, key) once: the stored one wins, as in the table. */
function mergeFacts(stored: readonly PaymentFact[], incoming: readonly PaymentFact[]): PaymentFact[] {
  const seen = new Set(stored.map((f) => `${f.kind} ${f.key}`));
  return [...stored, ...incoming.filter((f) => !seen.has(`${f.kind} ${f.key}`))];
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
