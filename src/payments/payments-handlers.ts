/** HTTP adapters: a shopper's purchases, the webhook inbox and its replay action. */
import type { Request } from 'express';
import { callerOf } from '../http/callers.js';
import { pageBody } from '../db/keyset-cursor.js';
import { contractHandlers, filled, type Schemas } from '../http/contract.js';
import type { HandlerMap } from '../http/types.js';
import type { InboxRow } from './payment-read-store.js';
import type { PaymentRow, PaymentService } from './payment-service.js';
import type { PaymentState } from './payment-state.js';

/**
 * The path's shopper, if the caller may reach it, followed by the references merged into it (their
 * payments, delivered during a merge, count too). Provided by the loyalty feature, which owns
 * shoppers; it throws as it does for its own routes (`404`, or `308` to a survivor).
 */
export type ReachableShopperRefs = (req: Request) => Promise<readonly string[]>;

/**
 * What each of these payments earned and why (programme and campaign versions, conditions, points),
 * by payment id; a payment that earned nothing is absent. Provided by the loyalty feature, which owns
 * the ledger: payments does not read loyalty's tables.
 */
export type PurchaseEarnings = (
  paymentIds: readonly string[],
) => Promise<ReadonlyMap<string, Schemas['PurchaseEarning']>>;

export interface PaymentsHandlerDeps {
  readonly payments: PaymentService;
  readonly shopperRefs: ReachableShopperRefs;
  readonly earnings: PurchaseEarnings;
}

export function paymentsHandlers({ payments, shopperRefs, earnings }: PaymentsHandlerDeps): HandlerMap {
  return contractHandlers({
    async listShopperPurchases(req, res) {
      const { query } = req.valid;
      // A shopper token reaches its own shopper only; anything else looks exactly like "no such shopper".
      const page = await payments.listPurchases(await shopperRefs(req), {
        limit: filled(query.limit, 'limit'),
        ...optional('channel', query.channel),
        ...optional('from', dateOf(query.from)),
        ...optional('to', dateOf(query.to)),
        ...optional('cursor', query.cursor),
      });
      // One read for the page, whatever its size.
      const earned = await earnings(page.items.map((p) => p.id));
      res.json(pageBody(page, (row) => withEarning(purchaseJson(row), earned.get(row.id))));
    },

    async listWebhookInbox(req, res) {
      const { query } = req.valid;
      const page = await payments.listInbox({
        limit: filled(query.limit, 'limit'),
        ...optional('state', query.state),
        ...optional('provider', query.provider),
        ...optional('cursor', query.cursor),
      });
      res.json(pageBody(page, inboxJson));
    },

    async replayWebhookEvent(req, res) {
      res.json(inboxJson(await payments.replayStored(req.valid.path.eventId, callerOf(req))));
    },
  });
}

/**
 * A purchase is a payment that was authorised: listPurchases selects those states only, so it has a
 * state the contract lists, a currency and an authorisation time. Anything else is our bug, not an answer.
 */
function purchaseJson(row: PaymentRow): Schemas['Purchase'] {
  const { state, currency, authorised_at: authorisedAt } = row;
  if (!isPurchaseState(state) || currency === null || authorisedAt === null) {
    throw new Error(`payment ${row.id} (${state}) is not a purchase`);
  }
  return {
    paymentId: row.id,
    provider: row.provider,
    gatewayReference: row.external_id,
    ...optional('merchantReference', row.merchant_reference),
    ...optional('channel', row.channel),
    ...optional('storeId', row.store_id),
    ...optional('terminalId', row.terminal_id),
    state,
    amount: { value: row.authorised_amount, currency },
    capturedAmount: row.captured_amount,
    refundedAmount: row.refunded_amount,
    chargedBackAmount: row.charged_back_amount,
    ...optional('cardToken', row.card_token),
    ...optional('last4', row.card_last4),
    ...(row.wallet_type === null
      ? {}
      : { wallet: { type: row.wallet_type, ...optional('tokenLast4', row.token_last4) } }),
    authorisedAt: authorisedAt.toISOString(),
  };
}

function withEarning(
  purchase: Schemas['Purchase'],
  earning: Schemas['PurchaseEarning'] | undefined,
): Schemas['Purchase'] {
  return earning === undefined ? purchase : { ...purchase, earning };
}

function inboxJson(row: InboxRow): Schemas['InboxEvent'] {
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

const PURCHASE_STATES: ReadonlySet<PaymentState> = new Set<Schemas['PaymentState']>([
  'authorised',
  'cancelled',
  'captured',
  'partially_refunded',
  'refunded',
  'charged_back',
]);

function isPurchaseState(state: PaymentState): state is Schemas['PaymentState'] {
  return PURCHASE_STATES.has(state);
}

function optional<K extends string, V>(key: K, value: V | null | undefined): { [P in K]?: V } {
  return value === null || value === undefined ? {} : ({ [key]: value } as { [P in K]?: V });
}

function dateOf(value: string | undefined): Date | undefined {
  return value === undefined ? undefined : new Date(value);
}
