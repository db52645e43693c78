/**
 * Composition root of the loyalty feature: its services, its HTTP handlers, the payment transition
 * listener it hangs on payments, and its expiry schedule. `buildService` calls this, the loyalty CLI
 * {@link createLoyaltyLedger}; they never assemble loyalty's parts themselves.
 */
import type { Request } from 'express';
import type { Knex } from 'knex';
import type { VaultService } from '../cards/vault-service.js';
import type { Clock } from '../clock/clock.js';
import type { HandlerMap } from '../http/types.js';
import type { KeyRing } from '../keys/key-ring.js';
import type { Logger } from '../logging/logger.js';
import { METRICS } from '../metrics/catalogue.js';
import type { Metrics } from '../metrics/metrics.js';
import type { PaymentTransitionListener } from '../payments/payment-service.js';
import { NO_SCHEDULE, repeatEvery, type Schedule } from '../scheduling/repeat.js';
import { campaignHandlers } from './campaign-handlers.js';
import { financeHandlers } from './finance-handlers.js';
import type { FinanceOptions } from './finance-options.js';
import { loyaltyHandlers, purchaseEarnings, reachableShopper, storeCreditHandlers } from './loyalty-handlers.js';
import { LoyaltyService } from './loyalty-service.js';
import { MemberService, type ShopperPayments } from './member-service.js';
import { ShopperService } from './shopper-service.js';
import { StoreCreditService } from './store-credit.js';

export interface LoyaltyFeatureDeps {
  readonly knex: Knex;
  readonly keyRing: KeyRing;
  readonly vault: VaultService;
  /** How a merge moves the absorbed shopper's payments (the payments feature provides it). */
  readonly payments: ShopperPayments;
  /** In-process expiry interval (expiry, then expiry notices); 0 turns the schedule off. */
  readonly expiryIntervalMs: number;
  /** Expiry notice windows, point values, the goodwill cap; defaults when absent. */
  readonly finance?: FinanceOptions;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export interface LoyaltyFeature {
  readonly loyalty: LoyaltyService;
  readonly members: MemberService;
  readonly shoppers: ShopperService;
  /** Store credit: issued by returns at a till (the returns feature), spent through redemptions. */
  readonly storeCredit: StoreCreditService;
  readonly handlers: HandlerMap;
  /** Books points from payment transitions, in the webhook batch's transaction. */
  readonly paymentListener: PaymentTransitionListener;
  /** The path's shopper (if the caller may reach it) and those merged into it: purchase history. */
  readonly reachableShopperRefs: (req: Request) => Promise<readonly string[]>;
  /** What each purchase earned and why, for the purchase history. */
  readonly purchaseEarnings: ReturnType<typeof purchaseEarnings>;
  readonly schedules: readonly Schedule[];
}

export function createLoyaltyFeature(deps: LoyaltyFeatureDeps): LoyaltyFeature {
  const { knex, logger } = deps;
  const loyalty = createLoyaltyLedger(deps);
  const members = new MemberService({
    knex,
    keyRing: deps.keyRing,
    vault: deps.vault,
    payments: deps.payments,
    now: deps.clock,
  });
  const shoppers = new ShopperService(knex);
  const storeCredit = new StoreCreditService(knex, { now: deps.clock });
  return {
    loyalty,
    members,
    shoppers,
    storeCredit,
    handlers: {
      ...loyaltyHandlers({ loyalty, members, shoppers, storeCredit }),
      ...storeCreditHandlers(storeCredit, shoppers),
      ...campaignHandlers(loyalty.campaigns, shoppers),
      ...financeHandlers(loyalty, (req) => reachableShopper(shoppers, req)),
    },
    paymentListener: loyalty.onPaymentTransitions,
    reachableShopperRefs: async (req) => {
      const ref = await reachableShopper(shoppers, req);
      return [ref, ...(await shoppers.mergedInto(ref))];
    },
    purchaseEarnings: purchaseEarnings(loyalty),
    schedules: [
      scheduleExpiry(loyalty, deps.expiryIntervalMs, logger, deps.metrics),
      scheduleTierReviews(loyalty, deps.expiryIntervalMs, logger),
    ],
  };
}

/**
 * The points ledger's use cases (earning, redemption, expiry) on the core's clock: what the loyalty
 * CLI runs, without the members and handlers (it needs no master key).
 */
export function createLoyaltyLedger(
  deps: Pick<LoyaltyFeatureDeps, 'knex' | 'clock' | 'logger' | 'finance'>,
): LoyaltyService {
  const { logger } = deps;
  return new LoyaltyService(deps.knex, {
    now: deps.clock,
    ...(deps.finance === undefined ? {} : { finance: deps.finance }),
    onExpiryError: (shopperRef, error) =>
      logger.error({ err: error, shopperRef }, 'expiring a shopper failed; skipped'),
    onTierReviewError: (shopperRef, error) =>
      logger.error({ err: error, shopperRef }, "reviewing a shopper's tier failed; skipped"),
  });
}

/**
 * The period-end tier reviews, on the expiry schedule's interval (off when it is 0). Safe on any
 * number of instances: a shopper's review takes its account lock (SKIP LOCKED) and re-reads its tier
 * under it, and each change is numbered per shopper, so a review is made, and its `tier.changed`
 * sent, once.
 */
function scheduleTierReviews(loyalty: LoyaltyService, intervalMs: number, logger: Logger): Schedule {
  if (intervalMs === 0) return NO_SCHEDULE;
  return repeatEvery(intervalMs, Math.floor(Math.random() * intervalMs), () =>
    loyalty.tiers
      .reviewDue()
      .then((result) => {
        if (result.changes > 0) logger.info({ ...result }, 'loyalty tiers reviewed');
      })
      .catch((error: unknown) => logger.error({ err: error }, 'loyalty tier review failed')),
  );
}

/**
 * The in-process expiry schedule (off when the interval is 0), which also releases lapsed holds and
 * sends expiry notices. Runs are never concurrent within a
 * process, and are safe across instances (accounts are taken with SKIP LOCKED); a failed run is
 * logged and the next one tries again. The first run waits a random part of the interval, so
 * instances started together do not all run at once.
 */
function scheduleExpiry(loyalty: LoyaltyService, intervalMs: number, logger: Logger, metrics: Metrics): Schedule {
  if (intervalMs === 0) return NO_SCHEDULE;
  const expired = metrics.counter(METRICS.loyaltyPointsExpired);
  return repeatEvery(intervalMs, Math.floor(Math.random() * intervalMs), async () => {
    await loyalty
      .expireDue()
      .then((result) => {
        expired({}, result.points);
        if (result.lots > 0) logger.info({ ...result }, 'loyalty points expired');
      })
      .catch((error: unknown) => logger.error({ err: error }, 'loyalty expiry run failed'));
    // Notices after expiry, on the same schedule: exactly once per lot and window on any instance.
    await loyalty.notices
      .sendDue()
      .then((run) => {
        if (run.notices > 0) logger.info({ ...run }, 'loyalty expiry notices sent');
      })
      .catch((error: unknown) => logger.error({ err: error }, 'loyalty expiry notice run failed'));
    // Holds whose window lapsed without a capture are released by the same schedule.
    await loyalty
      .releaseDueHolds()
      .then((result) => {
        if (result.holds > 0) logger.info({ ...result }, 'loyalty holds released');
      })
      .catch((error: unknown) => logger.error({ err: error }, 'loyalty hold release run failed'));
  });
}
