/**
 * HTTP adapters of the three gateway webhooks. The signature is a declared step of each operation
 * (`x-webhook-signature` in openapi.yaml; the schemes are webhook-schemes.ts): by the time a handler
 * runs, the delivery is verified, parsed and validated. The handler maps it and hands it to the
 * payment service. Every delivery is counted by provider and outcome (refusals by the signature step
 * included).
 *
 * Card data (docs/card-data.md): each adapter projects the delivery onto its allow-list and masks card
 * data in the free text it keeps; the masking is counted here (`webhook_card_data_masked_total`, by
 * provider) and listed on the inbox event. A delivery with card data in free text is acknowledged and
 * applied, never refused: a refused delivery is retried, which would only delay the shopper's points.
 * Sensitive authentication data sent by Adyen or Stripe is dropped by the projection (it is not a
 * reason to refuse a delivery the gateway will retry forever); the platform's own gateway, bound by
 * our contract, is refused with 422 SENSITIVE_AUTHENTICATION_DATA. Ids are not free text: they are
 * stored and served as sent, so an id holding a card number (platform `webhook-id`, payment, refund,
 * chargeback ids; Stripe event and object ids) refuses the delivery with 422 CARD_NUMBER_NOT_ALLOWED;
 * the one exception, a UUID-shaped platform `webhook-id`, is stored as its keyed digest instead.
 */
import { refuseCardData } from '../card-data/card-data-guard.js';
import { AppError } from '../errors/app-error.js';
import {
  contractHandlers,
  type ContractHandler,
  type ContractRequest,
  type ContractResponse,
  type OperationId,
  type Schemas,
} from '../http/contract.js';
import { signatureOf } from '../http/signed-body.js';
import type { HandlerMap } from '../http/types.js';
import type { PaymentEventInput, Provider } from '../payments/payment-event.js';
import type { IngestResult, PaymentService } from '../payments/payment-service.js';
import { adyenEvent, referencesThatMayBeCards } from './adyen-events.js';
import { platformCardUpdate, platformEvent, refuseWalletPan, type PlatformPaymentEvent } from './platform-events.js';
import { stripeEvent, type StripeEvent } from './stripe-events.js';
import type { DeliveryCounters } from './webhook-schemes.js';

export interface WebhookDeps {
  readonly payments: PaymentService;
  readonly counters: DeliveryCounters;
  readonly now?: () => Date;
  /** Whether digits are the PAN of a card in the vault (VaultService.isKnownPan). */
  readonly isKnownPan?: (digits: string) => Promise<boolean>;
  /**
   * The form of a platform `webhook-id` to store (keys/reference-digests.ts `storedReference`): the id,
   * or its keyed digest when it is a UUID that reads as a card number. Rejects (503) when it needs the
   * reference key and cannot have it: the id is then never stored.
   */
  readonly storedReference: (id: string) => Promise<string>;
}

