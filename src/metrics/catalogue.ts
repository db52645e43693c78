/**
 * Every metric family the service records, in one place: name, type, help, the label names with the
 * closed vocabulary each takes, and a histogram's buckets. The features register these definitions on
 * their instance's {@link Metrics}; docs/reference/metrics.md is generated from this catalogue and from
 * prom-client's default process metrics (scripts/generate-reference.ts), and a test checks that a live
 * scrape holds exactly these families and the defaults.
 *
 * Names are kept stable (dashboards, docs/grafana/loyalty-vault.json, alerts and bench depend on them).
 * One was renamed when the registry moved to prom-client (issue 23): `key_cryptoperiod_days_left`
 * became `key_cryptoperiod_remaining_seconds`, in the base unit, as `promtool check metrics` requires.
 */

/** Buckets for HTTP requests of a service answering in about 1–20 ms, with room for the slow tail. */
export const REQUEST_SECONDS_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
] as const;

/** Buckets for an outbound delivery attempt: a subscriber's HTTP endpoint, up to its timeout. */
export const DELIVERY_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** Group-commit batch sizes: powers of two up to well past PAYMENTS_BATCH_MAX's range. */
export const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256] as const;

export interface MetricDefinition<L extends string = string> {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  readonly help: string;
  /** Label name → the closed vocabulary of its values (prose for the reference page). */
  readonly labels: Readonly<Record<L, string>>;
  readonly buckets?: readonly number[];
  /** How the value is obtained when that is not obvious (reference page). */
  readonly note?: string;
}

const define = <L extends string>(definition: MetricDefinition<L>): MetricDefinition<L> => definition;

const PROVIDER = '`platform`, `adyen`, `stripe`';

export const METRICS = {
  httpRequestDuration: define({
    name: 'http_request_duration_seconds',
    type: 'histogram',
    help: 'HTTP request duration from arrival to the response finishing, by operation and status class.',
    labels: {
      operation:
        "the OpenAPI operationId (`unmatched` for a path the contract does not have); never the request's path",
      status_class: '`1xx`, `2xx`, `3xx`, `4xx`, `5xx`',
    },
    buckets: REQUEST_SECONDS_BUCKETS,
  }),
  webhookDeliveries: define({
    name: 'webhook_deliveries_total',
    type: 'counter',
    help: 'Webhook deliveries by provider and outcome (applied, parked, failed, ignored, duplicate, or the error code).',
    labels: {
      provider: PROVIDER,
      outcome: '`applied`, `parked`, `failed`, `ignored`, `duplicate`, an error code of the catalogue, or `error`',
    },
  }),
  webhookCardDataMasked: define({
    name: 'webhook_card_data_masked_total',
    type: 'counter',
    help: 'Fields of webhook deliveries whose card data was masked or dropped before storing, by provider.',
    labels: { provider: PROVIDER },
  }),
  paymentBatches: define({
    name: 'payment_batches_total',
    type: 'counter',
    help: 'Committed webhook transactions (group commit).',
    labels: {},
  }),
  paymentBatchEvents: define({
    name: 'payment_batch_events_total',
    type: 'counter',
    help: 'Webhook events committed by those transactions; divided by payment_batches_total, the mean batch size.',
    labels: {},
  }),
  paymentBatchSize: define({
    name: 'payment_batch_size',
    type: 'histogram',
    help: 'Webhook events per committed group-commit transaction (the distribution of batch sizes).',
    labels: {},
    buckets: BATCH_SIZE_BUCKETS,
  }),
  outboundDeliveries: define({
    name: 'outbound_deliveries_total',
    type: 'counter',
    help: 'Outbound event delivery attempts, by outcome.',
    labels: { outcome: '`delivered`, `failed`, `timeout`, `gone`, `refused`' },
  }),
  outboundDeadLetters: define({
    name: 'outbound_dead_letters_total',
    type: 'counter',
    help: 'Outbound event deliveries dead-lettered.',
    labels: {},
  }),
  outboundDeliveryDuration: define({
    name: 'outbound_delivery_duration_seconds',
    type: 'histogram',
    help: 'Duration of an outbound event delivery attempt (target check, signing and the send), by outcome.',
    labels: { outcome: '`delivered`, `failed`, `timeout`, `gone`, `refused`' },
    buckets: DELIVERY_SECONDS_BUCKETS,
  }),
  outboundDeliveriesPending: define({
    name: 'outbound_deliveries_pending',
    type: 'gauge',
    help: 'Outbound event deliveries waiting (all subscriptions).',
    labels: {},
    note: 'read from the database every 15 s, not at scrape time',
  }),
  outboundDeliveryLag: define({
    name: 'outbound_delivery_lag_seconds',
    type: 'gauge',
    help: 'Age of the oldest waiting outbound event delivery.',
    labels: {},
    note: 'read from the database every 15 s, not at scrape time',
  }),
  outboundBreakerOpened: define({
    name: 'outbound_breaker_opened_total',
    type: 'counter',
    help: 'Times a subscription circuit breaker opened (or opened again after a failed probe) on this instance.',
    labels: {},
  }),
  outboundSubscriptionsByBreaker: define({
    name: 'outbound_subscriptions_breaker',
    type: 'gauge',
    help: 'Active subscriptions by circuit-breaker state (shared by all instances, in the database).',
    labels: { state: '`closed`, `open`, `half_open`' },
    note: 'read from the database every 15 s, not at scrape time',
  }),
  loyaltyPointsExpired: define({
    name: 'loyalty_points_expired_total',
    type: 'counter',
    help: 'Points expired by the in-process expiry job.',
    labels: {},
  }),
  keyRingGeneration: define({
    name: 'key_ring_generation',
    type: 'gauge',
    help: "The key_ring_generation this instance's key ring has loaded (-1 before its first load).",
    labels: {},
    note: 'instances that disagree for longer than KEY_RING_REFRESH_MS have missed a rotation',
  }),
  keyCryptoperiodRemaining: define({
    name: 'key_cryptoperiod_remaining_seconds',
    type: 'gauge',
    help: 'Seconds left in the cryptoperiod of each published or active key version (negative: overdue).',
    labels: { purpose: 'a key purpose of src/crypto/key-specs.ts', version: 'the key version number' },
  }),
  keyCryptoperiodOverdue: define({
    name: 'key_cryptoperiod_overdue',
    type: 'gauge',
    help: '1 when a published or active key version is past its cryptoperiod.',
    labels: { purpose: 'a key purpose of src/crypto/key-specs.ts', version: 'the key version number' },
  }),
  labelValuesRefused: define({
    name: 'metrics_label_values_refused_total',
    type: 'counter',
    help: 'Label values the registry refused (replaced by `redacted` or `other`), by metric and reason; should stay 0.',
    labels: {
      metric: 'a metric name of this catalogue',
      reason:
        '`card_data` (a PAN-shaped digit run), `shape` (not `[A-Za-z0-9_.:-]{1,64}`), `cardinality` (over the per-metric series limit)',
    },
  }),
} as const;

export type MetricKey = keyof typeof METRICS;
export const CATALOGUE: readonly MetricDefinition[] = Object.values(METRICS);
