/**
 * Redemptions: spending points and reversing a spend. Each is one transaction, retried whole when
 * PostgreSQL breaks a deadlock or a serialisation conflict.
 *
 * Exactly once: a redemption by the client's `Idempotency-Key`, claimed in the same transaction as
 * the spend; a reversal by the redemption row's state, changed under its lock.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { appendAuditEvent, canonicalJson } from '../audit/audit-log.js';
import { refuseCardData } from '../card-data/card-data-guard.js';
import { withRetry } from '../db/retry.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import type { Balance } from './balance.js';
import { claimIdempotencyKey, type StoredResponse } from './idempotency.js';
import { LedgerBook, type EntryRefs } from './ledger-book.js';
import {
  findRedemption,
  insertRedemption,
  lotById,
  lotsByIds,
  markRedemptionReversed,
  type RedemptionRow,
} from './ledger-store.js';
import { velocityRefusal, type RedemptionVelocity } from './programme-controls.js';
import { currentProgramme } from './programme-store.js';
import { lastDebtSettler, recentRedemptions, redemptionDraws } from './redemption-store.js';
import { mergedInto } from '../shoppers/shopper-access.js';

/** Who asks (the caller's subject, and where from, for the audit trail). */
interface RedemptionActor {
  readonly subject: string;
  readonly origin: string;
}

export interface RedemptionRequest {
  readonly points: number;
  readonly reference: string;
  readonly description?: string;
}

export interface RedemptionResult {
  readonly redemptionId: string;
  readonly points: number;
  readonly reference: string;
  readonly state: 'completed' | 'reversed';
  readonly balance: Balance;
}

export interface RedemptionOptions {
  readonly now: () => Date;
  /** Idempotency keys are kept this long (at least 30 days: gateways and apps retry that long). */
  readonly idempotencyRetentionDays?: number;
}

export class RedemptionService {
  constructor(
    private readonly knex: Knex,
    private readonly options: RedemptionOptions,
  ) {}

  /**
   * Spends available points, soonest-expiring lots first, recording each lot drawn from. The key is
   * claimed in the same transaction: a concurrent request with the same key waits for this one and
   * then replays its response; a refused request stores nothing and may be retried with the key.
   */
  async redeem(
    shopperRef: string,
    request: RedemptionRequest,
    idempotencyKey: string,
    actor: RedemptionActor,
  ): Promise<StoredResponse<RedemptionResult>> {
    // Free text is stored and shown back: a card number in it is refused, never kept.
    refuseCardData({ reference: request.reference, description: request.description }, '/body');
    // The shopper is the key's scope, not part of the request: a key moved to a survivor still matches.
    const requestHash = createHash('sha256').update(canonicalJson(request)).digest('hex');
    return withRetry(() =>
      this.knex.transaction(async (trx) => {
        const now = this.options.now();
        const claim = await claimIdempotencyKey<RedemptionResult>(
          trx,
          { scope: `redemption:${shopperRef}`, key: idempotencyKey, requestHash },
          now,
          Math.max(30, this.options.idempotencyRetentionDays ?? 30),
        );
        if (claim.replay !== undefined) return claim.replay;
        return claim.store(201, await this.spend(trx, shopperRef, request, actor, now));
      }),
    );
  }

  private async spend(
    trx: Knex.Transaction,
    shopperRef: string,
    request: RedemptionRequest,
    actor: RedemptionActor,
    now: Date,
  ): Promise<RedemptionResult> {
    const book = await LedgerBook.open(trx, shopperRef, now);
    const { rules } = await currentProgramme(trx);
    await refuseAboveVelocity(trx, shopperRef, request.points, rules.redemptionVelocity, now);
    if (book.account.available - request.points < -rules.negativeBalanceAllowance) {
      throw new AppError('INSUFFICIENT_POINTS', {
        detail: `${book.account.available} points are available.`,
        extensions: { available: book.account.available },
      });
    }
    const id = newId('red');
    await insertRedemption(trx, {
      id,
      shopper_ref: shopperRef,
      points: request.points,
      reference: request.reference,
      description: request.description ?? null,
      state: 'completed',
      created_by: actor.subject,
      created_at: now,
    });
    const taken = await book.take(
      undefined,
      request.points,
      'redemption',
      `redemption:${id}`,
      { redemptionId: id },
      rules.negativeBalanceAllowance,
    );
    if (taken.writtenOff > 0) throw new Error('a redemption that passed the balance check could not be covered');
    await book.flush();
    return {
      redemptionId: id,
      points: request.points,
      reference: request.reference,
      state: 'completed',
      balance: await book.balance(),
    };
  }

