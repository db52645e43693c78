/**
 * SQL of the payments' read side: a shopper's purchase history and the webhook inbox, newest first,
 * with keyset cursors (stable under inserts, no OFFSET scans). The write side is payment-store.ts.
 */
import type { Knex } from 'knex';
import { afterCursor, pageOf, type Page } from '../db/keyset-cursor.js';
import type { Provider } from './payment-event.js';
import type { InboxState, PaymentRow } from './payment-types.js';

export interface PurchaseFilter {
  readonly channel?: string;
  readonly from?: Date;
  readonly to?: Date;
  readonly limit: number;
  readonly cursor?: string;
}

/** States that are purchases: not a payment still waiting for, or refused at, authorisation. */
const PURCHASE_STATES = ['authorised', 'cancelled', 'captured', 'partially_refunded', 'refunded', 'charged_back'];

export async function listPurchases(
  knex: Knex,
  shopperRefs: readonly string[],
  filter: PurchaseFilter,
): Promise<Page<PaymentRow>> {
  const query = knex('payments')
    .whereIn('shopper_ref', shopperRefs)
    .whereIn('state', PURCHASE_STATES)
    .orderBy([
      { column: 'authorised_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])
    .limit(filter.limit + 1);
  if (filter.channel !== undefined) query.where({ channel: filter.channel });
  if (filter.from !== undefined) query.where('authorised_at', '>=', filter.from);
  if (filter.to !== undefined) query.where('authorised_at', '<', filter.to);
  afterCursor(query, filter.cursor, 'authorised_at', 'id');
  const rows = (await query) as PaymentRow[];
  return pageOf(rows, filter.limit, (last) => [last.authorised_at as Date, last.id]);
}

export interface InboxRow {
  readonly id: string;
  readonly provider: Provider;
  readonly event_key: string;
  readonly event_type: string;
  readonly state: InboxState;
  readonly payment_id: string | null;
  readonly error_code: string | null;
  readonly secret_index: number;
  readonly payload: unknown;
  /** JSON pointers of the payload fields the card-data guard masked or dropped. */
  readonly masked: readonly string[];
  readonly received_at: Date;
  readonly applied_at: Date | null;
  readonly replays: number;
}

export interface InboxFilter {
  readonly state?: InboxState;
  readonly provider?: Provider;
  readonly limit: number;
  readonly cursor?: string;
}

export async function listInbox(knex: Knex, filter: InboxFilter): Promise<Page<InboxRow>> {
  const query = knex('webhook_inbox')
    .orderBy([
      { column: 'received_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])
    .limit(filter.limit + 1);
  if (filter.state !== undefined) query.where({ state: filter.state });
  if (filter.provider !== undefined) query.where({ provider: filter.provider });
  afterCursor(query, filter.cursor, 'received_at', 'id');
  const rows = (await query) as InboxRow[];
  return pageOf(rows, filter.limit, (last) => [last.received_at, last.id]);
}

export async function findInboxEvent(knex: Knex, id: string): Promise<InboxRow | undefined> {
  return (await knex('webhook_inbox').where({ id }).first()) as InboxRow | undefined;
}

/** Whether the inbox holds a delivery of `provider` stored under exactly `eventKey`. */
export async function inboxHoldsEventKey(knex: Knex, provider: Provider, eventKey: string): Promise<boolean> {
  const row = (await knex('webhook_inbox').where({ provider, event_key: eventKey }).first('id')) as
    { id: string } | undefined;
  return row !== undefined;
}

/**
 * When each of these cards was last used by a payment (its latest change), for card-data retention
 * (src/cards/retention-service.ts, wired by the composition root); a card without payments is absent.
 */
export async function lastPaymentUseOfCards(
  db: Knex | Knex.Transaction,
  tokens: readonly string[],
): Promise<Map<string, Date>> {
  if (tokens.length === 0) return new Map();
  const rows = (await db('payments')
    .whereIn('card_token', tokens)
    .groupBy('card_token')
    .select('card_token')
    .max('updated_at as last_used')) as { card_token: string; last_used: Date | string }[];
  return new Map(rows.map((r) => [r.card_token, new Date(r.last_used)]));
}

/** Whether any fact was written by inbox event `inboxId` (it was applied at least once). */
export async function inboxEventHasFacts(knex: Knex, inboxId: string): Promise<boolean> {
  return (await knex('payment_facts').where({ inbox_id: inboxId }).first('kind')) !== undefined;
}
