/**
 * Buy online, return in store (issue 22). At the till, the card presented (its PAN, PAR or token)
 * finds that card's shopper's purchases, in every channel, within the return window, answered with
 * what a return needs and nothing else of the shopper. A return is recorded against the original
 * payment, either as a refund (matched to the gateway's refund webhook by the gateway's refund id:
 * payment-returns.ts) or as store credit (store-credit.ts); the points the returned amount earned
 * are reversed proportionally either way, by the payment's transition (earning-service.ts).
 *
 * A till is not a card-number oracle: every lookup and return counts against the client's budget in
 * the database before anything is looked up (shared by every instance, allowed or not, as
 * detokenisation does), an unknown card answers like a known card without purchases, and the
 * presented PAN is never stored, logged, hashed unkeyed or echoed (the idempotency hash covers the
 * card's token, never its number).
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { appendAuditEvent, canonicalJson } from '../audit/audit-log.js';
import type { Caller, CardInput, CardView, VaultService } from '../cards/vault-service.js';
import { refuseCardData } from '../card-data/card-data-guard.js';
import { withRetry } from '../db/retry.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import type { PaymentRow, PaymentService } from '../payments/payment-service.js';
import { refundableOf } from '../payments/payment-service.js';
import { consumeRateLimit } from '../ratelimit/rate-limiter.js';
import { mergedInto, survivorOf } from '../shoppers/shopper-access.js';
import { claimIdempotencyKey, type StoredResponse } from './idempotency.js';
import { insertReturn, returnByFactKey } from './returns-store.js';
import type { StoreCreditBalance, StoreCreditService } from './store-credit.js';

/** The card as presented at the till. */
export type PresentedCard =
  | { readonly kind: 'pan'; readonly pan: string }
  | { readonly kind: 'par'; readonly par: string }
  | { readonly kind: 'token'; readonly token: string };

export interface ReturnablePurchase {
  readonly paymentId: string;
  readonly authorisedAt: Date;
  readonly channel: string | null;
  readonly currency: string;
  readonly amount: number;
  readonly refundableAmount: number;
  readonly last4: string | null;
}

export interface ReturnRequest {
  readonly paymentId: string;
  readonly amount: number;
  readonly mode: 'refund' | 'store_credit';
  /** The gateway's refund id (refunds only): the key its refund webhook is matched by. */
  readonly providerRefundId?: string;
  readonly reference: string;
  readonly storeId?: string;
}

export interface ReturnResult {
  readonly returnId: string;
  readonly paymentId: string;
  readonly mode: 'refund' | 'store_credit';
  readonly amount: number;
  readonly currency: string;
  readonly reference: string;
  /** The gateway's refund webhook had already recorded this refund (nothing counted twice). */
  readonly matchedGatewayRefund: boolean;
  readonly refundableAmount: number;
  readonly storeCredit?: StoreCreditBalance;
}

export interface ReturnsOptions {
  readonly windowDays: number;
  readonly perMinute: number;
  readonly now: () => Date;
  readonly maxPurchases?: number;
}

const DAY_MS = 86_400_000;

export class ReturnsService {
  constructor(
    private readonly knex: Knex,
    private readonly deps: {
      readonly vault: VaultService;
      readonly payments: PaymentService;
      readonly storeCredit: StoreCreditService;
    },
    private readonly options: ReturnsOptions,
  ) {}

  /** The presented card's shopper's returnable purchases within the window, newest first. */
  async lookup(presented: PresentedCard, caller: Caller): Promise<ReturnablePurchase[]> {
    await this.spendBudget(caller);
    const card = await this.cardOf(presented, caller);
    if (card === undefined) return [];
    const refs = await this.shopperRefsOf(card);
    const rows = await this.deps.payments.purchasesForReturn(refs, this.windowStart(), this.options.maxPurchases ?? 50);
    return rows.map(purchaseOf);
  }

