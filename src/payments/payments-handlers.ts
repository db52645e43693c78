/** HTTP adapters: a shopper's purchases, the webhook inbox and its replay action. */
import type { Request } from 'express';
import { callerOf } from '../http/callers.js';
import { pageBody } from '../db/keyset-cursor.js';
import type { HandlerMap } from '../http/types.js';
import { validInput } from '../http/types.js';
import type { Provider } from './payment-event.js';
import type { InboxRow } from './payment-read-store.js';
import type { InboxState, PaymentRow, PaymentService } from './payment-service.js';

/**
 * The path's shopper, if the caller may reach it, followed by the references merged into it (their
 * payments, delivered during a merge, count too). Provided by the loyalty feature, which owns
 * shoppers; it throws as it does for its own routes (`404`, or `308` to a survivor).
 */
export type ReachableShopperRefs = (req: Request) => Promise<readonly string[]>;

export interface PaymentsHandlerDeps {
  readonly payments: PaymentService;
  readonly shopperRefs: ReachableShopperRefs;
}

export function paymentsHandlers({ payments, shopperRefs }: PaymentsHandlerDeps): HandlerMap {
  return {
    async listShopperPurchases(req, res) {
      const { query } = validInput(req);
      // A shopper token reaches its own shopper only; anything else looks exactly like "no such shopper".
      const page = await payments.listPurchases(await shopperRefs(req), {
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
      const page = await payments.listInbox({
        limit: query['limit'] as number,
        ...optional('state', query['state'] as InboxState | undefined),
        ...optional('provider', query['provider'] as Provider | undefined),
        ...optional('cursor', query['cursor'] as string | undefined),
      });
      res.json(pageBody(page, inboxJson));
    },

    async replayWebhookEvent(req, res) {
      const id = validInput(req).path['eventId'] as string;
      res.json(inboxJson(await payments.replayStored(id, callerOf(req))));
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
