/**
 * Operator adjustments: goodwill (points granted or taken by hand, with a reason) and missing-points
 * claims (points granted for a gateway payment that never reached the ledger). Each is one
 * transaction, retried whole on a deadlock or serialisation conflict, and audited in it.
 *
 * - Exactly once per `Idempotency-Key` (scope: the shopper), claimed first in the transaction.
 * - A grant counts against the operator's daily cap (UTC day on the database clock), raised by one
 *   conditional upsert: concurrent grants by one operator on any number of instances never pass it.
 * - A claim and the payment it names (provider + the gateway's payment id) race for one earning key
 *   (`loyalty_earning_keys`): the claim is refused when the payment earned first, and the payment
 *   earns nothing when the claim was granted first. One of them wins, once.
 * - The audit entry names the operator, the shopper, the points and the claim's payment; the reason
 *   (free text that may name a person) is kept in the adjustment row only, the entry holds its SHA-256.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import type { Actor } from '../auth/actors.js';
import { appendAuditEvent, canonicalJson } from '../audit/audit-log.js';
import { refuseCardData } from '../card-data/card-data-guard.js';
import { withRetry } from '../db/retry.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import {
  addDailyGrant,
  claimEarningKeyForClaim,
  databaseDay,
  insertAdjustment,
  type AdjustmentRow,
} from './adjustment-store.js';
import type { Balance } from './balance.js';
import { claimIdempotencyKey, type StoredResponse } from './idempotency.js';
import { LedgerBook } from './ledger-book.js';
import { expiryOf } from './programme.js';
import { currentProgramme } from './programme-store.js';

export interface AdjustmentRequest {
  /** Positive: granted; negative: taken (goodwill only). */
  readonly points: number;
  readonly reason: string;
  /** Present for a missing-points claim: the payment that never earned. */
  readonly missingPayment?: { readonly provider: string; readonly paymentId: string };
}

export interface AdjustmentResult {
  readonly adjustmentId: string;
  readonly shopperReference: string;
  readonly kind: 'goodwill' | 'missing_points';
  readonly points: number;
  readonly reason: string;
  readonly operator: string;
  /** The operator's day (UTC, database clock) the adjustment counts in. */
  readonly operatorDay: string;
  readonly missingPayment?: { readonly provider: string; readonly paymentId: string };
  readonly createdAt: string;
  readonly balance: Balance;
}

export interface AdjustmentOptions {
  readonly now: () => Date;
  /** Points one operator may grant per UTC day (database clock), goodwill and claims together. */
  readonly dailyCap: number;
  readonly idempotencyRetentionDays?: number;
}

export class AdjustmentService {
  constructor(
    private readonly knex: Knex,
    private readonly options: AdjustmentOptions,
  ) {}

  async adjust(
    shopperRef: string,
    request: AdjustmentRequest,
    idempotencyKey: string,
    actor: Actor,
  ): Promise<StoredResponse<AdjustmentResult>> {
    refuseCardData(
      {
        reason: request.reason,
        ...(request.missingPayment === undefined
          ? {}
          : { provider: request.missingPayment.provider, paymentId: request.missingPayment.paymentId }),
      },
      '/body',
    );
    if (!Number.isSafeInteger(request.points) || request.points === 0) {
      throw new AppError('ADJUSTMENT_INVALID', { detail: 'points must be a non-zero integer.' });
    }
    if (request.missingPayment !== undefined && request.points < 0) {
      throw new AppError('ADJUSTMENT_INVALID', { detail: 'A missing-points claim grants points.' });
    }
    const requestHash = createHash('sha256').update(canonicalJson(request)).digest('hex');
    return withRetry(() =>
      this.knex.transaction(async (trx) => {
        const now = this.options.now();
        const claim = await claimIdempotencyKey<AdjustmentResult>(
          trx,
          { scope: `adjustment:${shopperRef}`, key: idempotencyKey, requestHash },
          now,
          Math.max(30, this.options.idempotencyRetentionDays ?? 30),
        );
        if (claim.replay !== undefined) return claim.replay;
        return claim.store(201, await this.book(trx, shopperRef, request, actor, now));
      }),
    );
  }

