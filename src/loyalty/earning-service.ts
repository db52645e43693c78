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
import type { PaymentFigures } from '../payments/payment-state.js';
import { bookedTotal, campaignBookings, rebook, type CampaignBooking } from './campaign-earning.js';
import { campaignsInForce, type CampaignVersion } from './campaign-rules.js';
import { allCampaignVersions, campaignVersionsFromJson } from './campaign-store.js';
import { CampaignUsage } from './campaign-usage.js';
import { earningTargets, NO_EARNING, type EarningTargets } from './earning.js';
import { LedgerBook, type EntryKind, type EntryRefs, type LotRow } from './ledger-book.js';
import { claimEarningKeys } from './adjustment-store.js';
import { capReserved } from './hold-store.js';
import { lotShoppers, lotsOfPayments, survivorsAndProgrammeJson } from './ledger-store.js';
import { capPeriodStart, controlledTargets, debtAllowance, holdExpiresAt } from './programme-controls.js';
import {
  expiryOf,
  pointsFor,
  programmeVersionsFromJson,
  versionInForce,
  type ProgrammeRules,
  type ProgrammeVersion,
} from './programme.js';
import type { ProgrammeService } from './programme-service.js';
import { programmeVersions } from './programme-store.js';
import type { TierService, TouchedPayment } from './tier-service.js';

type ShopperEvent = PaymentTransitionEvent & { shopperRef: string };

/** A payment's first booking, judged once, waiting for its earning key. */
interface FreshLot {
  readonly event: ShopperEvent;
  readonly book: LedgerBook;
  readonly programme: ProgrammeVersion;
  readonly pinned: CampaignVersion[];
  readonly rules: ProgrammeRules;
  /** The campaigns' judgement at authorisation (kept on the lot; later events only rebook it). */
  readonly bookings: CampaignBooking[];
  /** The shopper's tier at the payment's authorisation, pinned on the lot. */
  readonly tier: LotRow['tier'];
}

export class EarningService {
  constructor(
    private readonly programme: ProgrammeService,
    private readonly now: () => Date,
    private readonly tiers: TierService,
  ) {}

