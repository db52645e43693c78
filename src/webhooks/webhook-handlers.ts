/**
 * HTTP adapters of the three gateway webhooks: verify the signature over the raw bytes, then parse
 * and validate against openapi.yaml, then map and hand to the payment service. Every delivery is
 * counted by provider and outcome.
 */
import type { Request, Response } from 'express';
import { AppError } from '../errors/app-error.js';
import { checkBody } from '../http/operation-middleware.js';
import type { HandlerMap } from '../http/types.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Provider } from '../payments/payment-event.js';
import type { IngestResult, PaymentService } from '../payments/payment-service.js';
import { adyenEvent, type AdyenItem } from './adyen-events.js';
import { platformEvent, type PlatformPaymentEvent } from './platform-events.js';
import { basicAuthMatches, verifyAdyenItem, verifyStandardWebhook, verifyStripeSignature } from './signatures.js';
import { stripeEvent, type StripeEvent } from './stripe-events.js';
import type { WebhookSecrets } from './webhook-secrets.js';

export interface WebhookDeps {
  readonly payments: PaymentService;
  readonly secrets: WebhookSecrets;
  readonly metrics: Metrics;
  readonly now?: () => Date;
}

export function webhookHandlers(deps: WebhookDeps): HandlerMap {
  const { payments, secrets } = deps;
  const now = deps.now ?? (() => new Date());
  const delivered = deps.metrics.counter(
    'webhook_deliveries_total',
    'Webhook deliveries by provider and outcome (applied, parked, failed, ignored, duplicate, or the error code).',
  );
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
      const body = parseJson(raw);
      checkBody(operationOf(req), body, { refuseSensitiveAuthenticationData: true });
      const result = await payments.ingest(
        platformEvent(body as PlatformPaymentEvent, verified.id),
        verified.secretIndex,
      );
      res.status(200).json(receipt(result));
      return outcome(result);
    }),

    receiveAdyenWebhook: counted('adyen', async (req, res) => {
      enabled(secrets.adyenHmacKeys);
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
      // any is stored. (`cvcResult` and the like are results, not card data: no SAD check here.)
      checkBody(operationOf(req), body, { refuseSensitiveAuthenticationData: false });
      const items = (body as { notificationItems: { NotificationRequestItem: AdyenItem }[] }).notificationItems.map(
        (entry) => entry.NotificationRequestItem,
      );
      const verified = items.map((item) => ({ item, ...verifyAdyenItem(item, secrets.adyenHmacKeys) }));
      const outcomes: string[] = [];
      for (const { item, secretIndex } of verified) {
        outcomes.push(outcome(await payments.ingest(adyenEvent(item, now()), secretIndex)));
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
      const result = await payments.ingest(stripeEvent(body as StripeEvent), verified.secretIndex);
      res.status(200).json(receipt(result));
      return outcome(result);
    }),
  };
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
