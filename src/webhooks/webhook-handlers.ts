/**
 * HTTP adapters of the three gateway webhooks: verify the signature over the raw bytes, then parse
 * and validate against openapi.yaml, then map and hand to the payment service. Every delivery is
 * counted by provider and outcome.
 *
 * Card data (docs/card-data.md): each adapter projects the delivery onto its allow-list and masks card
 * data in the free text it keeps; the masking is counted here (`webhook_card_data_masked_total`, by
 * provider) and listed on the inbox event. A delivery with card data in free text is acknowledged and
 * applied, never refused: a refused delivery is retried, which would only delay the shopper's points.
 * Sensitive authentication data sent by Adyen or Stripe is dropped by the projection (it is not a
 * reason to refuse a delivery the gateway will retry forever); the platform's own gateway, bound by
 * our contract, is refused with 422 SENSITIVE_AUTHENTICATION_DATA. Ids are not free text: they are
 * stored and served as sent, so an id holding a card number (platform `webhook-id`, payment, refund,
 * chargeback ids; Stripe event and object ids) refuses the delivery with 422 CARD_NUMBER_NOT_ALLOWED.
 */
import type { Request, Response } from 'express';
import { refuseCardData } from '../card-data/card-data-guard.js';
import { AppError } from '../errors/app-error.js';
import { checkBody } from '../http/operation-middleware.js';
import type { HandlerMap } from '../http/types.js';
import type { Metrics } from '../metrics/metrics.js';
import type { PaymentEventInput, Provider } from '../payments/payment-event.js';
import type { IngestResult, PaymentService } from '../payments/payment-service.js';
import { adyenEvent, referencesThatMayBeCards, type AdyenItem } from './adyen-events.js';
import { platformEvent, type PlatformPaymentEvent } from './platform-events.js';
import { basicAuthMatches, verifyAdyenItem, verifyStandardWebhook, verifyStripeSignature } from './signatures.js';
import { stripeEvent, type StripeEvent } from './stripe-events.js';
import type { WebhookSecrets } from './webhook-secrets.js';

export interface WebhookDeps {
  readonly payments: PaymentService;
  readonly secrets: WebhookSecrets;
  readonly metrics: Metrics;
  readonly now?: () => Date;
  /** Whether digits are the PAN of a card in the vault (VaultService.isKnownPan). */
  readonly isKnownPan?: (digits: string) => Promise<boolean>;
}