  /**
   * Set-based, in a fixed number of statements whatever the batch: the lots of payments that existed
   * before it, then merges, programme and campaigns together, then the accounts (locked), then the
   * lots again under those locks when there were any (and the campaign versions pinned on them that
   * are not cached yet, in one more); the bookings are written in one.
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
    const judging = events.filter((e) => !lots.has(e.paymentId) && e.after.authorisedAt !== null);
    if (judging.length > 0) campaigns ??= await allCampaignVersions(trx);
    const pinnedOf = (e: ShopperEvent): CampaignVersion[] =>
      campaignsInForce(campaigns ?? [], e.after.authorisedAt as Date);
    const usage = await CampaignUsage.open(
      trx,
      judging.map((e) => ({ shopperRef: shopperOf(e), versions: pinnedOf(e) })),
      now,
    );
    const fresh: FreshLot[] = [];
    const tierAt = this.tiers.pinner(trx, [...books.keys()]); // a new lot's tier at its authorisation
    const touched: TouchedPayment[] = [];
    // The earning cap used per shopper and period, read once under the account lock, then counted here.
    const capUsed = new Map<string, number>();
    for (const event of events) {
      const book = books.get(shopperOf(event)) as LedgerBook;
      const locked = lots.get(event.paymentId);
      const lot = locked === undefined ? undefined : book.adoptLot(locked);
      if (lot !== undefined && lot.shopper_ref !== book.shopperRef) {
        throw new Error('a lot moved to another shopper between its read and its lock; the delivery is retried');
      }
      if (lot === undefined) {
        const authorisedAt = event.after.authorisedAt;
        if (authorisedAt === null) continue;
        versions ??= await programmeVersions(trx);
        const programme: ProgrammeVersion = versionInForce(versions, authorisedAt);
        const rules = programme.rules;
        // The campaign versions in force at authorisation are judged now, once, with the tier held
        // then; the lot keeps the result.
        const pinned = pinnedOf(event);
        const tier = await tierAt(book.shopperRef, rules, authorisedAt);
        const place = { ...event, shopperTier: tier?.name ?? null };
        const bookings = campaignBookings(pinned, event.after, place, rules, usage.stateOf(book.shopperRef));
        const base = earningTargets(event.after, event.channel, rules, tier?.multiplier);
        // A purchase counted or a budget spent is booked on a lot even when nothing is earned yet.
        const counted = usage.record(book.shopperRef, bookings, pinned, authorisedAt);
        if (sameTargets(base, NO_EARNING) && nothing(bookings) && !counted) continue;
        // Booked once the payment holds its earning key (below): a granted claim may hold it.
        fresh.push({ event, book, programme, pinned, rules, bookings, tier });
        continue;
      }
      const rules = await this.programme.rules(trx, lot.rule_version);
      const bookings = rebook(lot.campaigns ?? [], event.after, event.channel, rules);
      await bookEvent(book, lot, event, bookings, rules);
      touched.push({ lot, after: event.after, autoCapture: rules.autoCaptureChannels.includes(event.channel ?? '') });
    }
    // A payment's first lot claims its earning key (provider + payment id) in one statement for the
    // batch; one whose key a missing-points claim holds earns nothing (claims.ts). Its campaign
    // judgement was counted all the same (a budget or cap then under-spends by its grant, never over).
    const won = await claimEarningKeys(
      trx,
      fresh.map((f) => ({ provider: f.event.provider, paymentRef: f.event.externalId, paymentId: f.event.paymentId })),
      now,
    );
    for (const { event, book, programme, pinned, rules, bookings, tier } of fresh) {
      if (!won.has(event.paymentId)) continue;
      const controls = await lotControls(trx, book, event.after, event.channel, rules, capUsed, tier);
      const lot = book.newLot(event.paymentId, programme.version, pinned.length === 0 ? null : [], tier, controls);
      await bookEvent(book, lot, event, bookings, rules);
      touched.push({ lot, after: event.after, autoCapture: rules.autoCaptureChannels.includes(event.channel ?? '') });
    }
    await usage.flush(trx, now);
    await LedgerBook.flushAll(trx, [...books.values()]);
    // Qualifying spend and the shoppers' tiers, once the lots are written (their figures join them).
    await this.tiers.afterBookings(trx, touched, now);
  };
}

/**
 * Books one event on its payment's lot: the base programme's targets (with the tier pinned at
 * authorisation, within the lot's earning-cap reservation) and each campaign's, a lapsed hold
 * keeping nothing pending.
 */
async function bookEvent(
  book: LedgerBook,
  lot: LotRow,
  event: ShopperEvent,
  judged: CampaignBooking[],
  rules: ProgrammeRules,
): Promise<void> {
  const bookings = releasedBookings(judged, lot);
  const base = controlledTargets(earningTargets(event.after, event.channel, rules, lot.tier?.multiplier), lot);
  const cancelled = event.after.state === 'cancelled' || event.after.state === 'authorisation_failed';
  await bookTargets(book, lot, base, bookings, rules, cancelled);
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
  cancelled: boolean,
): Promise<void> {
  const refs: EntryRefs = { paymentId: lot.payment_id as string, ruleVersion: lot.rule_version };
  const previous = lot.campaigns ?? [];
  const bonus = bookedTotal(previous);
  const previousBase: EarningTargets = {
    pending: lot.pending - bonus.pending,
    earn: lot.earn_target - bonus.earn,
    reversal: lot.reversal_target - bonus.reversal,
  };
  book.touch(lot);
  await bookPart(book, lot, previousBase, base, refs, rules, cancelled);
  for (const b of bookings) {
    const before = previous.find((p) => p.campaignId === b.campaignId && p.version === b.version) ?? NO_EARNING;
    const campaignRefs = { ...refs, campaignId: b.campaignId, campaignVersion: b.version };
    await bookPart(book, lot, before, b, campaignRefs, rules, cancelled);
  }
  if (lot.campaigns !== null) lot.campaigns = [...bookings];
}

/**
 * Books one part's (the base's, or one campaign's) change from `before` to `after`. A hold that ends
 * says why: as much as the capture earned is `hold_captured`, the rest `hold_cancelled` when the
 * authorisation was cancelled or failed, otherwise `hold_released` (a capture of less than authorised).
 */
async function bookPart(
  book: LedgerBook,
  lot: LotRow,
  before: EarningTargets,
  after: EarningTargets,
  refs: EntryRefs,
  rules: ProgrammeRules,
  cancelled: boolean,
): Promise<void> {
  const next = (): string => `payment:${lot.payment_id}:${++lot.effects}`;
  const pendingDelta = after.pending - before.pending;
  const earnDelta = after.earn - before.earn;
  if (pendingDelta > 0) book.changePending(lot, pendingDelta, next(), refs);
  if (pendingDelta < 0) {
    const captured = Math.min(-pendingDelta, Math.max(0, earnDelta));
    if (captured > 0) book.changePending(lot, -captured, next(), refs, 'hold_captured');
    const rest = -pendingDelta - captured;
    if (rest > 0) book.changePending(lot, -rest, next(), refs, cancelled ? 'hold_cancelled' : 'hold_released');
  }

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
  const taken = await book.take(lot, points, kind, key, refs, debtAllowance(rules));
  lot.recovered += taken.fromLots + taken.intoDebt;
  lot.written_off += taken.writtenOff;
}

/** Once a payment's hold was released by the release job, its campaign bonuses hold nothing either. */
function releasedBookings(bookings: CampaignBooking[], lot: LotRow): CampaignBooking[] {
  return lot.hold_expired_at === null ? bookings : bookings.map((b) => ({ ...b, pending: 0 }));
}

/**
 * A new lot's hold lapse time and, under an earning cap, its reservation of its authorisation's
 * period: the points of the authorised amount as far as the period has some left (`capUsed` counts
 * this batch's reservations on top of the stored ones, read once under the account lock).
 */
async function lotControls(
  trx: Knex.Transaction,
  book: LedgerBook,
  payment: PaymentFigures,
  channel: string | null,
  rules: ProgrammeRules,
  capUsed: Map<string, number>,
  tier: LotRow['tier'],
): Promise<Pick<LotRow, 'hold_expires_at' | 'cap_period' | 'cap_reserved'>> {
  const authorisedAt = payment.authorisedAt as Date;
  const hold_expires_at = holdExpiresAt(authorisedAt, rules);
  const cap = rules.earningCap;
  if (cap === null || payment.currency === null) return { hold_expires_at, cap_period: null, cap_reserved: null };
  const period = capPeriodStart(authorisedAt, cap.period);
  const key = `${book.shopperRef} ${period.toISOString()}`;
  const used = capUsed.get(key) ?? (await capReserved(trx, book.shopperRef, period));
  const reserved = Math.min(
    pointsFor(payment.authorisedAmount, payment.currency, channel, rules, tier?.multiplier),
    Math.max(0, cap.points - used),
  );
  capUsed.set(key, used + reserved);
  return { hold_expires_at, cap_period: period, cap_reserved: reserved };
}

function sameTargets(a: EarningTargets, b: EarningTargets): boolean {
  return a.pending === b.pending && a.earn === b.earn && a.reversal === b.reversal;
}
