/**
 * Tiers' use cases (the rules are tiers.ts, pure; the SQL tier-store.ts):
 *
 * - in the earning transaction, the tier a new lot pins (the shopper's level at the payment's
 *   authorisation, {@link TierService.pinner}) and, once the bookings are written, the qualifying
 *   spend of the payments and the upgrade or refund recompute of their shoppers
 *   ({@link TierService.afterBookings}), under the shoppers' account locks the batch holds;
 * - the period-end reviews ({@link TierService.reviewDue}), run by a schedule on every instance: each
 *   shopper's review takes its account lock (SKIP LOCKED) and re-reads its state under it, and a
 *   change is numbered per shopper, so a review is made once however many instances run;
 * - what the shopper sees ({@link TierService.progress}).
 *
 * Every change is a row of the append-only `loyalty_tier_changes`; a change of level is also a
 * `tier.changed` event in the outbox, in the same transaction, its id derived from the change's
 * number (one event per change, whatever reruns).
 */
import type { Knex } from 'knex';
import { eventBody, type OutboundEvent } from '../events/event-types.js';
import type { PaymentFigures } from '../payments/payment-state.js';
import type { LotRow } from './ledger-store.js';
import { tryLockAccount } from './ledger-store.js';
import type { ProgrammeRules } from './programme.js';
import { currentProgramme } from './programme-store.js';
import {
  appendTierChanges,
  latestTierStates,
  qualifyingFigures,
  shoppersDueForReview,
  tierHistories,
  upsertQualifying,
} from './tier-store.js';
import {
  currentWindow,
  grantWindow,
  initialState,
  onQualifyingChange,
  progressOf,
  qualifyingSpend,
  review,
  reviewWindows,
  tierAt,
  type PinnedTier,
  type TierChange,
  type TierPolicy,
  type TierProgress,
} from './tiers.js';

/** A payment the earning batch booked: its lot and its figures after the transition. */
export interface TouchedPayment {
  readonly lot: LotRow;
  readonly after: PaymentFigures;
  readonly autoCapture: boolean;
}

export interface TierReviewRun {
  readonly shoppers: number;
  readonly changes: number;
  readonly downgrades: number;
}

/** What `GET /v1/shoppers/{ref}/tier` shows. */
export interface ShopperTier {
  readonly shopperReference: string;
  readonly programmeVersion: number;
  readonly policy?: TierPolicy;
  readonly progress?: TierProgress;
  readonly asOf: Date;
}

interface Recorded {
  readonly shopperRef: string;
  readonly change: TierChange;
  readonly programmeVersion: number;
}

export class TierService {
  constructor(
    private readonly knex: Knex,
    private readonly now: () => Date,
    private readonly onReviewError?: (shopperRef: string, error: unknown) => void,
  ) {}

  /**
   * The tier each new lot of the batch pins: read (once, and only when a version in force at an
   * authorisation has tiers) from the shoppers' change histories.
   */
  pinner(
    trx: Knex.Transaction,
    shopperRefs: readonly string[],
  ): (shopperRef: string, rules: ProgrammeRules, authorisedAt: Date) => Promise<PinnedTier | null> {
    let histories: Awaited<ReturnType<typeof tierHistories>> | undefined;
    return async (shopperRef, rules, authorisedAt) => {
      if (rules.tiers === undefined) return null;
      histories ??= await tierHistories(trx, shopperRefs);
      return tierAt(rules.tiers, histories.get(shopperRef) ?? [], authorisedAt);
    };
  }

  /**
   * After the batch's bookings are written: records the payments' qualifying spend, then, if the
   * programme now has tiers, recomputes their shoppers' levels (upgrade at once; a refund's drop of a
   * provisional level). A few statements per batch, whatever its size.
   */
  async afterBookings(trx: Knex.Transaction, touched: readonly TouchedPayment[], now: Date): Promise<void> {
    const byPayment = new Map<string, TouchedPayment>();
    // Only a payment's lot qualifies (an adjustment's lot has no payment).
    for (const t of touched) if (t.lot.payment_id !== null) byPayment.set(t.lot.payment_id, t);
    const rows = [...byPayment.entries()].flatMap(([paymentId, { after, autoCapture }]) =>
      after.authorisedAt === null || after.currency === null
        ? []
        : [
            {
              payment_id: paymentId,
              authorised_at: after.authorisedAt,
              currency: after.currency,
              spend: qualifyingSpend(after, autoCapture),
              updated_at: now,
            },
          ],
    );
    if (rows.length === 0) return;
    await upsertQualifying(trx, rows);
    const programme = await currentProgramme(trx);
    const policy = programme.rules.tiers;
    if (policy === undefined) return;
    const shoppers = [...new Set([...byPayment.values()].map((t) => t.lot.shopper_ref))].sort();
    const states = await latestTierStates(trx, shoppers);
    const stateOf = (ref: string) => states.get(ref) ?? initialState(policy, now);
    const figures = await qualifyingFigures(
      trx,
      policy,
      shoppers.map((ref) => ({
        shopperRef: ref,
        windows: [grantWindow(policy.window, stateOf(ref)), currentWindow(policy.window, now)],
      })),
    );
    const recorded: Recorded[] = [];
    for (const ref of shoppers) {
      const [sinceGrant = 0, current = 0] = figures.get(ref) ?? [];
      const change = onQualifyingChange(policy, stateOf(ref), { sinceGrant, current }, now);
      if (change !== undefined) recorded.push({ shopperRef: ref, change, programmeVersion: programme.version });
    }
    await appendTierChanges(trx, recorded, tierEvents(recorded, policy));
  }

