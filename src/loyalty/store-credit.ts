/**
 * Store credit (issue 22): a second, currency-denominated balance per shopper, in the same
 * exactly-once ledger as the points. It is issued by a return at a till (in the return's transaction)
 * and spent through the redemption API (`kind: store_credit`), in any channel.
 *
 * Exactly once and never below zero: every movement is an append-only entry with a unique business
 * key (`return:<id>:store-credit`, `store-credit-spend:<id>`, `merge:<ref>:store-credit:<currency>:…`)
 * written with the balance it changes; every writer first takes the shopper's account lock (the one
 * every ledger writer takes, {@link LedgerBook.open}), so concurrent spends on any number of instances
 * check the balance one after the other; a spend is claimed by its `Idempotency-Key` in the same
 * transaction; and the table's check refuses a negative balance whatever a writer does.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { canonicalJson } from '../audit/audit-log.js';
import { refuseCardData } from '../card-data/card-data-guard.js';
import { withRetry } from '../db/retry.js';
import { AppError } from '../errors/app-error.js';
import { eventBody } from '../events/event-types.js';
import { newId } from '../ids/prefixed-id.js';
import { claimIdempotencyKey, type StoredResponse } from './idempotency.js';
import { LedgerBook } from './ledger-book.js';
import {
  allBalancesLocked,
  balancesOf,
  bookEntry,
  entryByKey,
  lockedBalance,
  type StoreCreditBalanceRow,
  type StoreCreditKind,
} from './store-credit-store.js';

export interface StoreCreditSpendRequest {
  readonly kind: 'store_credit';
  /** Minor units of `currency`. */
  readonly amount: number;
  readonly currency: string;
  readonly reference: string;
  readonly description?: string;
}

export interface StoreCreditBalance {
  readonly currency: string;
  readonly balance: number;
}

export interface StoreCreditSpendResult {
  readonly redemptionId: string;
  readonly kind: 'store_credit';
  readonly amount: number;
  readonly currency: string;
  readonly reference: string;
  readonly state: 'completed';
  readonly storeCredit: StoreCreditBalance;
}

export interface StoreCreditIssue {
  readonly shopperRef: string;
  readonly currency: string;
  readonly amount: number;
  readonly returnId: string;
  readonly paymentId: string;
  readonly reference: string;
  readonly actor: string;
}

export class StoreCreditService {
  constructor(
    private readonly knex: Knex,
    private readonly options: { readonly now: () => Date; readonly idempotencyRetentionDays?: number },
  ) {}

  /** The shopper's store-credit balances (and those of shoppers merged into it), by currency. */
  async balances(shopperRefs: readonly string[]): Promise<StoreCreditBalance[]> {
    const totals = new Map<string, number>();
    for (const row of await balancesOf(this.knex, shopperRefs)) {
      totals.set(row.currency, (totals.get(row.currency) ?? 0) + row.balance);
    }
    return [...totals].map(([currency, balance]) => ({ currency, balance }));
  }

  /**
   * Issues store credit for a return, in the return's transaction (after the payment's lock: the
   * lock order payments, then accounts). Exactly once per return; an event `store_credit.issued`.
   */
  async issue(trx: Knex.Transaction, issue: StoreCreditIssue): Promise<StoreCreditBalance> {
    const now = this.options.now();
    const book = await LedgerBook.open(trx, issue.shopperRef, now);
    const key = `return:${issue.returnId}:store-credit`;
    const done = await entryByKey(trx, key);
    if (done !== undefined) {
      const row = await lockedBalance(trx, issue.shopperRef, issue.currency);
      return { currency: issue.currency, balance: row?.balance ?? 0 };
    }
    const after = await bookEntry(trx, {
      ...entryOf(issue.shopperRef, issue.currency, 'issued', issue.amount, key, issue.actor, now),
      return_id: issue.returnId,
      reference: issue.reference,
    });
    book.emit(
      eventBody(
        'store_credit.issued',
        key,
        issue.shopperRef,
        {
          returnId: issue.returnId,
          paymentId: issue.paymentId,
          storeCredit: { currency: issue.currency, amount: issue.amount, balance: after.balance },
        },
        now,
      ),
    );
    await book.flush();
    return { currency: after.currency, balance: after.balance };
  }