  /**
   * Gives a redemption's points back to the lots it drew from (keeping their expiry), exactly once:
   * reversing a reversed redemption answers with it as it is. Audited.
   */
  async reverseRedemption(shopperRef: string, redemptionId: string, actor: RedemptionActor): Promise<RedemptionResult> {
    return withRetry(() =>
      this.knex.transaction(async (trx) => {
        const now = this.options.now();
        const found = await findRedemption(trx, redemptionId);
        if (found === undefined || found.shopper_ref !== shopperRef) {
          throw new AppError('NOT_FOUND', { detail: 'No such redemption.' });
        }
        const book = await LedgerBook.open(trx, shopperRef, now);
        const redemption = (await findRedemption(trx, redemptionId, true)) as RedemptionRow;
        // Re-read under the lock: a merge may have moved it (then the account above was refused).
        if (redemption.shopper_ref !== book.shopperRef)
          throw new AppError('NOT_FOUND', { detail: 'No such redemption.' });
        if (redemption.state === 'completed') {
          await giveBack(trx, book, redemption);
          await markRedemptionReversed(trx, redemptionId, now, actor.subject);
          await book.flush();
          await appendAuditEvent(
            trx,
            {
              actor: actor.subject,
              actorType: 'client',
              action: 'loyalty.redemption.reversed',
              outcome: 'success',
              origin: actor.origin,
              resource: redemptionId,
              details: { shopperRef, points: redemption.points },
            },
            now,
          );
        }
        return {
          redemptionId,
          points: redemption.points,
          reference: redemption.reference,
          state: 'reversed',
          balance: await book.balance(),
        };
      }),
    );
  }
}

/**
 * The velocity limit of the version in force, checked under the account lock (so two instances
 * racing for the last redemption of a window cannot both pass it): 429 with Retry-After while the
 * window is full, 422 for a redemption larger than the window ever allows.
 */
async function refuseAboveVelocity(
  trx: Knex.Transaction,
  shopperRef: string,
  points: number,
  limit: RedemptionVelocity | null,
  now: Date,
): Promise<void> {
  if (limit === null) return;
  const recent = await recentRedemptions(trx, shopperRef, new Date(now.getTime() - limit.windowSeconds * 1000));
  const refusal = velocityRefusal(limit, recent, points, now);
  if (refusal === undefined) return;
  const extensions = {
    windowSeconds: limit.windowSeconds,
    ...(limit.maxCount === undefined ? {} : { maxCount: limit.maxCount }),
    ...(limit.maxPoints === undefined ? {} : { maxPoints: limit.maxPoints }),
  };
  if (refusal === 'never') {
    throw new AppError('REDEMPTION_ABOVE_LIMIT', {
      detail: `At most ${limit.maxPoints} points can be redeemed in ${limit.windowSeconds} seconds.`,
      extensions,
    });
  }
  throw new AppError('REDEMPTION_VELOCITY_EXCEEDED', {
    detail: `Too many redemptions in ${limit.windowSeconds} seconds; retry in ${refusal.retryAfterSeconds} seconds.`,
    extensions: { ...extensions, retryAfterSeconds: refusal.retryAfterSeconds },
    headers: { 'Retry-After': String(refusal.retryAfterSeconds) },
  });
}

/**
 * Back to the lots a redemption drew from. The part that went below zero reduces the debt; if later
 * earnings had already paid that debt, those points go to the lot that paid it.
 */
async function giveBack(trx: Knex.Transaction, book: LedgerBook, redemption: RedemptionRow): Promise<void> {
  const parts = await redemptionDraws(trx, redemption.id);
  const key = `redemption:${redemption.id}:reversed`;
  const refs: EntryRefs = { redemptionId: redemption.id };
  const lots = await lotsByIds(
    trx,
    parts.flatMap((p) => (p.lot_id === null ? [] : [p.lot_id])),
  );
  for (const part of parts) {
    if (part.lot_id === null) {
      const fromDebt = Math.min(-part.points, book.account.debt);
      book.reduceDebt(fromDebt, 'redemption_reversed', `${key}:debt`, refs);
      const paidBack = -part.points - fromDebt;
      if (paidBack > 0) {
        const payer = await lastDebtSettler(trx, [book.shopperRef, ...(await mergedInto(trx, book.shopperRef))]);
        if (payer === undefined) throw new Error('a settled debt without the lot that settled it');
        book.credit(book.adoptLot(await lotById(trx, payer)), paidBack, 'redemption_reversed', `${key}:settled`, refs);
      }
      continue;
    }
    const lot = lots.get(part.lot_id);
    if (lot === undefined) throw new Error('a redemption drew from a lot that is gone');
    book.credit(book.adoptLot(lot), -part.points, 'redemption_reversed', `${key}:lot:${lot.id}`, refs);
  }
}