  /** Reviews every shopper whose level is due for review by now; safe on any number of instances. */
  async reviewDue(batchSize = 500): Promise<TierReviewRun> {
    const now = this.now();
    const programme = await currentProgramme(this.knex);
    const policy = programme.rules.tiers;
    // Without tiers in the programme there is nothing to review (and no multiplier is earned).
    if (policy === undefined) return { shoppers: 0, changes: 0, downgrades: 0 };
    const skipped = new Set<string>();
    let shoppers = 0;
    let changes = 0;
    let downgrades = 0;
    for (;;) {
      const due = await shoppersDueForReview(this.knex, now, [...skipped], batchSize);
      if (due.length === 0) break;
      for (const ref of due) {
        const done = await this.reviewShopper(ref, policy, programme.version, now).catch((error: unknown) => {
          this.onReviewError?.(ref, error);
          return undefined;
        });
        if (done === undefined) {
          // Busy (another instance or a payment holds the account) or failed: the next run retries.
          skipped.add(ref);
          continue;
        }
        shoppers += 1;
        changes += done.length;
        downgrades += done.filter((c) => c.reason === 'downgrade').length;
      }
    }
    return { shoppers, changes, downgrades };
  }

  /** One shopper's due reviews (several when runs were missed); undefined when its account is busy. */
  private async reviewShopper(
    shopperRef: string,
    policy: TierPolicy,
    programmeVersion: number,
    now: Date,
  ): Promise<TierChange[] | undefined> {
    return this.knex.transaction(async (trx) => {
      const account = await tryLockAccount(trx, shopperRef);
      if (account === undefined) return undefined;
      let state = (await latestTierStates(trx, [shopperRef])).get(shopperRef);
      const changes: TierChange[] = [];
      if (account.merged_into !== null && state !== undefined && state.reviewAt !== null) {
        // Merged away: its lots (and so its figures) are the survivor's; nothing of it to review again.
        changes.push({
          previousTier: state.tier,
          reason: 'renewed',
          figure: 0,
          state: { ...state, seq: state.seq + 1, reviewAt: null, changedAt: now },
        });
        state = undefined;
      }
      // Another instance may have made this review while this one waited: re-read under the lock.
      while (state?.reviewAt != null && state.reviewAt <= now && changes.length < 100) {
        const windows = reviewWindows(policy, state);
        const [ended = 0, grace = 0] =
          (await qualifyingFigures(trx, policy, [{ shopperRef, windows: [windows.ended, windows.grace] }])).get(
            shopperRef,
          ) ?? [];
        const change = review(policy, state, { ended, grace }, now);
        changes.push(change);
        state = change.state;
      }
      const recorded = changes.map((change) => ({ shopperRef, change, programmeVersion }));
      await appendTierChanges(trx, recorded, tierEvents(recorded, policy));
      return changes;
    });
  }

  /** The shopper's level, its multiplier, the figure so far, what the next level needs, until when it holds. */
  async progress(shopperRef: string): Promise<ShopperTier> {
    const now = this.now();
    const programme = await currentProgramme(this.knex);
    const policy = programme.rules.tiers;
    const base = { shopperReference: shopperRef, programmeVersion: programme.version, asOf: now };
    if (policy === undefined) return base;
    const state = (await latestTierStates(this.knex, [shopperRef])).get(shopperRef) ?? initialState(policy, now);
    const window = currentWindow(policy.window, now);
    const [figure = 0] = (await qualifyingFigures(this.knex, policy, [{ shopperRef, windows: [window] }])).get(
      shopperRef,
    ) ?? [0];
    return { ...base, policy, progress: progressOf(policy, state, figure, now) };
  }
}

/** The `tier.changed` events of the changes that changed the level (a renewal has none). */
function tierEvents(recorded: readonly Recorded[], policy: TierPolicy): OutboundEvent[] {
  return recorded
    .filter(({ change }) => change.state.tier !== change.previousTier)
    .map(({ shopperRef, change, programmeVersion }) => {
      const index = (name: string): number => policy.levels.findIndex((l) => l.name === name);
      return eventBody(
        'tier.changed',
        `tier:${shopperRef}:${change.state.seq}`,
        shopperRef,
        {
          previousTier: change.previousTier,
          tier: change.state.tier,
          direction: index(change.state.tier) > index(change.previousTier) ? 'up' : 'down',
          reason: change.reason,
          measure: policy.measure,
          qualifyingFigure: change.figure,
          ...(change.state.reviewAt === null ? {} : { heldUntil: change.state.reviewAt.toISOString() }),
          programmeVersion,
        },
        change.state.changedAt,
      );
    });
}
