/**
 * Expiry: lots past their expiry date lose their points, one shopper per transaction. Shoppers whose
 * account is busy (a redemption in flight, another instance expiring them) are skipped and picked up
 * by the next run, so any number of instances can run it at once. Also forgets expired idempotency
 * keys.
 */
import type { Knex } from 'knex';
import { LedgerBook } from './ledger-book.js';
import { purgeExpiredIdempotencyKeys, shoppersWithDueLots } from './ledger-store.js';

export interface ExpiryRun {
  readonly shoppers: number;
  readonly lots: number;
  readonly points: number;
  readonly idempotencyKeysPurged: number;
}

export interface ExpiryOptions {
  readonly now: () => Date;
  /** Told about a shopper the run had to skip because expiring it failed. */
  readonly onExpiryError?: (shopperRef: string, error: unknown) => void;
}

export class ExpiryService {
  constructor(
    private readonly knex: Knex,
    private readonly options: ExpiryOptions,
  ) {}

  async expireDue(batchSize = 500): Promise<ExpiryRun> {
    const now = this.options.now();
    const skipped = new Set<string>();
    let shoppers = 0;
    let lots = 0;
    let points = 0;
    for (;;) {
      const due = await shoppersWithDueLots(this.knex, now, [...skipped], batchSize);
      if (due.length === 0) break;
      for (const shopperRef of due) {
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
    const purged = await purgeExpiredIdempotencyKeys(this.knex, now);
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
}