  /**
   * Records a return against one of the presented card's returnable purchases, once per
   * `Idempotency-Key` (scoped to the client): one transaction, payment locked first.
   */
  async recordReturn(
    presented: PresentedCard,
    request: ReturnRequest,
    idempotencyKey: string,
    caller: Caller,
  ): Promise<StoredResponse<ReturnResult>> {
    refuseCardData({ reference: request.reference, storeId: request.storeId }, '/body');
    if (request.mode === 'refund' && request.providerRefundId === undefined) {
      throw new AppError('VALIDATION_FAILED', { detail: 'A refund names the gateway refund id (providerRefundId).' });
    }
    if (request.mode === 'store_credit' && request.providerRefundId !== undefined) {
      throw new AppError('VALIDATION_FAILED', { detail: 'Store credit is not a gateway refund: no providerRefundId.' });
    }
    refuseCardData({ providerRefundId: request.providerRefundId }, '/body');
    await this.spendBudget(caller);
    const card = await this.cardOf(presented, caller);
    if (card === undefined) throw notReturnable();
    // The card is named by its token in the hash: a PAN is never hashed unkeyed, nor stored.
    const requestHash = createHash('sha256')
      .update(canonicalJson({ ...request, cardToken: card.token }))
      .digest('hex');
    return withRetry(() =>
      this.knex.transaction(async (trx) => {
        const now = this.options.now();
        const claim = await claimIdempotencyKey<ReturnResult>(
          trx,
          { scope: `return:${caller.clientKey ?? caller.subject}`, key: idempotencyKey, requestHash },
          now,
          30,
        );
        if (claim.replay !== undefined) return claim.replay;
        return claim.store(201, await this.record(trx, card, request, caller, now));
      }),
    );
  }

  private async record(
    trx: Knex.Transaction,
    card: CardView,
    request: ReturnRequest,
    caller: Caller,
    now: Date,
  ): Promise<ReturnResult> {
    const payment = await this.deps.payments.lockForReturn(trx, request.paymentId);
    if (payment === undefined || !(await this.returnable(trx, payment, card))) throw notReturnable();
    const currency = payment.currency as string;
    const shopperRef = payment.shopper_ref as string;
    const id = newId('rtn');
    const factKey = request.mode === 'refund' ? (request.providerRefundId as string) : `store-credit:${id}`;
    const { matched, refundable } = await this.checkReturn(trx, payment, request, factKey);
    await insertReturn(trx, {
      ...{ id, payment_id: payment.id, shopper_ref: shopperRef, mode: request.mode, amount: request.amount },
      ...{ currency, fact_key: factKey, reference: request.reference, store_id: request.storeId ?? null },
      ...{ created_by: caller.subject, created_at: now },
    });
    // A refund the gateway already reported is that same fact: its points are already reversed.
    if (!matched) {
      const fact = { paymentId: payment.id, returnId: id, key: factKey, amount: request.amount, currency };
      await this.deps.payments.addReturnFact(trx, payment, fact);
    }
    const storeCredit =
      request.mode === 'store_credit'
        ? await this.deps.storeCredit.issue(trx, {
            ...{ shopperRef, currency, amount: request.amount, returnId: id, paymentId: payment.id },
            ...{ reference: request.reference, actor: caller.subject },
          })
        : undefined;
    const details = { paymentId: payment.id, mode: request.mode, amount: request.amount, currency, matched };
    await appendAuditEvent(
      trx,
      {
        ...{ actor: caller.subject, actorType: 'client', action: 'return.recorded', outcome: 'success' },
        ...{ origin: caller.origin, resource: id, details },
      },
      now,
    );
    return {
      ...{ returnId: id, paymentId: payment.id, mode: request.mode, amount: request.amount, currency },
      ...{ reference: request.reference, matchedGatewayRefund: matched },
      refundableAmount: matched ? refundable : refundable - request.amount,
      ...(storeCredit === undefined ? {} : { storeCredit }),
    };
  }

