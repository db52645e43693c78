/** The loyalty finance settings (from LOYALTY_EXPIRY_NOTICE_DAYS, LOYALTY_POINT_VALUES, LOYALTY_GOODWILL_DAILY_CAP). */
export interface FinanceOptions {
  /** Days before a lot expires that a `points.expiring` notice goes out, one per window; none: off. */
  readonly expiryNoticeDays: readonly number[];
  /** The value of one point per currency, as decimal strings (`{ EUR: '0.01' }`). */
  readonly pointValues: Readonly<Record<string, string>>;
  /** Points one operator may grant per UTC day (database clock), goodwill and claims together. */
  readonly goodwillDailyCap: number;
}

export const DEFAULT_FINANCE: FinanceOptions = Object.freeze({
  expiryNoticeDays: Object.freeze([30]),
  pointValues: Object.freeze({}),
  goodwillDailyCap: 10_000,
});
