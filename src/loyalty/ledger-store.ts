/**
 * SQL of the points ledger: accounts, lots, entries and redemptions. Functions take the caller's
 * transaction (a use case opens it); {@link LedgerBook} decides what is written, this writes it.
 *
 * Lock order, everywhere: payments (in provider, external id order), then accounts (in shopper
 * order). Lots take no row locks of their own: they are written under their shopper's account lock.
 */
import type { Knex } from 'knex';
import { afterCursor, pageOf, type Page } from '../db/keyset-cursor.js';
import { updateRowsPart } from '../db/update-rows.js';
import { partOf, writeInFewStatements } from '../db/write-together.js';
import type { OutboundEvent } from '../events/event-types.js';
import { outboxPart } from '../events/outbox-store.js';
import type { CampaignBooking } from './campaign-earning.js';
import type { PinnedTier } from './tiers.js';

type Db = Knex | Knex.Transaction;

/** What happened to pending points: held, captured, released (smaller capture), expired, cancelled. */
export type HoldKind = 'hold' | 'hold_captured' | 'hold_released' | 'hold_expired' | 'hold_cancelled';

/** `earn_pending` and `pending_voided`: rows written before the hold kinds (never written now). */
export type EntryKind =
  | 'earn_pending'
  | 'pending_voided'
  | HoldKind
  | 'earn'
  | 'earn_voided'
  | 'reversal'
  | 'reversal_cancelled'
  | 'written_off'
  | 'write_off_cancelled'
  | 'debt_settled'
  | 'redemption'
  | 'redemption_reversed'
  | 'expiry'
  | 'merge_in'
  | 'merge_out'
  | 'goodwill_credit'
  | 'goodwill_debit'
  | 'missing_points_credit';

export interface AccountRow {
  shopper_ref: string;
  available: number;
  pending: number;
  debt: number;
  lifetime_earned: number;
  enrolled_at: Date | null;
  email_ciphertext: Buffer | null;
  email_key_version: number | null;
  external_member_id: string | null;
  merged_into: string | null;
  created_at: Date;
  updated_at: Date;
}

export interface LotRow {
  id: string;
  shopper_ref: string;
  /** The payment that earned it; null for an adjustment's lot (goodwill, a granted claim). */
  payment_id: string | null;
  adjustment_id: string | null;
  rule_version: number;
  pending: number;
  earn_target: number;
  reversal_target: number;
  credited: number;
  recovered: number;
  written_off: number;
  remaining: number;
  expired: number;
  effects: number;
  available_at: Date | null;
  expires_at: Date | null;
  created_at: Date;
  updated_at: Date;
  /** The campaign versions in force at authorisation and what each was last booked to (null: none). */
  campaigns: CampaignBooking[] | null;
  /** The shopper's tier at authorisation and its multiplier (null: the programme had no tiers). */
  tier?: PinnedTier | null;
  /** Holds (programme-controls.ts): when it lapses, and when the release job released it. */
  hold_expires_at: Date | null;
  hold_expired_at: Date | null;
  /** The earning cap's period this payment counts in, and what it reserved of it (null: no cap). */
  cap_period: Date | null;
  cap_reserved: number | null;
}

/** What an entry refers to, besides its lot. */
export interface EntryRefs {
  readonly paymentId?: string;
  readonly redemptionId?: string;
  readonly ruleVersion?: number;
  /** The campaign whose bonus this is (absent: the base programme). */
  readonly campaignId?: string;
  readonly campaignVersion?: number;
}

export interface EntryRow {
  id: string;
  shopper_ref: string;
  kind: EntryKind;
  points: number;
  available_delta: number;
  pending_delta: number;
  lot_delta: number;
  debt_delta: number;
  lot_id: string | null;
  payment_id: string | null;
  redemption_id: string | null;
  rule_version: number | null;
  campaign_id: string | null;
  campaign_version: number | null;
  business_key: string;
  created_at: Date;
}