export function webhookHandlers(deps: WebhookDeps): HandlerMap {
  const { payments, secrets } = deps;
  const now = deps.now ?? (() => new Date());
  const delivered = deps.metrics.counter(
    'webhook_deliveries_total',
    'Webhook deliveries by provider and outcome (applied, parked, failed, ignored, duplicate, or the error code).',
  );
  const masked = deps.metrics.counter(
    'webhook_card_data_masked_total',
    'Fields of webhook deliveries whose card data was masked or dropped before storing, by provider.',
  );
  const ingest = async (event: PaymentEventInput, secretIndex: number): Promise<IngestResult> => {
    const result = await payments.ingest(event, secretIndex);
    const count = event.masked?.length ?? 0;
    if (count > 0 && !result.duplicate) masked({ provider: event.provider }, count);
    return result;
  };
  const counted =
    (provider: Provider, handle: (req: Request, res: Response) => Promise<string>) =>
    async (req: Request, res: Response): Promise<void> => {
      try {
        delivered({ provider, outcome: await handle(req, res) });
      } catch (error) {
        delivered({ provider, outcome: error instanceof AppError ? error.code : 'error' });
        throw error;
      }
    };

  return {
    receivePlatformWebhook: counted('platform', async (req, res) => {
      enabled(secrets.platform);
      const raw = rawBodyOf(req);
      const verified = verifyStandardWebhook(req.headers, raw, secrets.platform, secrets.toleranceSeconds, now());
      checkWebhookId(verified.id);
      const body = parseJson(raw);
      checkBody(operationOf(req), body, { refuseSensitiveAuthenticationData: true });
      refusePlatformIdsWithCardData(body as PlatformPaymentEvent);
      const result = await ingest(platformEvent(body as PlatformPaymentEvent, verified.id), verified.secretIndex);
      res.status(200).json(receipt(result));
      return outcome(result);
    }),

    receiveAdyenWebhook: counted('adyen', async (req, res) => {
      enabled(secrets.adyenHmacKeys);
      // Required in production (config refuses to start without it); optional in development.
      if (
        secrets.adyenBasicAuth !== undefined &&
        !basicAuthMatches(req.headers.authorization, secrets.adyenBasicAuth)
      ) {
        throw new AppError('WEBHOOK_BASIC_AUTH_INVALID', {
          headers: { 'WWW-Authenticate': 'Basic realm="adyen-webhooks", charset="UTF-8"' },
        });
      }
      const body = parseJson(rawBodyOf(req));
      // Adyen signs fields, not bytes: the body is parsed first, then every item is verified before
      // any is stored. SAD is not refused but dropped by the projection (adyen-events.ts).
      checkBody(operationOf(req), body, { refuseSensitiveAuthenticationData: false });
      const notification = body as { live?: string; notificationItems: { NotificationRequestItem: AdyenItem }[] };
      // The environment's flag is outside the item signatures: a test notification replayed against a
      // live service (or the reverse) is refused whole.
      if (notification.live !== undefined && notification.live !== String(secrets.adyenEnvironment === 'live')) {
        throw new AppError('WEBHOOK_ENVIRONMENT_MISMATCH', {
          detail: `This endpoint takes notifications from Adyen's ${secrets.adyenEnvironment} environment only.`,
        });
      }
      const items = notification.notificationItems.map((entry) => entry.NotificationRequestItem);
      const verified = items.map((item) => ({ item, ...verifyAdyenItem(item, secrets.adyenHmacKeys) }));
      const outcomes: string[] = [];
      for (const { item, secretIndex } of verified) {
        // A reference that is a known card's PAN is rejected and stored masked (docs/card-data.md); an
        // unknown PAN is indistinguishable from a real all-digit Adyen reference.
        let referenceIsKnownCard = false;
        for (const reference of referencesThatMayBeCards(item)) {
          if (deps.isKnownPan !== undefined && (await deps.isKnownPan(reference))) referenceIsKnownCard = true;
        }
        outcomes.push(outcome(await ingest(adyenEvent(item, now(), { referenceIsKnownCard }), secretIndex)));
      }
      res.status(200).type('text/plain').send('[accepted]');
      return outcomes.length === 1 ? (outcomes[0] as string) : 'batch';
    }),

    receiveStripeWebhook: counted('stripe', async (req, res) => {
      enabled(secrets.stripe);
      const raw = rawBodyOf(req);
      const verified = verifyStripeSignature(req.headers, raw, secrets.stripe, secrets.toleranceSeconds, now());
      const body = parseJson(raw);
      checkBody(operationOf(req), body, { refuseSensitiveAuthenticationData: false });
      refuseStripeIdsWithCardData(body as StripeEvent);
      const result = await ingest(stripeEvent(body as StripeEvent), verified.secretIndex);
      res.status(200).json(receipt(result));
      return outcome(result);
    }),
  };
}

/**
 * The Standard Webhooks message id is our idempotency key (event_key, fact keys): a sane shape only
 * (`msg_` and a base62 KSUID as `standardwebhooks`/Svix generate, UUIDs, ULIDs all fit), and never a
 * card number. Checked after the signature, so only the signed platform learns the rule.
 */
const WEBHOOK_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

function checkWebhookId(id: string): void {
  if (!WEBHOOK_ID.test(id)) {
    throw new AppError('WEBHOOK_ID_INVALID', {
      detail: 'webhook-id must match ^[A-Za-z0-9_.:-]{1,128}$.',
      extensions: { errors: [{ pointer: '/headers/webhook-id', message: 'must match ^[A-Za-z0-9_.:-]{1,128}$' }] },
    });
  }
  // A UUID (bare or after `msg_`) reads as a dashed card number about once in 180 random values; a
  // sender using UUID message ids must not see those deliveries refused forever. A card number is
  // never UUID-shaped by accident; `event_key` is an exempt reference column (docs/card-data.md).
  if (UUID_MESSAGE_ID.test(id)) return;
  refuseCardData({ 'webhook-id': id }, '/headers');
}

const UUID_MESSAGE_ID = /^(?:msg_)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

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

function enabled(secrets: readonly string[]): void {
  if (secrets.length === 0) throw new AppError('WEBHOOK_PROVIDER_DISABLED');
}

function rawBodyOf(req: Request): Buffer {
  return req.rawBody ?? Buffer.alloc(0);
}

function operationOf(req: Request): NonNullable<Request['operation']> {
  if (req.operation === undefined) throw new Error('webhook handler reached without its operation');
  return req.operation;
}

function parseJson(raw: Buffer): unknown {
  try {
    return JSON.parse(raw.toString('utf8')) as unknown;
  } catch {
    // No cause attached: V8's message quotes the input, which may hold a card number.
    throw new AppError('MALFORMED_JSON');
  }
}

function receipt(result: IngestResult): Record<string, unknown> {
  return { eventId: result.inboxId, state: result.state, duplicate: result.duplicate };
}

function outcome(result: IngestResult): string {
  return result.duplicate ? 'duplicate' : result.state;
}
