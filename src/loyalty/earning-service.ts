/**
 * Earning: the payment transition listener that books points. It runs inside the webhook batch's
 * transaction, the payments' rows locked, with at most one transition per payment.
 *
 * Exactly once, whatever the deliveries: the lot of a payment records the targets it was last booked
 * to (pending, earn, reversal); a transition books only the difference to the new targets, under the
 * payment's row lock. A redelivery has no transition; another order of the same facts reaches the
 * same targets; each booking is numbered per payment, and that number is the entry's unique business
 * key.
 */
import type { Knex } from 'knex';
import type { PaymentTransitionEvent } from '../payments/payment-service.js';
import { bookedTotal, campaignBookings, rebook, type CampaignBooking } from './campaign-earning.js';
import { campaignsInForce, type CampaignVersion } from './campaign-rules.js';
import type { CampaignService } from './campaign-service.js';
import { allCampaignVersions, campaignVersionsFromJson } from './campaign-store.js';
import { CampaignUsage } from './campaign-usage.js';
import { earningTargets, NO_EARNING, type EarningTargets } from './earning.js';
import { LedgerBook, type EntryKind, type EntryRefs, type LotRow } from './ledger-book.js';
import { lotShoppers, lotsOfPayments, survivorsAndProgrammeJson } from './ledger-store.js';
import {
  expiryOf,
  programmeVersionsFromJson,
  versionInForce,
  type ProgrammeRules,
  type ProgrammeVersion,
} from './programme.js';
import type { ProgrammeService } from './programme-service.js';
import { programmeVersions } from './programme-store.js';

type ShopperEvent = PaymentTransitionEvent & { shopperRef: string };

/**
 * The shoppers' tiers at the time asked, for campaigns with a tier condition (read in the batch's
 * transaction, the accounts locked). Tiers are another feature's: until one is wired, nobody has one.
 */
export type ShopperTierSource = (
  trx: Knex.Transaction,
  shopperRefs: readonly string[],
  at: Date,
) => Promise<ReadonlyMap<string, string | null>>;

const NO_TIERS: ShopperTierSource = () => Promise.resolve(new Map());

export class EarningService {
  constructor(
    private readonly programme: ProgrammeService,
    private readonly campaigns: CampaignService,
    private readonly now: () => Date,
    private readonly tiers: ShopperTierSource = NO_TIERS,
  ) {}

  /**
   * Set-based, in a fixed number of statements whatever the batch: the lots of payments that existed
   * before it, then merges, programme and campaigns together, then the accounts (locked), then the
   * lots again under those locks when there were any; for payments judged now by a campaign that
   * needs state, its counters and activations in one more and its budgets locked in another (the
   * lot keeps the judgement, so later transitions read nothing more); the bookings are written in one.
   */
  readonly onPaymentTransitions = async (
    trx: Knex.Transaction,
    transitions: readonly PaymentTransitionEvent[],
  ): Promise<void> => {
    const events = transitions.filter((e): e is ShopperEvent => e.shopperRef !== null);
    if (events.length === 0) return;
    const now = this.now();
    // A lot is guarded by its shopper's account lock, so lots are read (again) once the accounts are
    // locked; a lot belongs to the account it was moved to.
    // A payment created in this transaction has no lot yet: only the others are looked up.
    const lotShopper = await lotShoppers(
      trx,
      events.filter((e) => !e.paymentCreated).map((e) => e.paymentId),
    );
    // Events without a lot need their shopper's survivor (if merged) and, for a new lot, the programme.
    const lotless = events.filter((e) => !lotShopper.has(e.paymentId)).map((e) => e.shopperRef);
    const context = lotless.length === 0 ? undefined : await survivorsAndProgrammeJson(trx, lotless);
    const survivors = context?.survivors ?? new Map<string, string>();
    const shopperOf = (e: ShopperEvent): string =>
      lotShopper.get(e.paymentId) ?? survivors.get(e.shopperRef) ?? e.shopperRef;
    const books = await LedgerBook.openMany(trx, events.map(shopperOf), now);
    const lots = await lotsOfPayments(trx, [...lotShopper.keys()]);
    let versions = context === undefined ? undefined : programmeVersionsFromJson(context.programme);
    let campaigns = context === undefined ? undefined : campaignVersionsFromJson(context.campaigns);
    // Payments judged now (no lot yet, authorisation known): the campaign state they are judged on.
    const fresh = events.filter((e) => !lots.has(e.paymentId) && e.after.authorisedAt !== null);
    if (fresh.length > 0) campaigns ??= await allCampaignVersions(trx);
    const pinnedOf = (e: ShopperEvent): CampaignVersion[] =>
      campaignsInForce(campaigns ?? [], e.after.authorisedAt as Date);
    const judged = fresh.map((e) => ({ event: e, shopperRef: shopperOf(e), versions: pinnedOf(e) }));
    const usage = await CampaignUsage.open(trx, judged, now);
    const tierOf = await this.tiersOf(trx, judged, now);
    for (const event of events) {
      const book = books.get(shopperOf(event)) as LedgerBook;
      const locked = lots.get(event.paymentId);
      let lot = locked === undefined ? undefined : book.adoptLot(locked);
      if (lot !== undefined && lot.shopper_ref !== book.shopperRef) {
        throw new Error('a lot moved to another shopper between its read and its lock; the delivery is retried');
      }
      let rules: ProgrammeRules;
      let bookings: CampaignBooking[];
      if (lot === undefined) {
        const authorisedAt = event.after.authorisedAt;
        if (authorisedAt === null) continue;
        versions ??= await programmeVersions(trx);
        const programme: ProgrammeVersion = versionInForce(versions, authorisedAt);
        rules = programme.rules;
        // The campaign versions in force at authorisation are judged now, once; the lot keeps the result.
        const pinned = pinnedOf(event);
        const place = { ...event, shopperTier: tierOf.get(book.shopperRef) ?? null };
        bookings = campaignBookings(pinned, event.after, place, rules, usage.stateOf(book.shopperRef));
        const base = earningTargets(event.after, event.channel, rules);
        // A purchase counted or a budget spent is booked on a lot even when nothing is earned yet.
        const counted = usage.record(book.shopperRef, bookings, pinned, authorisedAt);
        if (sameTargets(base, NO_EARNING) && nothing(bookings) && !counted) continue;
        lot = book.newLot(event.paymentId, programme.version, pinned.length === 0 ? null : []);
      } else {
        rules = await this.programme.rules(trx, lot.rule_version);
        bookings = rebook(lot.campaigns ?? [], event.after, event.channel, rules);
      }
      await bookTargets(book, lot, earningTargets(event.after, event.channel, rules), bookings, rules);
    }
    await usage.flush(trx, now);
    await LedgerBook.flushAll(trx, [...books.values()]);
  };

