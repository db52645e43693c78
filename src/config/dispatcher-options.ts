/** The outbound-event dispatcher's section of the configuration (EVENTS_* variables, src/config/config.ts). */
export interface DispatcherOptions {
  /** Wait between polls when nothing was due. */
  readonly pollIntervalMs: number;
  /**
   * Delivery slots of an instance: deliveries in flight at once. A slot that frees is refilled at
   * once (no batch barrier); `runOnce` claims up to this many.
   */
  readonly batchSize: number;
  /** Deliveries of one subscription in flight at once, across instances (leases in the database). */
  readonly maxInFlightPerSubscription: number;
  /** Consecutive timed-out attempts of a subscription that open its circuit breaker. */
  readonly breakerThreshold: number;
  /** How long an open breaker holds a subscription's deliveries before one probe is let through. */
  readonly breakerCooldownMs: number;
  /** Attempts before a delivery is dead-lettered. */
  readonly maxAttempts: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** The longest `Retry-After` honoured; a longer one is cut to this. */
  readonly retryAfterMaxMs: number;
  readonly timeoutMs: number;
  readonly maxResponseBytes: number;
}
