/** Card-data retention's section of the configuration (CARD_RETENTION_*, src/config/config.ts; docs/data-protection.md). */
export interface RetentionOptions {
  /** Days without use after which a card's PAN ciphertext is purged (PCI DSS 3.2.1); 0: no policy, nothing purged. */
  readonly days: number;
  /** Whether a purged card keeps its PAN fingerprints (recognised when presented again). */
  readonly keepFingerprints: boolean;
  /** How often each instance tries the day's scheduled run (one per UTC day across instances); 0: off. */
  readonly intervalMs: number;
}
