/**
 * SQL of the payments' write side (the read side is payment-read-store.ts). Functions take the
 * transaction the payment service opened, so a batch of events is one transaction whatever it holds.
 */
import type { Knex } from 'knex';
import { updateRowsPart } from '../db/update-rows.js';
import { partOf, writeTogether, type WritePart } from '../db/write-together.js';
import { newId } from '../ids/prefixed-id.js';
import type { Provider } from './payment-event.js';
import type { PaymentFact } from './payment-state.js';
import type { IngestResult, InboxState, LockedPayment, Plan } from './payment-types.js';

/**
 * Creates each payment on its first event and locks it, in the order given (the caller sorts by key).
 * An upsert whose conflict branch rewrites nothing still takes the row lock and returns the row: one
 * round trip for the whole batch instead of insert-or-ignore plus select-for-update per event.
 */
export async function lockPayments(
  trx: Knex.Transaction,
  keys: readonly [string, [Provider, string]][],
  now: Date,
): Promise<Map<string, LockedPayment>> {
  const locked = new Map<string, LockedPayment>();
  if (keys.length === 0) return locked;
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

/** The stored facts of these payments, by payment id. */
export async function storedFacts(
  trx: Knex.Transaction,
  paymentIds: readonly string[],
): Promise<Map<string, PaymentFact[]>> {
  const byPayment = new Map<string, PaymentFact[]>();
  if (paymentIds.length === 0) return byPayment;
  const rows = (await trx('payment_facts')
    .whereIn('payment_id', paymentIds)
    .select(
      'payment_id',
      'kind',
      'fact_key as key',
      'amount',
      'currency',
      'occurred_at as occurredAt',
    )) as (PaymentFact & {
    payment_id: string;
  })[];
  for (const { payment_id: id, ...fact } of rows) {
    byPayment.set(id, [...(byPayment.get(id) ?? []), fact]);
  }
  return byPayment;
}

/** Events parked behind an authorisation that just arrived are applied now. */
export async function releaseParked(trx: Knex.Transaction, paymentIds: readonly string[], now: Date): Promise<void> {
  if (paymentIds.length === 0) return;
  await trx('webhook_inbox')
    .whereIn('payment_id', paymentIds)
    .where({ state: 'parked' })
    .update({ state: 'applied', applied_at: now });
}

/** Locks an inbox row for a replay and counts the replay; false when there is no such row. */
export async function lockInboxForReplay(trx: Knex.Transaction, inboxId: string): Promise<boolean> {
  const row = (await trx('webhook_inbox').where({ id: inboxId }).forUpdate().first('id')) as { id: string } | undefined;
  if (row === undefined) return false;
  await trx('webhook_inbox').where({ id: inboxId }).increment('replays', 1);
  return true;
}

/**
 * Moves every payment of one shopper to another, in the caller's transaction. Payment rows are
 * locked first, in the order a webhook batch locks them (provider, external id).
 */
export async function moveShopperPayments(
  trx: Knex.Transaction,
  fromShopper: string,
  toShopper: string,
  now: Date,
): Promise<number> {
  await trx('payments')
    .where({ shopper_ref: fromShopper })
    .orderBy([{ column: 'provider' }, { column: 'external_id' }])
    .forUpdate()
    .select('id');
  return trx('payments').where({ shopper_ref: fromShopper }).update({ shopper_ref: toShopper, updated_at: now });
}

/**
 * Stores the batch in one statement: the new inbox rows with their final state, and the facts and
 * payment updates of the events that apply, each gated on its event's inbox row having been
 * inserted by this statement. An inbox row that already exists is a redelivery: nothing of it is
 * written, and it is answered with the stored outcome. A replayed event updates its existing row
 * instead, and its effects are not gated. Returns the redeliveries by the inbox id planned for them.
 */
export async function storePlans(
  trx: Knex.Transaction,
  plans: readonly Plan[],
  now: Date,
): Promise<Map<string, IngestResult>> {
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
  const replayedInbox = replays.map((p) => p.inboxId);
  const replayedPayments = replays.flatMap((p) => (p.payment === undefined ? [] : [p.payment.id]));
  const inserted = await writeTogether<{ id: string }>(
    trx,
    [
      inboxPart(trx, fresh, now),
      factsPart(applying, gate('v.inbox_id', 'id', replayedInbox)),
      updateRowsPart(
        'payments',
        'id',
        PAYMENT_COLUMNS,
        applying.flatMap((p) => (p.apply === undefined ? [] : [p.apply.update])),
        gate('t.id', 'payment_id', replayedPayments),
      ),
    ],
    'select id from inbox',
  );
  if (inserted.length === fresh.length) return new Map();
  const insertedIds = new Set(inserted.map((r) => r.id));
  return redeliveries(
    trx,
    fresh.filter((p) => !insertedIds.has(p.inboxId)),
  );
}

/** A write gated on the inbox rows this statement inserted (or on the replayed ones). */
function gate(column: string, returned: 'id' | 'payment_id', replayed: readonly string[]) {
  return {
    sql:
      `${column} in (select ${returned} from inbox)` +
      (replayed.length === 0 ? '' : ` or ${column} in (${replayed.map(() => '?').join(', ')})`),
    bindings: replayed,
  };
}

function inboxPart(trx: Knex.Transaction, fresh: readonly Plan[], now: Date): WritePart {
  if (fresh.length === 0) {
    return { name: 'inbox', statement: 'select null::text as id, null::text as payment_id where false', bindings: [] };
  }
  return partOf(
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
  );
}

/** The stored outcome of each redelivered event, by the inbox id planned for it. */
async function redeliveries(trx: Knex.Transaction, redelivered: readonly Plan[]): Promise<Map<string, IngestResult>> {
  const duplicates = new Map<string, IngestResult>();
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
  wallet_type: 'text',
  token_last4: 'text',
  channel: 'text',
  store_id: 'text',
  terminal_id: 'text',
  merchant_reference: 'text',
  updated_at: 'timestamptz',
} as const;
