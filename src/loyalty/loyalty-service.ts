/* eslint max-lines: ["error", 500] -- earning, redemption and expiry: three use cases to split (issue 20) */
/**
 * The points ledger's writes: earning from payment transitions, redemptions and their reversal,
 * expiry. Every method is one transaction; every booking goes through a {@link LedgerBook}.
 *
 * Exactly once, whatever the deliveries:
 * - payments: the lot of a payment records the targets it was last booked to (pending, earn,
 *   reversal); a transition books only the difference to the new targets, under the payment's row
 *   lock (held by the webhook transaction). A redelivery has no transition; another order of the
 *   same facts reaches the same targets; each booking is numbered per payment, and that number is
 *   the entry's unique business key.
 * - redemptions: the client's `Idempotency-Key`, claimed in the same transaction as the spend.
 * - reversals of redemptions: the redemption row's state, changed under its lock.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { appendAuditEvent, canonicalJson } from '../audit/audit-log.js';
import type { Actor } from '../auth/actors.js';
import { refuseCardNumbers } from '../card-data/request-fields.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import type { PaymentTransitionEvent } from '../payments/payment-service.js';
import { earningTargets, NO_EARNING, type EarningTargets } from './earning.js';
import { claimIdempotencyKey, type StoredResponse } from './idempotency.js';
import { LedgerBook, type EntryKind, type EntryRefs, type LotRow } from './ledger-book.js';
import type { Balance } from './balance.js';
import {
  currentProgramme,
  expiryOf,
  programmeVersion,
  programmeVersions,
  programmeVersionsFromJson,
  versionInForce,
  type ProgrammeRules,
  type ProgrammeVersion,
} from './programme.js';
import { mergedInto } from '../shoppers/shopper-access.js';
import { withRetry } from './retry.js';

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

export interface ExpiryRun {
  readonly shoppers: number;
  readonly lots: number;
  readonly points: number;
  readonly idempotencyKeysPurged: number;
}

export interface LoyaltyOptions {
  readonly now?: () => Date;
  /** Idempotency keys are kept this long (at least 30 days: gateways and apps retry that long). */
  readonly idempotencyRetentionDays?: number;
  /** Told about a shopper the expiry run had to skip because expiring it failed. */
  readonly onExpiryError?: (shopperRef: string, error: unknown) => void;
}

export class LoyaltyService {
  private readonly now: () => Date;
  private readonly rulesByVersion = new Map<number, ProgrammeRules>();

  constructor(
    private readonly knex: Knex,
    private readonly options: LoyaltyOptions = {},
  ) {
    this.now = options.now ?? (() => new Date());
  }

  /**
   * The payment transition listener: runs inside the webhook batch's transaction, the payments'
   * rows locked, with at most one transition per payment. Set-based, in a fixed number of statements
   * whatever the batch: the lots of payments that existed before it, then merges and programme
   * together, then the accounts (locked), then the lots again under those locks when there were any;
   * the bookings are written in one.
   */
  readonly onPaymentTransitions = async (
    trx: Knex.Transaction,
    transitions: readonly PaymentTransitionEvent[],
  ): Promise<void> => {
    const events = transitions.filter(
      (e): e is PaymentTransitionEvent & { shopperRef: string } => e.shopperRef !== null,
    );
    if (events.length === 0) return;
    const now = this.now();
    // A lot is guarded by its shopper's account lock, so lots are read (again) once the accounts are
    // locked; a lot belongs to the account it was moved to.
    // A payment created in this transaction has no lot yet: only the others are looked up.
    const older = events.filter((e) => !e.paymentCreated).map((e) => e.paymentId);
    const existing =
      older.length === 0
        ? []
        : ((await trx('loyalty_lots').whereIn('payment_id', older).select('payment_id', 'shopper_ref')) as {
            payment_id: string;
            shopper_ref: string;
          }[]);
    const lotShopper = new Map(existing.map((l) => [l.payment_id, l.shopper_ref]));
    // Events without a lot need their shopper's survivor (if merged) and, for a new lot, the programme.
    const lotless = events.filter((e) => !lotShopper.has(e.paymentId)).map((e) => e.shopperRef);
    const context = lotless.length === 0 ? undefined : await survivorsAndProgramme(trx, lotless);
    const survivors = context?.survivors ?? new Map<string, string>();
    const shopperOf = (e: PaymentTransitionEvent & { shopperRef: string }): string =>
      lotShopper.get(e.paymentId) ?? survivors.get(e.shopperRef) ?? e.shopperRef;
    const books = await LedgerBook.openMany(trx, events.map(shopperOf), now);
    const lots = new Map(
      existing.length === 0
        ? []
        : (
            (await trx('loyalty_lots').whereIn(
              'payment_id',
              existing.map((l) => l.payment_id),
            )) as LotRow[]
          ).map((l) => [l.payment_id, l]),
    );
    let versions = context?.versions;
    for (const event of events) {
      const book = books.get(shopperOf(event)) as LedgerBook;
      const locked = lots.get(event.paymentId);
      let lot = locked === undefined ? undefined : book.adoptLot(locked);
      if (lot !== undefined && lot.shopper_ref !== book.shopperRef) {
        throw new Error('a lot moved to another shopper between its read and its lock; the delivery is retried');
      }
      let rules: ProgrammeRules;
      if (lot === undefined) {
        if (event.after.authorisedAt === null) continue;
        versions ??= await programmeVersions(trx);
        const programme = versionInForce(versions, event.after.authorisedAt);
        rules = programme.rules;
        if (sameTargets(earningTargets(event.after, event.channel, rules), NO_EARNING)) continue;
        lot = book.newLot(event.paymentId, programme.version);
      } else {
        rules = await this.rules(trx, lot.rule_version);
      }
      await this.bookTargets(book, lot, earningTargets(event.after, event.channel, rules), rules);
    }
    await LedgerBook.flushAll(trx, [...books.values()]);
  };