export interface RedemptionRow {
  id: string;
  shopper_ref: string;
  points: number;
  reference: string;
  description: string | null;
  state: 'completed' | 'reversed';
}

const LOT_COLUMNS = {
  shopper_ref: 'text',
  pending: 'bigint',
  earn_target: 'bigint',
  reversal_target: 'bigint',
  credited: 'bigint',
  recovered: 'bigint',
  written_off: 'bigint',
  remaining: 'bigint',
  expired: 'bigint',
  effects: 'integer',
  available_at: 'timestamptz',
  expires_at: 'timestamptz',
  updated_at: 'timestamptz',
  campaigns: 'jsonb',
  hold_expired_at: 'timestamptz',
} as const;

const ACCOUNT_COLUMNS = {
  available: 'bigint',
  pending: 'bigint',
  debt: 'bigint',
  lifetime_earned: 'bigint',
  updated_at: 'timestamptz',
} as const;

/**
 * Creates each shopper's account on first use and locks it, in the order given (shopper order), in
 * one statement. The upsert returns the row as the lock found it: a merge that committed meanwhile shows.
 */
export async function lockAccounts(
  trx: Knex.Transaction,
  sortedRefs: readonly string[],
  now: Date,
): Promise<AccountRow[]> {
  const result = (await trx.raw(
    `insert into loyalty_accounts (shopper_ref, created_at, updated_at)
     values ${sortedRefs.map(() => '(?, ?, ?)').join(', ')}
     on conflict (shopper_ref) do update set updated_at = loyalty_accounts.updated_at
     returning *`,
    sortedRefs.flatMap((ref) => [ref, now, now]),
  )) as { rows: AccountRow[] };
  return result.rows;
}

/** The account, locked; undefined when another transaction holds it (or there is none). */
export async function tryLockAccount(trx: Knex.Transaction, shopperRef: string): Promise<AccountRow | undefined> {
  return (await trx('loyalty_accounts').where({ shopper_ref: shopperRef }).forUpdate().skipLocked().first()) as
    AccountRow | undefined;
}

/** A shopper's lots with points left, soonest-expiring first. */
export async function spendableLotRows(trx: Knex.Transaction, shopperRef: string): Promise<LotRow[]> {
  return (
    (await trx('loyalty_lots')
      .where({ shopper_ref: shopperRef })
      .where('remaining', '>', 0)
      .orderByRaw('expires_at asc nulls last, id asc')) as LotRow[]
  ).map(lotFromStore);
}

/**
 * Writes what the books of one transaction did in one statement: new lots, entries, changed lots,
 * accounts and the outbox events. The parts touch disjoint rows (a lot is new or changed, never both).
 */
export async function writeLedger(
  trx: Knex.Transaction,
  write: {
    readonly inserted: readonly LotRow[];
    readonly entries: readonly EntryRow[];
    readonly updated: readonly LotRow[];
    readonly accounts: readonly AccountRow[];
    readonly events: readonly OutboundEvent[];
  },
): Promise<void> {
  await writeInFewStatements(trx, [
    write.inserted.length === 0 ? undefined : partOf(trx('loyalty_lots').insert(write.inserted.map(lotToStore))),
    write.entries.length === 0 ? undefined : partOf(trx('loyalty_entries').insert(write.entries)),
    updateRowsPart('loyalty_lots', 'id', LOT_COLUMNS, write.updated.map(lotToStore)),
    updateRowsPart('loyalty_accounts', 'shopper_ref', ACCOUNT_COLUMNS, write.accounts),
    outboxPart(write.events),
  ]);
}

/** A lot as its row is written: the JSON columns as text (a bound array would be a SQL array). */
function lotToStore(
  lot: LotRow,
): Omit<LotRow, 'campaigns' | 'tier'> & { campaigns: string | null; tier: string | null } {
  const text = (v: unknown): string | null => (v === null || typeof v === 'string' ? v : JSON.stringify(v));
  return { ...lot, campaigns: text(lot.campaigns), tier: text(lot.tier ?? null) };
}

