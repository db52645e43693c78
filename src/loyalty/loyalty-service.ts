/**
 * The points ledger's use cases, in one place for the composition root, the CLI and tests: earning
 * from payment transitions (earning-service.ts), redemptions and their reversal
 * (redemption-service.ts), expiry (expiry-service.ts). Every write is one transaction; every booking
 * goes through a LedgerBook, whose SQL is in ledger-store.ts.
 */
import type { Knex } from 'knex';
import { CampaignService } from './campaign-service.js';
import { EarningService, type ShopperTierSource } from './earning-service.js';
import { ExpiryService, type ExpiryRun } from './expiry-service.js';
import type { StoredResponse } from './idempotency.js';
import type { Balance } from './balance.js';
import { balanceOf, listLedger, paymentLots, type LedgerPage, type PaymentLot } from './ledger-queries.js';
import { ProgrammeService } from './programme-service.js';
import { RedemptionService, type RedemptionRequest, type RedemptionResult } from './redemption-service.js';

export type { ExpiryRun } from './expiry-service.js';
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
  /** The programme (its rules cache is shared); built here when absent. */
  readonly programme?: ProgrammeService;
  /** The shoppers' tiers, for campaigns with a tier condition (absent: no shopper has a tier). */
  readonly shopperTiers?: ShopperTierSource;
}

export class LoyaltyService {
  readonly programme: ProgrammeService;
  readonly campaigns: CampaignService;
  readonly earning: EarningService;
  readonly redemptions: RedemptionService;
  readonly expiry: ExpiryService;
  /** The payment transition listener (earning). */
  readonly onPaymentTransitions: EarningService['onPaymentTransitions'];

  constructor(
    private readonly knex: Knex,
    options: LoyaltyOptions = {},
  ) {
    const now = options.now ?? (() => new Date());
    this.programme = options.programme ?? new ProgrammeService(knex, now);
    this.campaigns = new CampaignService(knex, now, options.idempotencyRetentionDays);
    this.earning = new EarningService(this.programme, this.campaigns, now, options.shopperTiers);
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
}
