/**
 * One shopper's ledger inside one transaction: the account row locked, the lots it touches, and the
 * entries to append. Every movement of points goes through here, so the projections (account
 * balances, lot remainders) change only together with the entry that explains them, and
 * {@link LedgerBook.flushAll} writes them all in one statement, however many books.
 *
 * Lock order, everywhere: payments (in provider, external id order), then accounts (in shopper
 * order). A shopper's lots are written only under that shopper's account lock, so they take no row
 * locks of their own. A redemption, an expiry run, a merge and a webhook batch on one shopper
 * therefore serialise on the account row across any number of instances; PostgreSQL's deadlock
 * detection (and a rerun) remains the backstop for orders this cannot see.
 */
import type { Knex } from 'knex';
import type { OutboundEvent } from '../events/event-types.js';
import { pointsEvents } from '../events/points-events.js';
import { newId } from '../ids/prefixed-id.js';
import { balanceFrom, type Balance } from './balance.js';
import {
  lockAccounts,
  spendableLotRows,
  tryLockAccount,
  writeLedger,
  type AccountRow,
  type EntryKind,
  type EntryRefs,
  type EntryRow,
  type HoldKind,
  type LotRow,
} from './ledger-store.js';

export type { AccountRow, EntryKind, EntryRefs, HoldKind, LotRow } from './ledger-store.js';

/** Where points taken back came from. */
export interface Taken {
  readonly fromLots: number;
  readonly intoDebt: number;
  readonly writtenOff: number;
}

type LotControls = Partial<Pick<LotRow, 'hold_expires_at' | 'cap_period' | 'cap_reserved'>>;

export class LedgerBook {
  private readonly lots = new Map<string, LotRow>();
  private readonly newLots = new Set<string>();
  private readonly dirtyLots = new Set<string>();
  private readonly entries: EntryRow[] = [];
  private readonly events: OutboundEvent[] = [];
  private spendableLoaded = false;

  private constructor(
    private readonly trx: Knex.Transaction,
    readonly account: AccountRow,
    readonly now: Date,
  ) {}

  /**
   * Creates the shopper's account on first use and locks it. A shopper merged away (possibly while
   * this transaction waited for the lock) is refused: its points live with the survivor now.
   */
  static async open(trx: Knex.Transaction, shopperRef: string, now: Date): Promise<LedgerBook> {
    return (await LedgerBook.openMany(trx, [shopperRef], now)).get(shopperRef) as LedgerBook;
  }

  /**
   * Books for several shoppers, their accounts created or locked by one statement in shopper order
   * (the order every writer locks accounts in).
   */
  static async openMany(
    trx: Knex.Transaction,
    shopperRefs: readonly string[],
    now: Date,
    options: { readonly allowMerged?: boolean } = {},
  ): Promise<Map<string, LedgerBook>> {
    const sorted = [...new Set(shopperRefs)].sort();
    const books = new Map<string, LedgerBook>();
    if (sorted.length === 0) return books;
    const rows = await lockAccounts(trx, sorted, now);
    for (const row of rows) {
      // The upsert returns the row as the lock found it: a merge that committed while we waited shows.
      if (row.merged_into !== null && options.allowMerged !== true) throw new ShopperMergedMeanwhile(row.shopper_ref);
      books.set(row.shopper_ref, new LedgerBook(trx, row, now));
    }
    return books;
  }

  /** Like {@link open}, but gives up at once when another transaction holds the account (expiry). */
  static async tryOpen(trx: Knex.Transaction, shopperRef: string, now: Date): Promise<LedgerBook | undefined> {
    const row = await tryLockAccount(trx, shopperRef);
    return row === undefined ? undefined : new LedgerBook(trx, row, now);
  }

  get shopperRef(): string {
    return this.account.shopper_ref;
  }

  newLot(
    paymentId: string,
    ruleVersion: number,
    campaigns: LotRow['campaigns'] = null,
    tier: LotRow['tier'] = null,
    controls: LotControls = {},
  ): LotRow {
    return this.addLot(paymentId, null, ruleVersion, campaigns, tier, controls);
  }

  /** The lot of an adjustment (goodwill points, a granted missing-points claim). */
  newAdjustmentLot(adjustmentId: string, ruleVersion: number): LotRow {
    return this.addLot(null, adjustmentId, ruleVersion, null, null, {});
  }