/** A lot as read: the JSON columns parsed, whatever the driver gave for them; bigints as numbers. */
function lotFromStore(row: LotRow): LotRow {
  const parsed = <T>(v: unknown): T => (typeof v === 'string' ? JSON.parse(v) : v) as T;
  const lot = row.cap_reserved === null ? row : { ...row, cap_reserved: Number(row.cap_reserved) };
  return { ...lot, campaigns: parsed(row.campaigns), tier: parsed(row.tier ?? null) };
}

export function lotsFromStore(rows: readonly LotRow[]): LotRow[] {
  return rows.map(lotFromStore);
}

/** The shopper each of these payments' lots belongs to (payments without a lot are absent). */
export async function lotShoppers(trx: Knex.Transaction, paymentIds: readonly string[]): Promise<Map<string, string>> {
  if (paymentIds.length === 0) return new Map();
  const rows = (await trx('loyalty_lots').whereIn('payment_id', paymentIds).select('payment_id', 'shopper_ref')) as {
    payment_id: string;
    shopper_ref: string;
  }[];
  return new Map(rows.map((l) => [l.payment_id, l.shopper_ref]));
}

/** The lots of these payments, by payment id (read again once their accounts are locked). */
export async function lotsOfPayments(trx: Db, paymentIds: readonly string[]): Promise<Map<string, LotRow>> {
  if (paymentIds.length === 0) return new Map();
  const rows = ((await trx('loyalty_lots').whereIn('payment_id', paymentIds)) as LotRow[]).map(lotFromStore);
  return new Map(rows.map((l) => [l.payment_id as string, l]));
}

export async function lotsByIds(trx: Knex.Transaction, ids: readonly string[]): Promise<Map<string, LotRow>> {
  return new Map(((await trx('loyalty_lots').whereIn('id', ids)) as LotRow[]).map((l) => [l.id, lotFromStore(l)]));
}

export async function lotById(trx: Knex.Transaction, id: string): Promise<LotRow> {
  return lotFromStore((await trx('loyalty_lots').where({ id }).first()) as LotRow);
}

/**
 * The survivors of merged shoppers among `shopperRefs` (merged → survivor), and every programme and
 * campaign version as `json_agg` gives them, in one read (one round trip instead of three in the
 * webhook transaction). None is locked: a merge that commits meanwhile is seen on the account lock.
 */
export async function survivorsAndProgrammeJson(
  trx: Knex.Transaction,
  shopperRefs: readonly string[],
): Promise<{ survivors: Map<string, string>; programme: unknown; campaigns: unknown }> {
  const refs = [...new Set(shopperRefs)];
  const result = (await trx.raw(
    `select
       (select coalesce(json_agg(json_build_array(merged_ref, survivor_ref)), '[]'::json)
          from shopper_merges where merged_ref in (${refs.map(() => '?').join(', ')})) as merges,
       (select json_agg(p order by p.version) from loyalty_programme_versions p) as programme,
       (select json_agg(c order by c.campaign_id, c.version) from loyalty_campaign_versions c) as campaigns`,
    refs,
  )) as { rows: { merges: [string, string][] | string; programme: unknown; campaigns: unknown }[] };
  const [row] = result.rows;
  if (row === undefined) throw new Error('the merges-and-programme read returned no row');
  const merges = (typeof row.merges === 'string' ? JSON.parse(row.merges) : row.merges) as [string, string][];
  return { survivors: new Map(merges), programme: row.programme, campaigns: row.campaigns };
}

export async function insertRedemption(
  trx: Knex.Transaction,
  row: RedemptionRow & { created_by: string; created_at: Date },
): Promise<void> {
  await trx('loyalty_redemptions').insert(row);
}

export async function findRedemption(db: Db, id: string, lock = false): Promise<RedemptionRow | undefined> {
  const query = db('loyalty_redemptions').where({ id });
  if (lock) query.forUpdate();
  return (await query.first()) as RedemptionRow | undefined;
}

