/**
 * Composition root of the payments feature: the payment service (with group commit counted in the
 * metrics) and its HTTP handlers. Gateways and shoppers are other features: the stored-event decoder
 * (webhooks) and the reachable-shopper lookup (loyalty) are handed in.
 */
import type { VaultService } from '../cards/vault-service.js';
import type { Clock } from '../clock/clock.js';
import type { Config } from '../config/config.js';
import type { Knex } from 'knex';
import type { HandlerMap } from '../http/types.js';
import { METRICS } from '../metrics/catalogue.js';
import type { Metrics } from '../metrics/metrics.js';
import { PaymentService, type PaymentTransitionListener, type StoredEventDecoder } from './payment-service.js';
import { paymentsHandlers, type PurchaseEarnings, type ReachableShopperRefs } from './payments-handlers.js';

export interface PaymentsFeatureDeps {
  readonly knex: Knex;
  readonly vault: VaultService;
  readonly config: Config['payments'];
  /** Told about every transition, inside the batch's transaction (loyalty earning, tests). */
  readonly listeners: readonly PaymentTransitionListener[];
  readonly decodeStored: StoredEventDecoder;
  readonly shopperRefs: ReachableShopperRefs;
  /** What each purchase earned (loyalty provides it). */
  readonly earnings: PurchaseEarnings;
  readonly clock: Clock;
  readonly metrics: Metrics;
}

export interface PaymentsFeature {
  readonly payments: PaymentService;
  readonly handlers: HandlerMap;
}

export function createPaymentsFeature(deps: PaymentsFeatureDeps): PaymentsFeature {
  const { config, metrics } = deps;
  const batches = metrics.counter(METRICS.paymentBatches);
  const batched = metrics.counter(METRICS.paymentBatchEvents);
  const batchSize = metrics.histogram(METRICS.paymentBatchSize).bind({});
  const payments = new PaymentService(deps.knex, deps.vault, {
    autoCaptureChannels: config.autoCaptureChannels,
    listeners: deps.listeners,
    decodeStored: deps.decodeStored,
    now: deps.clock,
    batch: {
      maxBatch: config.batchMax,
      concurrency: config.batchConcurrency,
      onBatch: (size) => {
        batches({});
        batched({}, size);
        batchSize(size);
      },
    },
  });
  return { payments, handlers: paymentsHandlers({ payments, shopperRefs: deps.shopperRefs, earnings: deps.earnings }) };
}
