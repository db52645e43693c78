/**
 * Cryptoperiods (PCI DSS 3.6.4 / 3.7.4, NIST SP 800-57): a published or active key version must be
 * replaced before its cryptoperiod ends. The period runs from activation (or publication, for a
 * version not yet active) and is the shorter of the one recorded at creation and the configured one,
 * so tightening the policy applies to existing keys at once.
 */
import type { Knex } from 'knex';
import type { KeyPurpose, KeyState } from './key-ring.js';
import { livePeriodRows, type PeriodRow } from './key-version-store.js';

export type { PeriodRow } from './key-version-store.js';

const DAY_MS = 86_400_000;

export interface KeyPeriod {
  readonly purpose: KeyPurpose;
  readonly version: number;
  readonly state: KeyState;
  readonly cryptoperiodDays: number;
  /** Null for versions that no longer protect new data (decrypt-only, retired, destroyed). */
  readonly expiresAt: Date | null;
}

export function periodOf(row: PeriodRow, policy: Readonly<Record<KeyPurpose, number>>): KeyPeriod {
  const cryptoperiodDays = Math.min(row.cryptoperiod_days, policy[row.purpose]);
  const live = row.state === 'active' || row.state === 'published';
  const start = row.activated_at ?? row.published_at ?? row.created_at;
  return {
    purpose: row.purpose,
    version: row.version,
    state: row.state,
    cryptoperiodDays,
    expiresAt: live ? new Date(start.getTime() + cryptoperiodDays * DAY_MS) : null,
  };
}

/** Whole days left (negative once overdue); null when the version has no running cryptoperiod. */
export function daysLeft(period: KeyPeriod, now: Date): number | null {
  return period.expiresAt === null ? null : Math.floor((period.expiresAt.getTime() - now.getTime()) / DAY_MS);
}

/** Seconds left (negative once overdue); null when the version has no running cryptoperiod. */
export function secondsLeft(period: KeyPeriod, now: Date): number | null {
  return period.expiresAt === null ? null : Math.round((period.expiresAt.getTime() - now.getTime()) / 1000);
}

export function isOverdue(period: KeyPeriod, now: Date): boolean {
  return period.expiresAt !== null && period.expiresAt.getTime() <= now.getTime();
}

/** The cryptoperiods of every published or active version (cheap: no row counts). */
export async function liveKeyPeriods(
  db: Knex | Knex.Transaction,
  policy: Readonly<Record<KeyPurpose, number>>,
): Promise<KeyPeriod[]> {
  return (await livePeriodRows(db)).map((r) => periodOf(r, policy));
}

export interface CryptoperiodWatch {
  /** The last loaded periods (refreshed in the background). */
  periods(): readonly KeyPeriod[];
  refresh(): Promise<readonly KeyPeriod[]>;
  stop(): void;
}

/**
 * For the service: loads the live keys' cryptoperiods now and every `intervalMs` (a rotation by the
 * CLI shows up without a restart), calling `onOverdue` for each overdue version found at each load.
 */
export async function watchCryptoperiods(
  db: Knex,
  policy: Readonly<Record<KeyPurpose, number>>,
  options: {
    intervalMs: number;
    onOverdue: (period: KeyPeriod) => void;
    onError: (error: unknown) => void;
    /** The application clock (default: the system's). */
    now?: () => Date;
  },
): Promise<CryptoperiodWatch> {
  let current: readonly KeyPeriod[] = [];
  const refresh = async (): Promise<readonly KeyPeriod[]> => {
    current = await liveKeyPeriods(db, policy);
    const now = options.now?.() ?? new Date();
    for (const period of current) if (isOverdue(period, now)) options.onOverdue(period);
    return current;
  };
  await refresh();
  const timer = setInterval(() => {
    refresh().catch(options.onError);
  }, options.intervalMs);
  timer.unref();
  return { periods: () => current, refresh, stop: () => clearInterval(timer) };
}
