/**
 * The points liability, as finance reads it (pure: no I/O). Figures come from the ledger's entries
 * (liability-store.ts sums them as of a time), never from the balances, so a report as of a past
 * date is what the ledger said then, and `loyalty check` proves the report equals the projections.
 *
 * - **Outstanding**: available points (Σ `available_delta`), split into what the lots hold by expiry
 *   month (Σ `lot_delta` per lot) less the debt (Σ `debt_delta`); pending points (Σ `pending_delta`,
 *   read by {@link PENDING_DELTA}: no kind names, so renamed hold kinds need no change here).
 * - **Flows** in the period [from, asOf]: each entry's `available_delta` by the line its kind
 *   belongs to ({@link flowOf}); any kind not named (merges, debt settlements, kinds added later)
 *   is `other`, so `closing = opening + issued + adjusted + other − redeemed − expired − reversed`
 *   always holds.
 * - **Breakage** (from history, as of asOf): over the lots whose expiry date has passed, the share
 *   of their points that was never used:
 *   `(expired + still in the lots) / (expired + still in the lots + redeemed)`, where redeemed is
 *   what redemptions (net of their reversals) and debt settlements drew from those lots. Points
 *   reversed (refunds, chargebacks) or debited by an operator are in neither part. Null when no
 *   such lot was used or lapsed.
 * - **Value**: each figure times the configured value of a point per currency
 *   (`LOYALTY_POINT_VALUES`), exactly (decimal strings, no floating point).
 */

/** The column pending points are summed from (a hold's kinds may change; its column does not). */
export const PENDING_DELTA = 'pending_delta';

export type FlowLine = 'issued' | 'adjusted' | 'redeemed' | 'expired' | 'reversed' | 'other';

const FLOW_OF_KIND: Readonly<Record<string, FlowLine>> = {
  earn: 'issued',
  earn_voided: 'reversed',
  reversal: 'reversed',
  reversal_cancelled: 'reversed',
  redemption: 'redeemed',
  redemption_reversed: 'redeemed',
  expiry: 'expired',
  goodwill_credit: 'adjusted',
  goodwill_debit: 'adjusted',
  missing_points_credit: 'adjusted',
};

/** The kinds whose draws on a lot count as used in the breakage rate. */
export const USED_KINDS: readonly string[] = ['redemption', 'redemption_reversed', 'debt_settled'];

export function flowOf(kind: string): FlowLine {
  return FLOW_OF_KIND[kind] ?? 'other';
}

export interface LedgerSums {
  readonly available: number;
  readonly pending: number;
  readonly debt: number;
}

export interface LiabilityFigures {
  /** As of asOf: Σ entries created at or before it. */
  readonly closing: LedgerSums;
  /** Just before the period's start (zeros without a start: the period is all history). */
  readonly opening: LedgerSums;
  /** Σ lot_delta per expiry month (`YYYY-MM`, UTC; `none` for a lot without a date). */
  readonly lotsByExpiryMonth: readonly { readonly month: string; readonly points: number }[];
  /** Σ available_delta by kind in the period. */
  readonly periodByKind: readonly { readonly kind: string; readonly available: number }[];
  readonly byTier: readonly { readonly tier: string; readonly available: number; readonly pending: number }[];
  readonly breakage: { readonly expired: number; readonly remaining: number; readonly used: number };
}

export interface Liability {
  readonly asOf: string;
  readonly from: string | null;
  readonly outstanding: {
    readonly available: number;
    readonly pending: number;
    readonly lots: number;
    readonly debt: number;
    readonly byExpiryMonth: readonly { readonly month: string; readonly points: number }[];
    readonly byTier: readonly { readonly tier: string; readonly available: number; readonly pending: number }[];
  };
  readonly period: {
    readonly openingAvailable: number;
    readonly closingAvailable: number;
  } & Readonly<Record<FlowLine, number>>;
  readonly breakage: {
    readonly rate: number | null;
    readonly expired: number;
    readonly unusedInLapsedLots: number;
    readonly redeemed: number;
  };
  readonly values: readonly {
    readonly currency: string;
    readonly pointValue: string;
    readonly available: string;
    readonly pending: string;
  }[];
}

