/**
 * Holds that lapse: points held at authorisation (`hold`) are released (`hold_expired`) once the
 * payment's hold window (`holdWindowHours` of the programme version it earns under, counted from its
 * authorisation time) has passed with points still pending, i.e. with no capture and no cancel.
 *
 * Exactly once across instances, as expiry: one shopper per transaction, its account taken with
 * SKIP LOCKED (a busy shopper is left to the next run), its due lots re-read under that lock, each
 * release numbered by the lot's effect counter (the entry's unique business key) and marked on the lot
 * (`hold_expired_at`), so a second run, here or on another instance, finds nothing left to release.
 *
 * **The time-dependent fact.** A release is the one effect that is not a function of the payment's
 * facts alone: it happens iff a release run locks the shopper's account at a time t ≥ authorised at +
 * hold window while the payment's lot still has points pending (its capture or cancel not yet
 * committed). After it, the lot holds nothing pending whatever the payment's state, so:
 * - a capture committed before the release: `hold_captured` (+ `hold_released` for an uncaptured rest)
 *   and `earn`;
 * - a capture committed after it (a late capture): only `earn` (the hold was already `hold_expired`);
 * - a cancel after it: nothing.
 * The final balance, pending points and the lot's targets are the same either way (the properties in
 * test/loyalty/ordering.property.test.ts and hold-ordering.property.test.ts check it); only which
 * entries explain them depends on that time.
 */
import type { Knex } from 'knex';
import { LedgerBook, type LotRow } from './ledger-book.js';
import { dueHoldLots, shoppersWithDueHolds } from './hold-store.js';

export interface HoldReleaseRun {
  readonly shoppers: number;
  readonly holds: number;
  readonly points: number;
}

export interface HoldReleaseOptions {
  readonly now: () => Date;
  /** Told about a shopper the run had to skip because releasing its holds failed. */
  readonly onError?: (shopperRef: string, error: unknown) => void;
}

export class HoldReleaseService {
  constructor(
    private readonly knex: Knex,
    private readonly options: HoldReleaseOptions,
  ) {}

  /** Releases every hold lapsed by now; shoppers busy elsewhere are left to the next run. */
  async releaseDue(batchSize = 500): Promise<HoldReleaseRun> {
    const now = this.options.now();
    const skipped = new Set<string>();
    let shoppers = 0;
    let holds = 0;
    let points = 0;
    for (;;) {
      const due = await shoppersWithDueHolds(this.knex, now, [...skipped], batchSize);
      if (due.length === 0) break;
      for (const shopperRef of due) {
        const done = await this.releaseShopper(shopperRef, now).catch((error: unknown) => {
          this.options.onError?.(shopperRef, error);
          return undefined;
        });
        if (done === undefined) {
          skipped.add(shopperRef);
          continue;
        }
        shoppers += 1;
        holds += done.holds;
        points += done.points;
      }
    }
    return { shoppers, holds, points };
  }

  private async releaseShopper(shopperRef: string, now: Date): Promise<{ holds: number; points: number } | undefined> {
    return this.knex.transaction(async (trx) => {
      const book = await LedgerBook.tryOpen(trx, shopperRef, now);
      if (book === undefined) return undefined;
      const lots = (await dueHoldLots(trx, shopperRef, now)).map((l) => book.adoptLot(l));
      let points = 0;
      for (const lot of lots) points += release(book, lot, now);
      await book.flush();
      return { holds: lots.length, points };
    });
  }
}

/** Releases what a lot holds, the base programme's part and each campaign's, as `hold_expired`. */
function release(book: LedgerBook, lot: LotRow, now: Date): number {
  const held = lot.pending;
  // Only a payment's lot holds points (an adjustment's lot never has any pending).
  const refs = { paymentId: lot.payment_id as string, ruleVersion: lot.rule_version };
  const next = (): string => `payment:${lot.payment_id}:${++lot.effects}`;
  const bonuses = lot.campaigns ?? [];
  const base = lot.pending - bonuses.reduce((sum, b) => sum + b.pending, 0);
  if (base > 0) book.changePending(lot, -base, next(), refs, 'hold_expired');
  for (const b of bonuses) {
    if (b.pending > 0) {
      const campaignRefs = { ...refs, campaignId: b.campaignId, campaignVersion: b.version };
      book.changePending(lot, -b.pending, next(), campaignRefs, 'hold_expired');
    }
  }
  if (lot.campaigns !== null) lot.campaigns = lot.campaigns.map((b) => ({ ...b, pending: 0 }));
  lot.hold_expired_at = now;
  book.touch(lot);
  return held;
}