export function webhookHandlers(deps: WebhookDeps): HandlerMap {
  const { payments, counters } = deps;
  const now = deps.now ?? (() => new Date());
  const ingest = async (event: PaymentEventInput, secretIndex: number): Promise<IngestResult> => {
    const result = await payments.ingest(event, secretIndex);
    const count = event.masked?.length ?? 0;
    if (count > 0 && !result.duplicate) counters.masked({ provider: event.provider }, count);
    return result;
  };
  const counted =
    <Op extends OperationId>(
      provider: Provider,
      handle: (req: ContractRequest<Op>, res: ContractResponse<Op>) => Promise<string>,
    ): ContractHandler<Op> =>
    async (req, res) => {
      try {
        counters.delivered({ provider, outcome: await handle(req, res) });
      } catch (error) {
        counters.delivered({ provider, outcome: error instanceof AppError ? error.code : 'error' });
        throw error;
      }
    };

  return contractHandlers({
    receivePlatformWebhook: counted('platform', async (req, res) => {
      const { messageId, secretIndexes } = signatureOf(req);
      const { body: delivery } = req.valid;
      if (delivery.type !== 'card.updated') {
        refusePlatformIdsWithCardData(delivery);
        refuseWalletPan(delivery);
      }
      // A UUID webhook-id passes the edge even when it reads as a card number (webhook-schemes.ts):
      // that one is keyed by its digest (inbox event_key, the fact keys derived from it), never as sent.
      const digest = await deps.storedReference(messageId as string);
      // An earlier release stored such an id as sent: its redelivery matches that row (a duplicate,
      // nothing written), never a second event under the digest. Migration 20261209300000 records those
      // rows in card_data_legacy_findings.
      const eventKey =
        digest !== messageId && (await payments.holdsDelivery('platform', messageId as string))
          ? (messageId as string)
          : digest;
      const event =
        delivery.type === 'card.updated' ? platformCardUpdate(delivery, eventKey) : platformEvent(delivery, eventKey);
      const result = await ingest(event, secretIndexes[0] as number);
      res.status(200).json(receipt(result));
      return outcome(result);
    }),

    receiveAdyenWebhook: counted('adyen', async (req, res) => {
      // Every item is verified (webhook-schemes.ts) before any is stored.
      const { secretIndexes } = signatureOf(req);
      const items = req.valid.body.notificationItems.map((entry) => entry.NotificationRequestItem);
      const outcomes: string[] = [];
      for (const [index, item] of items.entries()) {
        // A reference that is a known card's PAN is rejected and stored masked (docs/card-data.md); an
        // unknown PAN is indistinguishable from a real all-digit Adyen reference.
        let referenceIsKnownCard = false;
        for (const reference of referencesThatMayBeCards(item)) {
          if (deps.isKnownPan !== undefined && (await deps.isKnownPan(reference))) referenceIsKnownCard = true;
        }
        const event = adyenEvent(item, now(), { referenceIsKnownCard });
        outcomes.push(outcome(await ingest(event, secretIndexes[index] as number)));
      }
      res.status(200).type('text/plain').send('[accepted]');
      return outcomes.length === 1 ? (outcomes[0] as string) : 'batch';
    }),

    receiveStripeWebhook: counted('stripe', async (req, res) => {
      const { body } = req.valid;
      refuseStripeIdsWithCardData(body);
      const result = await ingest(stripeEvent(body), signatureOf(req).secretIndexes[0] as number);
      res.status(200).json(receipt(result));
      return outcome(result);
    }),
  });
}

/**
 * The platform's ids are stored and served as sent (they identify; masking would merge two of them),
 * so one holding a card number is refused whole with 422 CARD_NUMBER_NOT_ALLOWED, nothing stored. The
 * platform is bound by our contract and will retry a refused delivery until it fixes the id.
 */
function refusePlatformIdsWithCardData(event: PlatformPaymentEvent): void {
  refuseCardData({ id: event.payment.id }, '/body/payment');
  refuseCardData({ id: event.refund?.id }, '/body/refund');
  refuseCardData({ id: event.chargeback?.id }, '/body/chargeback');
}

/**
 * Stripe's event and object ids are keys (event_key, external_id, fact keys): masking one could merge
 * two events. Stripe never generates an id holding a Luhn-valid 12+ digit run, so such an event is
 * forged or corrupt and refused with 422 CARD_NUMBER_NOT_ALLOWED, nothing stored.
 */
function refuseStripeIdsWithCardData(event: StripeEvent): void {
  refuseCardData({ id: typeof event.id === 'string' ? event.id : undefined });
  const object = event.data?.object ?? {};
  const text = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
  refuseCardData({ id: text(object['id']), charge: text(object['charge']) }, '/body/data/object');
}

function receipt(result: IngestResult): Schemas['WebhookReceipt'] {
  return { eventId: result.inboxId, state: result.state, duplicate: result.duplicate };
}

function outcome(result: IngestResult): string {
  return result.duplicate ? 'duplicate' : result.state;
}