export async function markRedemptionReversed(trx: Knex.Transaction, id: string, now: Date, by: string): Promise<void> {
  await trx('loyalty_redemptions').where({ id }).update({ state: 'reversed', reversed_at: now, reversed_by: by });
}

/** Up to `limit` shoppers with lots past expiry and points left, except those given. */
export async function shoppersWithDueLots(
  db: Db,
  now: Date,
  except: readonly string[],
  limit: number,
): Promise<string[]> {
  const rows = (await db('loyalty_lots')
    .distinct('shopper_ref')
    .where('remaining', '>', 0)
    .where('expires_at', '<=', now)
    .whereNotIn('shopper_ref', [...except])
    .limit(limit)) as { shopper_ref: string }[];
  return rows.map((r) => r.shopper_ref);
}

/** Forgets idempotency keys past their retention; the number forgotten. */
export async function purgeExpiredIdempotencyKeys(db: Db, now: Date): Promise<number> {
  return db('idempotency_keys').where('expires_at', '<', now).delete();
}

/** An account's figures (zeros when it has none yet) and its lots with points expiring by `horizon`. */
export interface BalanceRow {
  readonly available: number;
  readonly pending: number;
  readonly lifetime_earned: number;
  readonly lots: readonly { readonly remaining: number; readonly expires_at: Date }[];
}

/** One round trip: the lots ride along as JSON so the read needs one statement and one pool checkout. */
export async function balanceRow(db: Db, shopperRef: string, horizon: Date): Promise<BalanceRow> {
  const result = (await db.raw(
    `select coalesce(a.available, 0) as available, coalesce(a.pending, 0) as pending,
            coalesce(a.lifetime_earned, 0) as lifetime_earned,
            (select coalesce(json_agg(json_build_object('remaining', l.remaining, 'expires_at', l.expires_at)), '[]')
               from loyalty_lots l
              where l.shopper_ref = ? and l.remaining > 0 and l.expires_at <= ?) as lots
       from (select 1) as one left join loyalty_accounts a on a.shopper_ref = ?`,
    [shopperRef, horizon, shopperRef],
  )) as { rows: { available: number; pending: number; lifetime_earned: number; lots: unknown }[] };
  const row = result.rows[0] as { available: number; pending: number; lifetime_earned: number; lots: unknown };
  const lots = (typeof row.lots === 'string' ? JSON.parse(row.lots) : row.lots) as {
    remaining: number;
    expires_at: string;
  }[];
  return {
    available: row.available,
    pending: row.pending,
    lifetime_earned: row.lifetime_earned,
    lots: lots.map((l) => ({ remaining: Number(l.remaining), expires_at: new Date(l.expires_at) })),
  };
}

export interface LedgerEntry {
  readonly id: string;
  readonly shopper_ref: string;
  readonly kind: EntryKind;
  readonly points: number;
  readonly available_delta: number;
  readonly pending_delta: number;
  readonly lot_id: string | null;
  readonly payment_id: string | null;
  readonly redemption_id: string | null;
  readonly rule_version: number | null;
  readonly campaign_id: string | null;
  readonly campaign_version: number | null;
  readonly created_at: Date;
}

/** The entries of these shoppers, newest first, by keyset page. */
export async function entriesOf(
  db: Db,
  shopperRefs: readonly string[],
  page: { readonly limit: number; readonly cursor?: string },
): Promise<Page<LedgerEntry>> {
  const query = db('loyalty_entries')
    .whereIn('shopper_ref', shopperRefs)
    .orderBy([
      { column: 'created_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])
    .limit(page.limit + 1)
    .select(
      'id',
      'shopper_ref',
      'kind',
      'points',
      'available_delta',
      'pending_delta',
      'lot_id',
      'payment_id',
      'redemption_id',
      'rule_version',
      'campaign_id',
      'campaign_version',
      'created_at',
    );
  afterCursor(query, page.cursor, 'created_at', 'id');
  return pageOf((await query) as LedgerEntry[], page.limit, (last) => [last.created_at, last.id]);
}
