/** The outbound-event dispatcher's section of the configuration (EVENTS_* variables, src/config/config.ts). */
export interface DispatcherOptions {
  /** Wait between polls when nothing was due. */
  readonly pollIntervalMs: number;
  /** Deliveries claimed (and sent concurrently) per round. */
  readonly batchSize: number;
  /** Attempts before a delivery is dead-lettered. */
  readonly maxAttempts: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** The longest `Retry-After` honoured; a longer one is cut to this. */
  readonly retryAfterMaxMs: number;
  readonly timeoutMs: number;
  readonly maxResponseBytes: number;
}
