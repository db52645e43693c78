/** The loyalty section of the configuration (config.ts reads it once, with every other variable). */

/** What a parser needs of config.ts's reader: a trimmed value (undefined when unset or blank), a problem. */
export interface VariableReader {
  raw(name: string): string | undefined;
  integer(name: string, fallback: number, min: number, max: number): number;
  problem(message: string): void;
}

export interface LoyaltyConfig {
  /** How often this process expires lots past their date (and sends notices); 0 turns the schedule off. */
  readonly expiryIntervalMs: number;
  /** Days before expiry that `points.expiring` notices go out (one per window); empty: none. */
  readonly expiryNoticeDays: readonly number[];
  /** The value of one point per currency, as decimal strings (the liability report). */
  readonly pointValues: Readonly<Record<string, string>>;
  /** Points one operator may grant per UTC day (goodwill and missing-points claims). */
  readonly goodwillDailyCap: number;
}

export function parseLoyalty(r: VariableReader): LoyaltyConfig {
  return {
    expiryIntervalMs: r.integer('LOYALTY_EXPIRY_INTERVAL_MS', 3_600_000, 0, 7 * 86_400_000),
    expiryNoticeDays: parseNoticeDays(r),
    pointValues: parsePointValues(r),
    goodwillDailyCap: r.integer('LOYALTY_GOODWILL_DAILY_CAP', 10_000, 0, 1_000_000_000),
  };
}

/** `LOYALTY_EXPIRY_NOTICE_DAYS`: days before expiry, comma-separated (`30,7`); `0` or empty: no notices. */
export function parseNoticeDays(r: VariableReader): readonly number[] {
  const value = r.raw('LOYALTY_EXPIRY_NOTICE_DAYS');
  if (value === undefined) return [30];
  const list = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (!list.every((s) => /^\d{1,3}$/.test(s))) {
    r.problem('LOYALTY_EXPIRY_NOTICE_DAYS must be a comma-separated list of whole days (0-999)');
    return [];
  }
  return [...new Set(list.map(Number).filter((d) => d > 0))].sort((a, b) => b - a);
}

/** `LOYALTY_POINT_VALUES`: `EUR:0.01,USD:0.011`, the value of one point per ISO 4217 currency. */
export function parsePointValues(r: VariableReader): Readonly<Record<string, string>> {
  const value = r.raw('LOYALTY_POINT_VALUES');
  if (value === undefined || value.trim() === '') return Object.freeze({});
  const entries = value.split(',').map((s) => s.trim().split(':'));
  if (
    !entries.every(
      (e) => e.length === 2 && /^[A-Z]{3}$/.test(e[0] as string) && /^\d{1,9}(\.\d{1,9})?$/.test(e[1] as string),
    )
  ) {
    r.problem('LOYALTY_POINT_VALUES must be a comma-separated list of CUR:decimal (e.g. EUR:0.01,USD:0.011)');
    return Object.freeze({});
  }
  return Object.freeze(Object.fromEntries(entries as [string, string][]));
}