  /** The tiers of the shoppers whose new payments a campaign with a tier condition judges (else none). */
  private async tiersOf(
    trx: Knex.Transaction,
    judged: readonly { shopperRef: string; versions: readonly CampaignVersion[] }[],
    at: Date,
  ): Promise<ReadonlyMap<string, string | null>> {
    const needed = judged.filter((j) => j.versions.some((v) => v.definition.conditions.tiers !== undefined));
    return needed.length === 0
      ? new Map()
      : this.tiers(
          trx,
          needed.map((j) => j.shopperRef),
          at,
        );
  }
}

/**
 * Books the difference between a lot's recorded targets and the new ones: the base programme's first
 * (entries without a campaign), then each campaign's bonus (entries naming the campaign version). The
 * lot's targets are the totals; its `campaigns` keeps each campaign's part and judgement.
 */
async function bookTargets(
  book: LedgerBook,
  lot: LotRow,
  base: EarningTargets,
  bookings: readonly CampaignBooking[],
  rules: ProgrammeRules,
): Promise<void> {
  const refs: EntryRefs = { paymentId: lot.payment_id, ruleVersion: lot.rule_version };
  const previous = lot.campaigns ?? [];
  const bonus = bookedTotal(previous);
  const previousBase: EarningTargets = {
    pending: lot.pending - bonus.pending,
    earn: lot.earn_target - bonus.earn,
    reversal: lot.reversal_target - bonus.reversal,
  };
  book.touch(lot);
  await bookPart(book, lot, previousBase, base, refs, rules);
  for (const b of bookings) {
    const before = previous.find((p) => p.campaignId === b.campaignId && p.version === b.version) ?? NO_EARNING;
    await bookPart(book, lot, before, b, { ...refs, campaignId: b.campaignId, campaignVersion: b.version }, rules);
  }
  if (lot.campaigns !== null) lot.campaigns = [...bookings];
}

/** Books one part's (the base's, or one campaign's) change from `before` to `after`. */
async function bookPart(
  book: LedgerBook,
  lot: LotRow,
  before: EarningTargets,
  after: EarningTargets,
  refs: EntryRefs,
  rules: ProgrammeRules,
): Promise<void> {
  const next = (): string => `payment:${lot.payment_id}:${++lot.effects}`;
  if (after.pending !== before.pending) book.changePending(lot, after.pending - before.pending, next(), refs);

  const earnDelta = after.earn - before.earn;
  lot.earn_target += earnDelta;
  if (earnDelta !== 0) book.account.lifetime_earned = Math.max(0, book.account.lifetime_earned + earnDelta);
  if (earnDelta > 0) give(book, lot, earnDelta, 'earn', next(), refs, rules);
  if (earnDelta < 0) await takeBack(book, lot, -earnDelta, 'earn_voided', next(), refs, rules);

  const reversalDelta = after.reversal - before.reversal;
  lot.reversal_target += reversalDelta;
  if (reversalDelta > 0) await takeBack(book, lot, reversalDelta, 'reversal', next(), refs, rules);
  if (reversalDelta < 0) give(book, lot, -reversalDelta, 'reversal_cancelled', next(), refs, rules);
}

function nothing(bookings: readonly EarningTargets[]): boolean {
  return bookings.every((b) => sameTargets(b, NO_EARNING));
}

/** Credits a payment's lot; points that had been written off are un-written-off first. */
function give(
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

async function takeBack(
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

function sameTargets(a: EarningTargets, b: EarningTargets): boolean {
  return a.pending === b.pending && a.earn === b.earn && a.reversal === b.reversal;
}