  /**
   * Spends available points, soonest-expiring lots first, recording each lot drawn from. The key is
   * claimed in the same transaction: a concurrent request with the same key waits for this one and
   * then replays its response; a refused request stores nothing and may be retried with the key.
   */
  async redeem(
    shopperRef: string,
    request: RedemptionRequest,
    idempotencyKey: string,
    actor: Actor,
  ): Promise<StoredResponse<RedemptionResult>> {
    refuseCardNumbers({ reference: request.reference, description: request.description });
    // The shopper is the key's scope, not part of the request: a key moved to a survivor still matches.
    const requestHash = hashRequest(request);
    return withRetry(() =>
      this.knex.transaction(async (trx) => {
        const now = this.now();
        const claim = await claimIdempotencyKey<RedemptionResult>(
          trx,
          { scope: `redemption:${shopperRef}`, key: idempotencyKey, requestHash },
          now,
          this.retentionDays(),
        );
        if (claim.replay !== undefined) return claim.replay;

        const book = await LedgerBook.open(trx, shopperRef, now);
        const { rules } = await currentProgramme(trx);
        if (book.account.available - request.points < -rules.negativeBalanceAllowance) {
          throw new AppError('INSUFFICIENT_POINTS', {
            detail: `${book.account.available} points are available.`,
            extensions: { available: book.account.available },
          });
        }
        const id = newId('red');
        await trx('loyalty_redemptions').insert({
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
        const body: RedemptionResult = {
          redemptionId: id,
          points: request.points,
          reference: request.reference,
          state: 'completed',
          balance: await book.balance(),
        };
        return claim.store(201, body);
      }),
    );
  }

  /**
   * Gives a redemption's points back to the lots it drew from (keeping their expiry), exactly once:
   * reversing a reversed redemption answers with it as it is. Audited.
   */
  async reverseRedemption(shopperRef: string, redemptionId: string, actor: Actor): Promise<RedemptionResult> {
    return withRetry(() =>
      this.knex.transaction(async (trx) => {
        const now = this.now();
        const found = (await trx('loyalty_redemptions').where({ id: redemptionId }).first()) as
          RedemptionRow | undefined;
        if (found === undefined || found.shopper_ref !== shopperRef) {
          throw new AppError('NOT_FOUND', { detail: 'No such redemption.' });
        }
        const book = await LedgerBook.open(trx, shopperRef, now);
        const redemption = (await trx('loyalty_redemptions')
          .where({ id: redemptionId })
          .forUpdate()
          .first()) as RedemptionRow;
        // Re-read under the lock: a merge may have moved it (then the account above was refused).
        if (redemption.shopper_ref !== book.shopperRef)
          throw new AppError('NOT_FOUND', { detail: 'No such redemption.' });
        if (redemption.state === 'completed') {
          await this.giveBack(trx, book, redemption);
          await trx('loyalty_redemptions')
            .where({ id: redemptionId })
            .update({ state: 'reversed', reversed_at: now, reversed_by: actor.subject });
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

  /**
   * Expires lots past their expiry date, one shopper per transaction. Shoppers whose account is busy
   * (a redemption in flight, another instance expiring them) are skipped and picked up by the next
   * run, so any number of instances can run this at once. Also forgets expired idempotency keys.
   */
  async expireDue(batchSize = 500): Promise<ExpiryRun> {
    const now = this.now();
    const skipped = new Set<string>();
    let shoppers = 0;
    let lots = 0;
    let points = 0;
    for (;;) {
      const due = (await this.knex('loyalty_lots')
        .distinct('shopper_ref')
        .where('remaining', '>', 0)
        .where('expires_at', '<=', now)
        .whereNotIn('shopper_ref', [...skipped])
        .limit(batchSize)) as { shopper_ref: string }[];
      if (due.length === 0) break;
      for (const { shopper_ref: shopperRef } of due) {
        const done = await this.expireShopper(shopperRef, now).catch((error: unknown) => {
          // One shopper that cannot be expired must not stall expiry for everyone after it.
          this.options.onExpiryError?.(shopperRef, error);
          return undefined;
        });
        if (done === undefined) {
          skipped.add(shopperRef);
          continue;
        }
        shoppers += 1;
        lots += done.lots;
        points += done.points;
      }
    }
    const purged = await this.knex('idempotency_keys').where('expires_at', '<', now).delete();
    return { shoppers, lots, points, idempotencyKeysPurged: purged };
  }

  /** Expires one shopper's due lots; undefined when its account is busy (retried by the next run). */
  private async expireShopper(shopperRef: string, now: Date): Promise<{ lots: number; points: number } | undefined> {
    return this.knex.transaction(async (trx) => {
      const book = await LedgerBook.tryOpen(trx, shopperRef, now);
      if (book === undefined) return undefined;
      const expiring = (await book.spendableLots()).filter((l) => l.expires_at !== null && l.expires_at <= now);
      const total = expiring.reduce((sum, l) => sum + l.remaining, 0);
      for (const lot of expiring) book.expire(lot);
      await book.flush();
      return { lots: expiring.length, points: total };
    });
  }

  /** Books the difference between a lot's recorded targets and the new ones. */
  private async bookTargets(
    book: LedgerBook,
    lot: LotRow,
    targets: EarningTargets,
    rules: ProgrammeRules,
  ): Promise<void> {
    const refs: EntryRefs = { paymentId: lot.payment_id, ruleVersion: lot.rule_version };
    const next = (): string => `payment:${lot.payment_id}:${++lot.effects}`;
    book.touch(lot);
    if (targets.pending !== lot.pending) book.changePending(lot, targets.pending - lot.pending, next(), refs);

    const earnDelta = targets.earn - lot.earn_target;
    lot.earn_target = targets.earn;
    if (earnDelta !== 0) book.account.lifetime_earned = Math.max(0, book.account.lifetime_earned + earnDelta);
    if (earnDelta > 0) this.give(book, lot, earnDelta, 'earn', next(), refs, rules);
    if (earnDelta < 0) await this.takeBack(book, lot, -earnDelta, 'earn_voided', next(), refs, rules);

    const reversalDelta = targets.reversal - lot.reversal_target;
    lot.reversal_target = targets.reversal;
    if (reversalDelta > 0) await this.takeBack(book, lot, reversalDelta, 'reversal', next(), refs, rules);
    if (reversalDelta < 0) this.give(book, lot, -reversalDelta, 'reversal_cancelled', next(), refs, rules);
  }

  /** Credits a payment's lot; points that had been written off are un-written-off first. */
  private give(
    book: LedgerBook,
    lot: LotRow,
    points: number,
    kind: EntryKind,
    key: string,
    refs: EntryRefs,
    rules: ProgrammeRules,
  ): void {
    const unWrite = Math.min(points, lot.written_off);
    if (unWrite > 0) {
      lot.written_off -= unWrite;
      book.record('write_off_cancelled', unWrite, {}, `${key}:write_off_cancelled`, refs);
    }
    const credit = points - unWrite;
    if (credit <= 0) return;
    if (lot.available_at === null) {
      lot.available_at = book.now;
      lot.expires_at = expiryOf(book.now, rules);
    }
    lot.credited += credit;
    book.credit(lot, credit, kind, key, refs);
  }

  private async takeBack(
    book: LedgerBook,
    lot: LotRow,
    points: number,
    kind: EntryKind,
    key: string,
    refs: EntryRefs,
    rules: ProgrammeRules,
  ): Promise<void> {
    const taken = await book.take(lot, points, kind, key, refs, rules.negativeBalanceAllowance);
    lot.recovered += taken.fromLots + taken.intoDebt;
    lot.written_off += taken.writtenOff;
  }

  /**
   * Back to the lots a redemption drew from. The part that went below zero reduces the debt; if
   * later earnings had already paid that debt, those points go to the lot that paid it.
   */
  private async giveBack(trx: Knex.Transaction, book: LedgerBook, redemption: RedemptionRow): Promise<void> {
    const parts = (await trx('loyalty_entries')
      .where({ redemption_id: redemption.id, kind: 'redemption' })
      .select('lot_id', 'points')) as { lot_id: string | null; points: number }[];
    const key = `redemption:${redemption.id}:reversed`;
    const refs: EntryRefs = { redemptionId: redemption.id };
    const lotIds = parts.flatMap((p) => (p.lot_id === null ? [] : [p.lot_id]));
    const lots = new Map(((await trx('loyalty_lots').whereIn('id', lotIds)) as LotRow[]).map((l) => [l.id, l]));
    for (const part of parts) {
      if (part.lot_id === null) {
        const fromDebt = Math.min(-part.points, book.account.debt);
        book.reduceDebt(fromDebt, 'redemption_reversed', `${key}:debt`, refs);
        const paidBack = -part.points - fromDebt;
        if (paidBack > 0) {
          const payer = (await trx('loyalty_entries')
            .whereIn('shopper_ref', [book.shopperRef, ...(await mergedInto(trx, book.shopperRef))])
            .where({ kind: 'debt_settled' })
            .orderBy([
              { column: 'created_at', order: 'desc' },
              { column: 'id', order: 'desc' },
            ])
            .first('lot_id')) as { lot_id: string } | undefined;
          if (payer === undefined) throw new Error('a settled debt without the lot that settled it');
          const lot = (await trx('loyalty_lots').where({ id: payer.lot_id }).first()) as LotRow;
          book.credit(book.adoptLot(lot), paidBack, 'redemption_reversed', `${key}:settled`, refs);
        }
        continue;
      }
      const lot = lots.get(part.lot_id);
      if (lot === undefined) throw new Error('a redemption drew from a lot that is gone');
      book.credit(book.adoptLot(lot), -part.points, 'redemption_reversed', `${key}:lot:${lot.id}`, refs);
    }
  }

  private async rules(db: Knex | Knex.Transaction, version: number): Promise<ProgrammeRules> {
    let rules = this.rulesByVersion.get(version);
    if (rules === undefined) {
      // Versions are immutable: caching one forever is safe.
      rules = (await programmeVersion(db, version)).rules;
      this.rulesByVersion.set(version, rules);
    }
    return rules;
  }

  private retentionDays(): number {
    return Math.max(30, this.options.idempotencyRetentionDays ?? 30);
  }
}

interface RedemptionRow {
  id: string;
  shopper_ref: string;
  points: number;
  reference: string;
  description: string | null;
  state: 'completed' | 'reversed';
}

function sameTargets(a: EarningTargets, b: EarningTargets): boolean {
  return a.pending === b.pending && a.earn === b.earn && a.reversal === b.reversal;
}

function hashRequest(request: object): string {
  return createHash('sha256').update(canonicalJson(request)).digest('hex');
}

/**
 * The survivors of merged shoppers among `shopperRefs`, and every programme version, in one read
 * (one round trip instead of two in the webhook transaction). Neither is locked, as before: a merge
 * that commits meanwhile is seen on the account lock ({@link LedgerBook.openMany}).
 */
async function survivorsAndProgramme(
  trx: Knex.Transaction,
  shopperRefs: readonly string[],
): Promise<{ survivors: Map<string, string>; versions: ProgrammeVersion[] }> {
  const refs = [...new Set(shopperRefs)];
  const result = (await trx.raw(
    `select
       (select coalesce(json_agg(json_build_array(merged_ref, survivor_ref)), '[]'::json)
          from shopper_merges where merged_ref in (${refs.map(() => '?').join(', ')})) as merges,
       (select json_agg(p order by p.version) from loyalty_programme_versions p) as programme`,
    refs,
  )) as { rows: { merges: [string, string][] | string; programme: unknown }[] };
  const [row] = result.rows;
  if (row === undefined) throw new Error('the merges-and-programme read returned no row');
  const merges = (typeof row.merges === 'string' ? JSON.parse(row.merges) : row.merges) as [string, string][];
  return { survivors: new Map(merges), versions: programmeVersionsFromJson(row.programme) };
}
