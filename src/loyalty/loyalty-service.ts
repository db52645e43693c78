/**
 * The points ledger's use cases, in one place for the composition root, the CLI and tests: earning
 * from payment transitions (earning-service.ts), redemptions and their reversal
 * (redemption-service.ts), expiry (expiry-service.ts). Every write is one transaction; every booking
 * goes through a LedgerBook, whose SQL is in ledger-store.ts.
 */
import type { Knex } from 'knex';
import { CampaignService } from './campaign-service.js';
import { EarningService } from './earning-service.js';
import { ExpiryService, type ExpiryRun } from './expiry-service.js';
import { HoldReleaseService, type HoldReleaseRun } from './hold-release-service.js';
import type { StoredResponse } from './idempotency.js';
import type { Balance } from './balance.js';
import { balanceOf, listLedger, paymentLots, type LedgerPage, type PaymentLot } from './ledger-queries.js';
import { AdjustmentService } from './adjustment-service.js';
import { ExpiryNoticeService } from './expiry-notice-service.js';
import { DEFAULT_FINANCE, type FinanceOptions } from './finance-options.js';
import { LiabilityService } from './liability-service.js';
import { ProgrammeService } from './programme-service.js';
import { TierService } from './tier-service.js';
import { RedemptionService, type RedemptionRequest, type RedemptionResult } from './redemption-service.js';

export type { ExpiryRun } from './expiry-service.js';
export type { HoldReleaseRun } from './hold-release-service.js';
export type { RedemptionRequest, RedemptionResult } from './redemption-service.js';

// Where earlier code imported them from; they live in auth/ and card-data/ (leaf modules).
import type { Actor } from '../auth/actors.js';

export type { Actor } from '../auth/actors.js';
export { refuseCardNumbers } from '../card-data/request-fields.js';

export interface LoyaltyOptions {
  readonly now?: () => Date;
  /** Idempotency keys are kept this long (at least 30 days: gateways and apps retry that long). */
  readonly idempotencyRetentionDays?: number;
  /** Told about a shopper the expiry run had to skip because expiring it failed. */
  readonly onExpiryError?: (shopperRef: string, error: unknown) => void;
  /** Told about a shopper the tier review had to skip because reviewing it failed. */
  readonly onTierReviewError?: (shopperRef: string, error: unknown) => void;
  /** The programme (its rules cache is shared); built here when absent. */
  readonly programme?: ProgrammeService;
  /** Expiry notice windows, point values, the goodwill cap (finance-options.ts); defaults when absent. */
  readonly finance?: FinanceOptions;
}

export class LoyaltyService {
  readonly programme: ProgrammeService;
  readonly campaigns: CampaignService;
  readonly earning: EarningService;
  readonly tiers: TierService;
  readonly redemptions: RedemptionService;
  readonly expiry: ExpiryService;
  readonly notices: ExpiryNoticeService;
  readonly liability: LiabilityService;
  readonly adjustments: AdjustmentService;
  readonly holds: HoldReleaseService;
  /** The payment transition listener (earning). */
  readonly onPaymentTransitions: EarningService['onPaymentTransitions'];

  constructor(
    private readonly knex: Knex,
    options: LoyaltyOptions = {},
  ) {
    const now = options.now ?? (() => new Date());
    this.programme = options.programme ?? new ProgrammeService(knex, now);
    this.campaigns = new CampaignService(knex, now, options.idempotencyRetentionDays);
    this.tiers = new TierService(knex, now, options.onTierReviewError);
    this.earning = new EarningService(this.programme, now, this.tiers);
    this.redemptions = new RedemptionService(knex, {
      now,
      ...(options.idempotencyRetentionDays === undefined
        ? {}
        : { idempotencyRetentionDays: options.idempotencyRetentionDays }),
    });
    this.expiry = new ExpiryService(knex, {
      now,
      ...(options.onExpiryError === undefined ? {} : { onExpiryError: options.onExpiryError }),
    });
    const finance = options.finance ?? DEFAULT_FINANCE;
    this.notices = new ExpiryNoticeService(knex, { now, noticeDays: finance.expiryNoticeDays });
    this.liability = new LiabilityService(knex, { now, pointValues: finance.pointValues });
    this.adjustments = new AdjustmentService(knex, {
      now,
      dailyCap: finance.goodwillDailyCap,
      ...(options.idempotencyRetentionDays === undefined
        ? {}
        : { idempotencyRetentionDays: options.idempotencyRetentionDays }),
    });
    this.holds = new HoldReleaseService(knex, {
      now,
      ...(options.onExpiryError === undefined ? {} : { onError: options.onExpiryError }),
    });
    this.onPaymentTransitions = this.earning.onPaymentTransitions;
    this.now = now;
  }

  private readonly now: () => Date;

  /** A shopper's balance now (its own and what was merged into it). */
  balance(shopperRef: string): Promise<Balance> {
    return balanceOf(this.knex, shopperRef, this.now());
  }

  /** A shopper's ledger entries, newest first, by keyset page. */
  ledger(shopperRef: string, page: { readonly limit: number; readonly cursor?: string }): Promise<LedgerPage> {
    return listLedger(this.knex, shopperRef, page);
  }

  /** What these payments earned and why (their lots), by payment id. */
  paymentLots(paymentIds: readonly string[]): Promise<Map<string, PaymentLot>> {
    return paymentLots(this.knex, paymentIds);
  }

  redeem(
    shopperRef: string,
    request: RedemptionRequest,
    idempotencyKey: string,
    actor: Actor,
  ): Promise<StoredResponse<RedemptionResult>> {
    return this.redemptions.redeem(shopperRef, request, idempotencyKey, actor);
  }

  reverseRedemption(shopperRef: string, redemptionId: string, actor: Actor): Promise<RedemptionResult> {
    return this.redemptions.reverseRedemption(shopperRef, redemptionId, actor);
  }

  expireDue(batchSize?: number): Promise<ExpiryRun> {
    return this.expiry.expireDue(batchSize);
  }

  /** Releases the holds whose window lapsed without a capture (hold-release-service.ts). */
  releaseDueHolds(batchSize?: number): Promise<HoldReleaseRun> {
    return this.holds.releaseDue(batchSize);
  }
}