  private async book(
    trx: Knex.Transaction,
    shopperRef: string,
    request: AdjustmentRequest,
    actor: Actor,
    now: Date,
  ): Promise<AdjustmentResult> {
    const book = await LedgerBook.open(trx, shopperRef, now);
    const id = newId('adj');
    const kind = request.missingPayment === undefined ? 'goodwill' : 'missing_points';
    let day: string;
    if (request.points > 0) {
      const counted = await addDailyGrant(trx, actor.subject, request.points, this.options.dailyCap);
      if (counted === undefined) {
        throw new AppError('ADJUSTMENT_CAP_EXCEEDED', {
          detail: `An operator may grant at most ${this.options.dailyCap} points a day.`,
          extensions: { dailyCap: this.options.dailyCap },
        });
      }
      day = counted;
    } else {
      if (book.account.available < -request.points) {
        throw new AppError('INSUFFICIENT_POINTS', {
          detail: `${book.account.available} points are available.`,
          extensions: { available: book.account.available },
        });
      }
      day = await databaseDay(trx);
    }
    const row: AdjustmentRow = {
      id,
      shopper_ref: shopperRef,
      kind,
      points: request.points,
      reason: request.reason,
      operator: actor.subject,
      provider: request.missingPayment?.provider ?? null,
      payment_ref: request.missingPayment?.paymentId ?? null,
      operator_day: day,
      created_at: now,
    };
    await insertAdjustment(trx, row);
    if (request.missingPayment !== undefined) {
      const won = await claimEarningKeyForClaim(
        trx,
        { provider: request.missingPayment.provider, paymentRef: request.missingPayment.paymentId, adjustmentId: id },
        now,
      );
      if (!won) throw new AppError('CLAIM_PAYMENT_EARNED', { detail: 'This payment has earned (or been claimed).' });
    }
    await this.move(trx, book, row, now);
    await appendAuditEvent(
      trx,
      {
        actor: actor.subject,
        actorType: 'client',
        action: kind === 'goodwill' ? 'loyalty.goodwill.adjusted' : 'loyalty.claim.granted',
        outcome: 'success',
        origin: actor.origin,
        resource: id,
        details: {
          shopperRef,
          points: request.points,
          operatorDay: day,
          reasonSha256: createHash('sha256').update(request.reason).digest('hex'),
          ...(request.missingPayment === undefined ? {} : { missingPayment: request.missingPayment }),
        },
      },
      now,
    );
    return {
      adjustmentId: id,
      shopperReference: shopperRef,
      kind,
      points: request.points,
      reason: request.reason,
      operator: actor.subject,
      operatorDay: day,
      ...(request.missingPayment === undefined ? {} : { missingPayment: request.missingPayment }),
      createdAt: now.toISOString(),
      balance: await book.balance(),
    };
  }

  /** A grant is a lot of its own (spent and expired like any); a debit draws soonest-expiring first. */
  private async move(trx: Knex.Transaction, book: LedgerBook, row: AdjustmentRow, now: Date): Promise<void> {
    const key = `adjustment:${row.id}`;
    if (row.points > 0) {
      const programme = await currentProgramme(trx);
      const lot = book.newAdjustmentLot(row.id, programme.version);
      lot.earn_target = row.points;
      lot.credited = row.points;
      lot.available_at = now;
      lot.expires_at = expiryOf(now, programme.rules);
      book.credit(lot, row.points, row.kind === 'goodwill' ? 'goodwill_credit' : 'missing_points_credit', key, {});
    } else {
      const taken = await book.take(undefined, -row.points, 'goodwill_debit', key, {}, 0);
      if (taken.fromLots !== -row.points) throw new Error('a debit that passed the balance check could not be covered');
    }
    await book.flush();
  }
}
