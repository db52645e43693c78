/** HTTP adapters: a shopper's purchases, the webhook inbox and its replay action. */
import type { Knex } from 'knex';
import { callerOf } from '../http/callers.js';
import { AppError } from '../errors/app-error.js';
import { pageBody } from '../db/keyset-cursor.js';
import type { HandlerMap } from '../http/types.js';
import { validInput } from '../http/types.js';
import { reachableShopper } from '../shoppers/reachable-shopper.js';
import { mergedInto } from '../shoppers/shopper-access.js';
import type { Provider, StoredEventMapper } from './payment-event.js';
import { findInboxEvent, listInbox, listPurchases, type InboxRow } from './payment-queries.js';
import type { InboxState, PaymentRow, PaymentService } from './payment-service.js';

export function paymentsHandlers(knex: Knex, payments: PaymentService, storedEvent: StoredEventMapper): HandlerMap {
  return {
    async listShopperPurchases(req, res) {
      const { query } = validInput(req);
      // A shopper token reaches its own shopper only; anything else looks exactly like "no such shopper".
      const shopperRef = await reachableShopper(knex, req);
      // Payments still filed under a shopper merged into this one (delivered during the merge) count too.
      const page = await listPurchases(knex, [shopperRef, ...(await mergedInto(knex, shopperRef))], {
        limit: query['limit'] as number,
        ...optional('channel', query['channel'] as string | undefined),
        ...optional('from', dateOf(query['from'])),
        ...optional('to', dateOf(query['to'])),
        ...optional('cursor', query['cursor'] as string | undefined),
      });
      res.json(pageBody(page, purchaseJson));
    },

    async listWebhookInbox(req, res) {
      const { query } = validInput(req);
      const page = await listInbox(knex, {
        limit: query['limit'] as number,
        ...optional('state', query['state'] as InboxState | undefined),
        ...optional('provider', query['provider'] as Provider | undefined),
        ...optional('cursor', query['cursor'] as string | undefined),
      });
      res.json(pageBody(page, inboxJson));
    },

    async replayWebhookEvent(req, res) {
      const id = validInput(req).path['eventId'] as string;
      const row = await findInboxEvent(knex, id);
      if (row === undefined) throw new AppError('NOT_FOUND', { detail: 'No such inbox event.' });
      if (row.state === 'rejected') throw new AppError('INBOX_EVENT_NOT_REPLAYABLE');
      await payments.replay(id, storedEvent(row), callerOf(req));
      res.json(inboxJson((await findInboxEvent(knex, id)) as InboxRow));
    },
  };
}

function purchaseJson(row: PaymentRow): Record<string, unknown> {
  return {
    paymentId: row.id,
    provider: row.provider,
    gatewayReference: row.external_id,
    ...optional('merchantReference', row.merchant_reference),
    ...optional('channel', row.channel),
    ...optional('storeId', row.store_id),
    ...optional('terminalId', row.terminal_id),
    state: row.state,
    amount: { value: row.authorised_amount, currency: row.currency },
    capturedAmount: row.captured_amount,
    refundedAmount: row.refunded_amount,
    chargedBackAmount: row.charged_back_amount,
    ...optional('cardToken', row.card_token),
    ...optional('last4', row.card_last4),
    authorisedAt: (row.authorised_at as Date).toISOString(),
  };
}

function inboxJson(row: InboxRow): Record<string, unknown> {
  return {
    id: row.id,
    provider: row.provider,
    eventKey: row.event_key,
    eventType: row.event_type,
    state: row.state,
    ...optional('paymentId', row.payment_id),
    ...optional('errorCode', row.error_code),
    secretIndex: row.secret_index,
    receivedAt: row.received_at.toISOString(),
    ...optional('appliedAt', row.applied_at?.toISOString()),
    replays: row.replays,
    masked: row.masked,
    payload: row.payload,
  };
}

function optional<K extends string, V>(key: K, value: V | null | undefined): { [P in K]?: V } {
  return value === null || value === undefined ? {} : ({ [key]: value } as { [P in K]?: V });
}

function dateOf(value: unknown): Date | undefined {
  return typeof value === 'string' ? new Date(value) : undefined;
}