  /**
   * Spends store credit (the redemption API's `kind: store_credit`). The key is claimed in the same
   * transaction as the spend and shares the points redemptions' scope: one key, one effect.
   */
  async spend(
    shopperRef: string,
    request: StoreCreditSpendRequest,
    idempotencyKey: string,
    actor: { readonly subject: string },
  ): Promise<StoredResponse<StoreCreditSpendResult>> {
    refuseCardData({ reference: request.reference, description: request.description }, '/body');
    const requestHash = createHash('sha256').update(canonicalJson(request)).digest('hex');
    return withRetry(() =>
      this.knex.transaction(async (trx) => {
        const now = this.options.now();
        const claim = await claimIdempotencyKey<StoreCreditSpendResult>(
          trx,
          { scope: `redemption:${shopperRef}`, key: idempotencyKey, requestHash },
          now,
          Math.max(30, this.options.idempotencyRetentionDays ?? 30),
        );
        if (claim.replay !== undefined) return claim.replay;
        return claim.store(201, await this.spendLocked(trx, shopperRef, request, actor.subject, now));
      }),
    );
  }

  private async spendLocked(
    trx: Knex.Transaction,
    shopperRef: string,
    request: StoreCreditSpendRequest,
    actor: string,
    now: Date,
  ): Promise<StoreCreditSpendResult> {
    const book = await LedgerBook.open(trx, shopperRef, now);
    const row = await lockedBalance(trx, shopperRef, request.currency);
    const available = row?.balance ?? 0;
    if (available < request.amount) {
      throw new AppError('INSUFFICIENT_STORE_CREDIT', {
        detail: `${available} ${request.currency} of store credit is available.`,
        extensions: { available, currency: request.currency },
      });
    }
    const id = newId('scs');
    const key = `store-credit-spend:${id}`;
    const after = await bookEntry(trx, {
      ...entryOf(shopperRef, request.currency, 'spent', -request.amount, key, actor, now),
      id,
      reference: request.reference,
      description: request.description ?? null,
    });
    const storeCredit = { currency: after.currency, balance: after.balance };
    book.emit(
      eventBody(
        'store_credit.spent',
        key,
        shopperRef,
        { redemptionId: id, reference: request.reference, storeCredit: { ...storeCredit, amount: request.amount } },
        now,
      ),
    );
    await book.flush();
    return {
      redemptionId: id,
      kind: 'store_credit',
      amount: request.amount,
      currency: request.currency,
      reference: request.reference,
      state: 'completed',
      storeCredit,
    };
  }
}

/**
 * A merge moves the absorbed shopper's store credit to the survivor, in the merge's transaction
 * (both accounts locked): one `merge_out` and one `merge_in` entry per currency, keyed by the
 * absorbed reference, so a retried merge moves nothing twice.
 */
export async function moveStoreCredit(
  trx: Knex.Transaction,
  absorbed: string,
  survivor: string,
  actor: string,
  now: Date,
): Promise<StoreCreditBalanceRow[]> {
  const balances = await allBalancesLocked(trx, absorbed);
  for (const b of balances) {
    const key = `merge:${absorbed}:store-credit:${b.currency}`;
    await bookEntry(trx, entryOf(absorbed, b.currency, 'merge_out', -b.balance, `${key}:out`, actor, now));
    await bookEntry(trx, entryOf(survivor, b.currency, 'merge_in', b.balance, `${key}:in`, actor, now));
  }
  return balances;
}

function entryOf(
  shopperRef: string,
  currency: string,
  kind: StoreCreditKind,
  amount: number,
  key: string,
  actor: string,
  now: Date,
): {
  id: string;
  shopper_ref: string;
  currency: string;
  kind: StoreCreditKind;
  amount: number;
  return_id: string | null;
  reference: string | null;
  description: string | null;
  created_by: string;
  business_key: string;
  created_at: Date;
} {
  return {
    id: newId('sce'),
    shopper_ref: shopperRef,
    currency,
    kind,
    amount,
    return_id: null,
    reference: null,
    description: null,
    created_by: actor,
    business_key: key,
    created_at: now,
  };
}