  /**
   * Under the payment's lock: a refund id already used by a return, or recorded by the gateway for
   * another amount, is refused; otherwise the amount must fit what is left to return (a refund the
   * gateway already recorded is counted in that already).
   */
  private async checkReturn(
    trx: Knex.Transaction,
    payment: PaymentRow,
    request: ReturnRequest,
    factKey: string,
  ): Promise<{ matched: boolean; refundable: number }> {
    if ((await returnByFactKey(trx, payment.id, factKey)) !== undefined) {
      throw new AppError('RETURN_REFUND_MISMATCH', { detail: 'A return with this gateway refund id is recorded.' });
    }
    const existing =
      request.mode === 'refund'
        ? await this.deps.payments.existingRefund(trx, payment.id, factKey)
        : { matched: false as const };
    if (existing.matched && existing.amount !== request.amount) {
      throw new AppError('RETURN_REFUND_MISMATCH', {
        detail: 'The gateway recorded this refund id for another amount.',
      });
    }
    const refundable = refundableOf(payment);
    if (!existing.matched && request.amount > refundable) {
      throw new AppError('RETURN_EXCEEDS_REFUNDABLE', {
        detail: `${refundable} ${payment.currency as string} is left to return of this payment.`,
        extensions: { refundable },
      });
    }
    return { matched: existing.matched, refundable };
  }

  /** The presented card, or undefined when this vault does not know it (never created here). */
  private async cardOf(presented: PresentedCard, caller: Caller): Promise<CardView | undefined> {
    if (presented.kind === 'token') {
      try {
        return await this.deps.vault.getCard(presented.token, caller);
      } catch (error) {
        if (error instanceof AppError && error.code === 'NOT_FOUND') return undefined;
        throw error;
      }
    }
    const input: CardInput = presented.kind === 'pan' ? { kind: 'pan', pan: presented.pan } : presented;
    return this.deps.vault.lookup(input);
  }

  private async shopperRefsOf(card: CardView): Promise<string[]> {
    const survivor = await survivorOf(this.knex, card.shopperReference);
    return [survivor, ...(await mergedInto(this.knex, survivor))];
  }

  /** The payment is the card's shopper's (after merges), captured, and inside the window. */
  private async returnable(trx: Knex.Transaction, payment: PaymentRow, card: CardView): Promise<boolean> {
    if (payment.shopper_ref === null || payment.currency === null || payment.authorised_at === null) return false;
    if (payment.authorised_at.getTime() < this.windowStart().getTime()) return false;
    if (payment.captured_amount <= 0) return false;
    const [own, theirs] = await Promise.all([
      survivorOf(trx, card.shopperReference),
      survivorOf(trx, payment.shopper_ref),
    ]);
    return own === theirs;
  }

  private windowStart(): Date {
    return new Date(this.options.now().getTime() - this.options.windowDays * DAY_MS);
  }

  /** Every lookup and return counts, allowed or not, before anything is looked up (any instance). */
  private async spendBudget(caller: Caller): Promise<void> {
    const client = caller.clientKey ?? caller.subject;
    const limit = await consumeRateLimit(this.knex, `returns:${client}`, this.options.perMinute, 60);
    if (limit.allowed) return;
    throw new AppError('TOO_MANY_REQUESTS', {
      detail: 'Return lookup rate limit reached for this client.',
      headers: { 'Retry-After': String(limit.retryAfterSeconds) },
    });
  }
}

function notReturnable(): AppError {
  return new AppError('NOT_FOUND', { detail: 'No returnable purchase of this card matches.' });
}

function purchaseOf(row: PaymentRow): ReturnablePurchase {
  return {
    paymentId: row.id,
    authorisedAt: row.authorised_at as Date,
    channel: row.channel,
    currency: row.currency as string,
    amount: row.captured_amount,
    refundableAmount: refundableOf(row),
    last4: row.card_last4,
  };
}