  private addLot(
    paymentId: string | null,
    adjustmentId: string | null,
    ruleVersion: number,
    campaigns: LotRow['campaigns'],
    tier: LotRow['tier'],
    controls: LotControls,
  ): LotRow {
    const lot: LotRow = {
      id: newId('lot'),
      shopper_ref: this.shopperRef,
      payment_id: paymentId,
      adjustment_id: adjustmentId,
      rule_version: ruleVersion,
      pending: 0,
      earn_target: 0,
      reversal_target: 0,
      credited: 0,
      recovered: 0,
      written_off: 0,
      remaining: 0,
      expired: 0,
      effects: 0,
      available_at: null,
      expires_at: null,
      created_at: this.now,
      updated_at: this.now,
      campaigns,
      tier: tier ?? null,
      hold_expires_at: controls.hold_expires_at ?? null,
      hold_expired_at: null,
      cap_period: controls.cap_period ?? null,
      cap_reserved: controls.cap_reserved ?? null,
    };
    this.lots.set(lot.id, lot);
    this.newLots.add(lot.id);
    return lot;
  }

  /**
   * The shopper's lots with points left, soonest-expiring first. Not locked row by row: every writer
   * of a lot holds its shopper's account lock, which this book holds.
   */
  async spendableLots(): Promise<LotRow[]> {
    if (!this.spendableLoaded) {
      for (const row of await spendableLotRows(this.trx, this.shopperRef)) this.adoptLot(row);
      this.spendableLoaded = true;
    }
    return [...this.lots.values()]
      .filter((l) => l.remaining > 0 && l.shopper_ref === this.shopperRef)
      .sort(
        (a, b) =>
          (a.expires_at?.getTime() ?? Number.MAX_SAFE_INTEGER) - (b.expires_at?.getTime() ?? Number.MAX_SAFE_INTEGER) ||
          (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
      );
  }

  /**
   * Moves points between a lot's pending and nothing: `hold` when positive, otherwise the kind that
   * says why the hold ends (captured, released, expired, cancelled).
   */
  changePending(lot: LotRow, delta: number, key: string, refs: EntryRefs, ended: HoldKind = 'hold_released'): void {
    if (delta === 0) return;
    lot.pending += delta;
    this.account.pending += delta;
    this.touch(lot);
    this.append(delta > 0 ? 'hold' : ended, delta, { pending: delta, lot }, key, refs);
  }

  /**
   * Adds available points to a lot. A debt (negative balance) is paid from them first, as a
   * separate entry, so the lot keeps only what the shopper can still spend.
   */
  credit(lot: LotRow, points: number, kind: EntryKind, key: string, refs: EntryRefs): void {
    if (points <= 0) return;
    lot.remaining += points;
    this.account.available += points;
    this.touch(lot);
    this.append(kind, points, { available: points, lot, lotDelta: points }, key, refs);
    const settle = Math.min(this.account.debt, lot.remaining);
    if (settle > 0) {
      lot.remaining -= settle;
      this.account.debt -= settle;
      this.append('debt_settled', settle, { lot, lotDelta: -settle, debt: -settle }, `${key}:settle`, refs);
    }
  }

  /**
   * Takes points back: from `first` (the lot they were earned in), then the shopper's other lots,
   * soonest-expiring first, then as debt within the negative-balance allowance. The rest cannot be
   * taken and is written off by an explicit entry: never silently lost.
   */
  async take(
    first: LotRow | undefined,
    points: number,
    kind: EntryKind,
    key: string,
    refs: EntryRefs,
    allowance: number,
  ): Promise<Taken> {
    let left = points;
    let fromLots = 0;
    const drawFrom = (lot: LotRow): void => {
      const part = Math.min(left, lot.remaining);
      if (part <= 0) return;
      lot.remaining -= part;
      this.account.available -= part;
      this.touch(lot);
      this.append(kind, -part, { available: -part, lot, lotDelta: -part }, `${key}:lot:${lot.id}`, refs);
      left -= part;
      fromLots += part;
    };
    if (first !== undefined) drawFrom(first);
    if (left > 0) for (const lot of await this.spendableLots()) if (left > 0) drawFrom(lot);
    const intoDebt = Math.min(left, Math.max(0, allowance - this.account.debt));
    if (intoDebt > 0) {
      this.account.debt += intoDebt;
      this.account.available -= intoDebt;
      this.append(kind, -intoDebt, { available: -intoDebt, debt: intoDebt }, `${key}:debt`, refs);
      left -= intoDebt;
    }
    if (left > 0) this.append('written_off', -left, {}, `${key}:written_off`, refs);
    return { fromLots, intoDebt, writtenOff: left };
  }

  /** The balance as this book leaves it (every lot with points left is loaded by now). */
  async balance(): Promise<Balance> {
    return balanceFrom(this.account, await this.spendableLots(), this.now);
  }

  /** Pays the account's debt from its lots, soonest-expiring first (after a merge brought debt in). */
  async settleDebt(key: string): Promise<void> {
    for (const lot of await this.spendableLots()) {
      const settle = Math.min(this.account.debt, lot.remaining);
      if (settle <= 0) continue;
      lot.remaining -= settle;
      this.account.debt -= settle;
      this.touch(lot);
      this.append('debt_settled', settle, { lot, lotDelta: -settle, debt: -settle }, `${key}:settle:${lot.id}`, {});
    }
  }

  /** Gives debt back (a reversed redemption that had gone below zero). */
  reduceDebt(points: number, kind: EntryKind, key: string, refs: EntryRefs): void {
    if (points <= 0) return;
    this.account.debt -= points;
    this.account.available += points;
    this.append(kind, points, { available: points, debt: -points }, key, refs);
  }

  expire(lot: LotRow): void {
    const points = lot.remaining;
    if (points <= 0) return;
    lot.remaining = 0;
    lot.expired += points;
    this.account.available -= points;
    this.touch(lot);
    // The lot's expired total only grows, so it numbers the expiry exactly once.
    this.append(
      'expiry',
      -points,
      { available: -points, lot, lotDelta: -points },
      `lot:${lot.id}:expired:${lot.expired}`,
      {
        ...(lot.payment_id === null ? {} : { paymentId: lot.payment_id }),
        ruleVersion: lot.rule_version,
      },
    );
  }

  /** A bare record (written_off, write_off_cancelled, merge entries) with explicit effects. */
  record(
    kind: EntryKind,
    points: number,
    effects: { available?: number; pending?: number; debt?: number },
    key: string,
    refs: EntryRefs = {},
  ): void {
    this.account.available += effects.available ?? 0;
    this.account.pending += effects.pending ?? 0;
    this.account.debt += effects.debt ?? 0;
    this.append(kind, points, effects, key, refs);
  }

  touch(lot: LotRow): void {
    lot.updated_at = this.now;
    if (!this.newLots.has(lot.id)) this.dirtyLots.add(lot.id);
  }

  /** Writes the new lots, the entries, the changed lots, the account and its events: one statement. */
  async flush(): Promise<void> {
    await LedgerBook.flushAll(this.trx, [this]);
  }

  /**
   * Writes what several books of one transaction did, in one statement whatever their number (new
   * lots, entries, changed lots, accounts, and the outbox: the `points.*` events of these entries and
   * any other events queued on the books with {@link LedgerBook.emit}, committed or rolled back with
   * them). The parts touch disjoint rows (a lot is new or changed, never both), as one statement needs.
   */
  static async flushAll(trx: Knex.Transaction, books: readonly LedgerBook[]): Promise<void> {
    const events = books.flatMap((b) => [...pointsEvents(b.account, b.entries, b.now), ...b.events]);
    const inserted = books.flatMap((b) => [...b.newLots].map((id) => b.lots.get(id) as LotRow));
    const entries = books.flatMap((b) => b.entries);
    const updated = books.flatMap((b) => [...b.dirtyLots].map((id) => b.lots.get(id) as LotRow));
    for (const book of books) {
      book.account.updated_at = book.now;
      book.entries.length = 0;
      book.events.length = 0;
      book.newLots.clear();
      book.dirtyLots.clear();
    }
    await writeLedger(trx, { inserted, entries, updated, accounts: books.map((b) => b.account), events });
  }

  /** Queues an event (enrolment, merge) to be written with this book's next flush. */
  emit(event: OutboundEvent): void {
    this.events.push(event);
  }

  /** Tracks a lot read (and locked) by the caller, so this book writes its changes. */
  adoptLot(row: LotRow): LotRow {
    const known = this.lots.get(row.id);
    if (known !== undefined) return known;
    this.lots.set(row.id, row);
    return row;
  }

  private append(
    kind: EntryKind,
    points: number,
    effects: { available?: number; pending?: number; debt?: number; lot?: LotRow; lotDelta?: number },
    key: string,
    refs: EntryRefs,
  ): void {
    this.entries.push({
      id: newId('led'),
      shopper_ref: this.shopperRef,
      kind,
      points,
      available_delta: effects.available ?? 0,
      pending_delta: effects.pending ?? 0,
      lot_delta: effects.lotDelta ?? 0,
      debt_delta: effects.debt ?? 0,
      lot_id: effects.lot?.id ?? null,
      payment_id: refs.paymentId ?? effects.lot?.payment_id ?? null,
      redemption_id: refs.redemptionId ?? null,
      rule_version: refs.ruleVersion ?? effects.lot?.rule_version ?? null,
      campaign_id: refs.campaignId ?? null,
      campaign_version: refs.campaignVersion ?? null,
      business_key: key,
      created_at: this.now,
    });
  }
}

/** Thrown when an account turns out to have been merged away; the whole operation is retried. */
export class ShopperMergedMeanwhile extends Error {
  constructor(readonly shopperRef: string) {
    super('the shopper was merged into another while this transaction waited for it');
    this.name = 'ShopperMergedMeanwhile';
  }
}
