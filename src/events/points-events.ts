/**
 * The `points.*` events of one ledger book's flush. Entries of one operation (a payment's booking,
 * a redemption, an expiry run) that move points the same way make one event; its id comes from the
 * first entry's unique business key, and its balance is the account's as it stood after the
 * operation's last entry.
 */
import { eventBody, type EventType, type OutboundEvent } from './event-types.js';

export interface EntryFacts {
  readonly kind: string;
  readonly points: number;
  readonly available_delta: number;
  readonly pending_delta: number;
  readonly payment_id: string | null;
  readonly redemption_id: string | null;
  readonly business_key: string;
}

export interface AccountFacts {
  readonly shopper_ref: string;
  readonly available: number;
  readonly pending: number;
  readonly lifetime_earned: number;
}

/** Entry kinds that subscribers hear about; settlements, write-offs and merge moves are internal. */
const TYPE_OF_KIND: Readonly<Record<string, EventType>> = {
  earn_pending: 'points.pending',
  earn: 'points.available',
  reversal_cancelled: 'points.available',
  redemption_reversed: 'points.available',
  pending_voided: 'points.reversed',
  earn_voided: 'points.reversed',
  reversal: 'points.reversed',
  redemption: 'points.redeemed',
  expiry: 'points.expired',
};

interface Group {
  readonly type: EventType;
  readonly key: string;
  readonly reason: string;
  readonly paymentId: string | null;
  readonly redemptionId: string | null;
  points: number;
  availableDelta: number;
  pendingDelta: number;
  available: number;
  pending: number;
}

export function pointsEvents(account: AccountFacts, entries: readonly EntryFacts[], at: Date): OutboundEvent[] {
  // The flush's entries lead from the balance before it to the account as it is now.
  let available = account.available - entries.reduce((sum, e) => sum + e.available_delta, 0);
  let pending = account.pending - entries.reduce((sum, e) => sum + e.pending_delta, 0);
  const groups = new Map<string, Group>();
  for (const entry of entries) {
    available += entry.available_delta;
    pending += entry.pending_delta;
    const type = TYPE_OF_KIND[entry.kind];
    if (type === undefined) {
      // An internal entry (a settlement after an earn) still moves the balance of the event before it.
      const last = [...groups.values()].at(-1);
      if (last !== undefined) Object.assign(last, { available, pending });
      continue;
    }
    const operation = type === 'points.expired' ? '' : (entry.payment_id ?? entry.redemption_id ?? entry.business_key);
    const groupKey = `${type}|${operation}`;
    let group = groups.get(groupKey);
    if (group === undefined) {
      group = {
        type,
        key: entry.business_key,
        reason: entry.kind,
        paymentId: entry.payment_id,
        redemptionId: entry.redemption_id,
        points: 0,
        availableDelta: 0,
        pendingDelta: 0,
        available,
        pending,
      };
      groups.set(groupKey, group);
    }
    group.points += Math.abs(entry.points);
    group.availableDelta += entry.available_delta;
    group.pendingDelta += entry.pending_delta;
    group.available = available;
    group.pending = pending;
  }
  return [...groups.values()].map((g) =>
    eventBody(
      g.type,
      g.key,
      account.shopper_ref,
      {
        points: g.points,
        reason: g.reason,
        availableDelta: g.availableDelta,
        pendingDelta: g.pendingDelta,
        ...(g.paymentId === null ? {} : { paymentId: g.paymentId }),
        ...(g.redemptionId === null ? {} : { redemptionId: g.redemptionId }),
        balance: { available: g.available, pending: g.pending, lifetimeEarned: account.lifetime_earned },
      },
      at,
    ),
  );
}
