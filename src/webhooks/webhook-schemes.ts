/**
 * The three gateways' signature schemes as declared steps of their operations (`x-webhook-signature`
 * in openapi.yaml, run by http/signed-body.ts before the handler):
 * - `standard-webhooks` (platform): the signature over the exact bytes, then the message id's shape;
 *   sensitive authentication data refused (the platform is bound by our contract).
 * - `stripe`: the signature over the exact bytes; SAD dropped by the projection, not refused.
 * - `adyen-hmac`: HTTP Basic (when configured) before parsing; then, on the validated body, the
 *   environment flag and every item's HMAC, before any item is stored; SAD dropped, not refused.
 * A provider without secrets answers 503 WEBHOOK_PROVIDER_DISABLED before anything else. Every refusal
 * is counted (`webhook_deliveries_total` by provider and error code).
 */
import { refuseCardData } from '../card-data/card-data-guard.js';
import { AppError } from '../errors/app-error.js';
import type { SignatureSchemes } from '../http/signed-body.js';
import { METRICS } from '../metrics/catalogue.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Provider } from '../payments/payment-event.js';
import type { AdyenNotification } from './adyen-events.js';
import { basicAuthMatches, verifyAdyenItem, verifyStandardWebhook, verifyStripeSignature } from './signatures.js';
import type { WebhookSecrets } from './webhook-secrets.js';

/** The webhook delivery counters, shared by the signature step and the handlers. */
export interface DeliveryCounters {
  readonly delivered: (labels: { provider: Provider; outcome: string }) => void;
  readonly masked: (labels: { provider: Provider }, count: number) => void;
}

export function deliveryCounters(metrics: Metrics): DeliveryCounters {
  const delivered = metrics.counter(METRICS.webhookDeliveries);
  const masked = metrics.counter(METRICS.webhookCardDataMasked);
  return { delivered: (labels) => delivered(labels), masked: (labels, count) => masked(labels, count) };
}

export function webhookSchemes(secrets: WebhookSecrets, counters: DeliveryCounters, now: () => Date): SignatureSchemes {
  const refused = (provider: Provider) => (error: unknown) =>
    counters.delivered({ provider, outcome: error instanceof AppError ? error.code : 'error' });
  return {
    'standard-webhooks': {
      refuseSensitiveAuthenticationData: true,
      verifyBytes: (headers, raw) => {
        enabled(secrets.platform);
        const verified = verifyStandardWebhook(headers, raw, secrets.platform, secrets.toleranceSeconds, now());
        checkWebhookId(verified.id);
        return { secretIndexes: [verified.secretIndex], messageId: verified.id };
      },
      refused: refused('platform'),
    },
    stripe: {
      refuseSensitiveAuthenticationData: false,
      verifyBytes: (headers, raw) => {
        enabled(secrets.stripe);
        const verified = verifyStripeSignature(headers, raw, secrets.stripe, secrets.toleranceSeconds, now());
        return { secretIndexes: [verified.secretIndex] };
      },
      refused: refused('stripe'),
    },
    'adyen-hmac': {
      refuseSensitiveAuthenticationData: false,
      verifyBytes: (headers) => {
        enabled(secrets.adyenHmacKeys);
        // Required in production (config refuses to start without it); optional in development.
        if (secrets.adyenBasicAuth !== undefined && !basicAuthMatches(headers.authorization, secrets.adyenBasicAuth)) {
          throw new AppError('WEBHOOK_BASIC_AUTH_INVALID', {
            headers: { 'WWW-Authenticate': 'Basic realm="adyen-webhooks", charset="UTF-8"' },
          });
        }
        // Adyen signs fields, not bytes: the items are verified once the body is parsed and valid.
        return undefined;
      },
      verifyFields: (_headers, body) => {
        const notification = body as AdyenNotification;
        // The environment's flag is outside the item signatures: a test notification replayed against a
        // live service (or the reverse) is refused whole. Once WEBHOOK_ADYEN_ENVIRONMENT is configured, a
        // notification without the flag is refused the same way (dropping it must not skip the check).
        const expected = String(secrets.adyenEnvironment === 'live');
        const absent = notification.live === undefined;
        if ((absent && secrets.adyenEnvironmentConfigured) || (!absent && notification.live !== expected)) {
          throw new AppError('WEBHOOK_ENVIRONMENT_MISMATCH', {
            detail: `This endpoint takes notifications from Adyen's ${secrets.adyenEnvironment} environment only.`,
          });
        }
        return {
          secretIndexes: notification.notificationItems.map(
            (entry) => verifyAdyenItem(entry.NotificationRequestItem, secrets.adyenHmacKeys).secretIndex,
          ),
        };
      },
      refused: refused('adyen'),
    },
  };
}

function enabled(configured: readonly string[]): void {
  if (configured.length === 0) throw new AppError('WEBHOOK_PROVIDER_DISABLED');
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
  // sender using UUID message ids must not see those deliveries refused forever. So it passes here,
  // and one the detector flags is never stored as sent: the handler keys it by its keyed digest
  // (src/keys/reference-digests.ts; docs/card-data.md), which a crafted UUID around a PAN gets too.
  if (UUID_MESSAGE_ID.test(id)) return;
  refuseCardData({ 'webhook-id': id }, '/headers');
}

const UUID_MESSAGE_ID = /^(?:msg_)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
