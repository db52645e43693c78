/**
 * Composition root of the gateway webhooks: the secrets (loaded, or generated for development), the
 * signature schemes the HTTP chain runs as a declared step of each webhook operation, and the
 * handlers that hand verified events to the payment service.
 */
import type { Clock } from '../clock/clock.js';
import type { Config } from '../config/config.js';
import type { SignatureSchemes } from '../http/signed-body.js';
import type { HandlerMap } from '../http/types.js';
import type { Logger } from '../logging/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { PaymentService } from '../payments/payment-service.js';
import { webhookHandlers } from './webhook-handlers.js';
import { deliveryCounters, webhookSchemes } from './webhook-schemes.js';
import { loadWebhookSecrets } from './webhook-secrets.js';

export { storedEventDecoder } from './stored-events.js';

export interface WebhooksFeatureDeps {
  readonly config: Config['webhooks'];
  readonly payments: PaymentService;
  /** Whether digits are the PAN of a card in the vault (VaultService.isKnownPan). */
  readonly isKnownPan: (digits: string) => Promise<boolean>;
  /** The form of an id to store: itself, or its keyed digest when it reads as a card number. */
  readonly storedReference: (id: string) => Promise<string>;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
}

export interface WebhooksFeature {
  readonly handlers: HandlerMap;
  readonly signatures: SignatureSchemes;
}

export async function createWebhooksFeature(deps: WebhooksFeatureDeps): Promise<WebhooksFeature> {
  const now = deps.clock;
  const webhooks = await loadWebhookSecrets(deps.config);
  if (webhooks.generatedDevFile !== undefined) {
    deps.logger.warn(
      { file: webhooks.generatedDevFile },
      'DEVELOPMENT webhook secrets in use (generated into the data folder). Set WEBHOOK_PLATFORM_SECRETS, WEBHOOK_ADYEN_HMAC_KEYS and WEBHOOK_STRIPE_SECRETS for real use.',
    );
  }
  const counters = deliveryCounters(deps.metrics);
  return {
    handlers: webhookHandlers({
      payments: deps.payments,
      counters,
      now,
      isKnownPan: deps.isKnownPan,
      storedReference: deps.storedReference,
    }),
    signatures: webhookSchemes(webhooks.secrets, counters, now),
  };
}
