/**
 * A shopper's balance as the loyalty app shows it: available and pending points, what expires in the
 * next 30 days, lifetime earnings. Computed from the account and its lots with points left, whether
 * those come from one read query or from a ledger book that just changed them.
 */

/** Lots expiring within this many days are listed in the balance. */
export const EXPIRING_SOON_DAYS = 30;

export interface Balance {
  readonly shopperReference: string;
  readonly available: number;
  readonly pending: number;
  readonly expiringSoon: readonly { readonly points: number; readonly expiresAt: string }[];
  readonly lifetimeEarned: number;
  readonly asOf: string;
}

interface AccountFigures {
  readonly shopper_ref: string;
  readonly available: number;
  readonly pending: number;
  readonly lifetime_earned: number;
}

interface LotFigures {
  readonly remaining: number;
  readonly expires_at: Date | null;
}

export function balanceFrom(account: AccountFigures, lots: readonly LotFigures[], now: Date): Balance {
  const horizon = now.getTime() + EXPIRING_SOON_DAYS * 86_400_000;
  const byExpiry = new Map<number, number>();
  for (const lot of lots) {
    const at = lot.expires_at?.getTime();
    if (lot.remaining <= 0 || at === undefined || at > horizon) continue;
    byExpiry.set(at, (byExpiry.get(at) ?? 0) + lot.remaining);
  }
  return {
    shopperReference: account.shopper_ref,
    available: account.available,
    pending: account.pending,
    expiringSoon: [...byExpiry]
      .sort(([a], [b]) => a - b)
      .map(([at, points]) => ({ points, expiresAt: new Date(at).toISOString() })),
    lifetimeEarned: account.lifetime_earned,
    asOf: now.toISOString(),
  };
}