export function liabilityReport(
  figures: LiabilityFigures,
  asOf: Date,
  from: Date | null,
  pointValues: Readonly<Record<string, string>>,
): Liability {
  const lines: Record<FlowLine, number> = { issued: 0, adjusted: 0, redeemed: 0, expired: 0, reversed: 0, other: 0 };
  for (const { kind, available } of figures.periodByKind) lines[flowOf(kind)] += available;
  const { closing } = figures;
  const { expired, remaining, used } = figures.breakage;
  const lapsed = expired + remaining;
  return {
    asOf: asOf.toISOString(),
    from: from === null ? null : from.toISOString(),
    outstanding: {
      available: closing.available,
      pending: closing.pending,
      lots: figures.lotsByExpiryMonth.reduce((sum, m) => sum + m.points, 0),
      debt: closing.debt,
      byExpiryMonth: figures.lotsByExpiryMonth,
      byTier: figures.byTier,
    },
    period: {
      openingAvailable: figures.opening.available,
      closingAvailable: closing.available,
      issued: lines.issued,
      adjusted: lines.adjusted,
      other: lines.other,
      // Shown as positive amounts taken out.
      redeemed: -lines.redeemed,
      expired: -lines.expired,
      reversed: -lines.reversed,
    },
    breakage: {
      rate: lapsed + used === 0 ? null : Math.round((lapsed / (lapsed + used)) * 1e6) / 1e6,
      expired,
      unusedInLapsedLots: remaining,
      redeemed: used,
    },
    values: Object.entries(pointValues)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([currency, pointValue]) => ({
        currency,
        pointValue,
        available: valueOf(closing.available, pointValue),
        pending: valueOf(closing.pending, pointValue),
      })),
  };
}

/** `points × value` exactly, as a decimal string with the value's decimals. */
export function valueOf(points: number, pointValue: string): string {
  const match = /^(\d+)(?:\.(\d+))?$/.exec(pointValue);
  if (match === null) throw new Error(`not a decimal point value: ${pointValue}`);
  const decimals = match[2] ?? '';
  const product = BigInt(points) * BigInt(`${match[1] as string}${decimals}`);
  const negative = product < 0n;
  const digits = (negative ? -product : product).toString().padStart(decimals.length + 1, '0');
  const whole = digits.slice(0, digits.length - decimals.length);
  const fraction = digits.slice(digits.length - decimals.length);
  return `${negative ? '-' : ''}${whole}${fraction === '' ? '' : `.${fraction}`}`;
}

/** The report as CSV: one row per figure (`section,key,points,value…`), for spreadsheets. */
export function liabilityCsv(report: Liability): string {
  const currencies = report.values.map((v) => v.currency);
  const valueCells = (points: number): string[] => report.values.map((v) => valueOf(points, v.pointValue));
  const rows: string[][] = [['section', 'key', 'points', ...currencies.map((c) => `value_${c}`)]];
  const add = (section: string, key: string, points: number | null): void => {
    rows.push([
      section,
      key,
      points === null ? '' : String(points),
      ...(points === null ? currencies.map(() => '') : valueCells(points)),
    ]);
  };
  add('as_of', report.asOf, null);
  add('from', report.from ?? '', null);
  const o = report.outstanding;
  add('outstanding', 'available', o.available);
  add('outstanding', 'pending', o.pending);
  add('outstanding', 'lots', o.lots);
  add('outstanding', 'debt', o.debt);
  for (const m of o.byExpiryMonth) add('available_by_expiry_month', m.month, m.points);
  for (const t of o.byTier) {
    add('available_by_tier', t.tier, t.available);
    add('pending_by_tier', t.tier, t.pending);
  }
  const p = report.period;
  for (const key of [
    'openingAvailable',
    'issued',
    'adjusted',
    'redeemed',
    'expired',
    'reversed',
    'other',
    'closingAvailable',
  ] as const) {
    add('period', key, p[key]);
  }
  const b = report.breakage;
  add('breakage', 'expired', b.expired);
  add('breakage', 'unused_in_lapsed_lots', b.unusedInLapsedLots);
  add('breakage', 'redeemed', b.redeemed);
  rows.push(['breakage', 'rate', b.rate === null ? '' : String(b.rate), ...currencies.map(() => '')]);
  return rows.map((r) => r.map(csvCell).join(',')).join('\n') + '\n';
}

function csvCell(value: string): string {
  return /[",\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}
