/**
 * The `points.*` events of one ledger book's flush: one event per operation (a payment's booking, a
 * redemption, its reversal, an expiry run), typed by what the operation did for the shopper:
 *
 * - `points.redeemed`: spent; `points.expired`: expired;
 * - `points.available`: points became spendable (earned on capture or auto-capture, a reversal or
 *   a redemption undone); a capture's pending points moving to available is one such event, with a
 *   negative `pendingDelta`;
 * - `points.reversed`: taken back (refund, chargeback, cancellation of pending points, an operator's
 *   goodwill debit), or a hold ended without earning (cancelled, expired, released); an operator's
 *   goodwill grant or a granted missing-points claim is `points.available`;
 * - `points.pending`: earned but not yet spendable (an authorisation awaiting capture).
 *
 * The id comes from the operation's first entry's unique business key, so a change has one event
 * whatever the deliveries; the balance is the account's as it stood after the operation.
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
  hold: 'points.pending',
  earn: 'points.available',
  reversal_cancelled: 'points.available',
  redemption_reversed: 'points.available',
  pending_voided: 'points.reversed',
  // A hold that ends; with a capture's `earn` in the same operation, the event is `points.available`.
  hold_captured: 'points.reversed',
  hold_released: 'points.reversed',
  hold_expired: 'points.reversed',
  hold_cancelled: 'points.reversed',
  earn_voided: 'points.reversed',
  reversal: 'points.reversed',
  redemption: 'points.redeemed',
  expiry: 'points.expired',
  goodwill_credit: 'points.available',
  missing_points_credit: 'points.available',
  goodwill_debit: 'points.reversed',
};

/** When an operation's entries map to several types, the first of these names the operation. */
const PRECEDENCE: readonly EventType[] = [
  'points.redeemed',
  'points.expired',
  'points.available',
  'points.reversed',
  'points.pending',
];

interface Operation {
  readonly key: string;
  readonly paymentId: string | null;
  readonly redemptionId: string | null;
  readonly entries: EntryFacts[];
  available: number;
  pending: number;
}

export function pointsEvents(account: AccountFacts, entries: readonly EntryFacts[], at: Date): OutboundEvent[] {
  // The flush's entries lead from the balance before it to the account as it is now.
  let available = account.available - entries.reduce((sum, e) => sum + e.available_delta, 0);
  let pending = account.pending - entries.reduce((sum, e) => sum + e.pending_delta, 0);
  const operations = new Map<string, Operation>();
  let last: Operation | undefined;
  for (const entry of entries) {
    available += entry.available_delta;
    pending += entry.pending_delta;
    const type = TYPE_OF_KIND[entry.kind];
    if (type === undefined) {
      // An internal entry (a settlement right after an earn) belongs to the operation before it.
      if (last !== undefined) Object.assign(last, { available, pending });
      continue;
    }
    const name = type === 'points.expired' ? 'expiry' : (entry.payment_id ?? entry.redemption_id ?? entry.business_key);
    let operation = operations.get(name);
    if (operation === undefined) {
      operation = {
        key: entry.business_key,
        paymentId: entry.payment_id,
        redemptionId: entry.redemption_id,
        entries: [],
        available,
        pending,
      };
      operations.set(name, operation);
    }
    operation.entries.push(entry);
    Object.assign(operation, { available, pending });
    last = operation;
  }
  return [...operations.values()].map((op) => {
    const types = new Set(op.entries.map((e) => TYPE_OF_KIND[e.kind]));
    const type = PRECEDENCE.find((t) => types.has(t)) as EventType;
    const sum = (pick: (e: EntryFacts) => number): number => op.entries.reduce((total, e) => total + pick(e), 0);
    return eventBody(
      type,
      op.key,
      account.shopper_ref,
      {
        points: sum((e) => (TYPE_OF_KIND[e.kind] === type ? Math.abs(e.points) : 0)),
        reasons: [...new Set(op.entries.map((e) => e.kind))],
        availableDelta: sum((e) => e.available_delta),
        pendingDelta: sum((e) => e.pending_delta),
        ...(op.paymentId === null ? {} : { paymentId: op.paymentId }),
        ...(op.redemptionId === null ? {} : { redemptionId: op.redemptionId }),
        balance: { available: op.available, pending: op.pending, lifetimeEarned: account.lifetime_earned },
      },
      at,
    );
  });
}
