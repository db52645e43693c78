/**
 * SQL of event subscriptions, their secrets' lifetimes and their deliveries (the dispatcher's claim
 * and record statements stay in dispatcher.ts). Functions take a knex handle or the caller's
 * transaction: the subscription service opens it.
 */
import type { Knex } from 'knex';
import { afterCursor, pageOf, type Page } from '../db/keyset-cursor.js';
import type { EventType } from './event-types.js';

type Db = Knex | Knex.Transaction;

export type SubscriptionState = 'active' | 'disabled' | 'deleted';
export type DeliveryState = 'pending' | 'delivered' | 'dead';

export interface SubscriptionRow {
  id: string;
  url: string;
  event_types: EventType[];
  description: string | null;
  state: SubscriptionState;
  disabled_reason: 'gone' | null;
  /** The circuit breaker (src/events/dispatcher.ts): consecutive timeouts, and open until when. */
  breaker_timeouts: number;
  breaker_open_until: Date | null;
  created_by: string;
  created_at: Date;
  updated_at: Date;
}

export interface DeliveryRow {
  subscription_id: string;
  event_id: string;
  type: EventType;
  shopper_ref: string;
  state: DeliveryState;
  attempts: number;
  next_attempt_at: Date;
  last_status: number | null;
  last_error: string | null;
  delivered_at: Date | null;
  created_at: Date;
}

export interface AttemptRow {
  id: string;
  subscription_id: string;
  event_id: string;
  attempt: number;
  outcome: 'delivered' | 'failed' | 'gone' | 'refused' | 'timeout';
  status_code: number | null;
  latency_ms: number;
  error: string | null;
  attempted_at: Date;
}

/** The live (not deleted) subscription for a URL hash. */
export async function liveByUrl(db: Db, urlHash: Buffer): Promise<SubscriptionRow | undefined> {
  return (await db('event_subscriptions').where({ url_sha256: urlHash }).whereNot({ state: 'deleted' }).first()) as
    SubscriptionRow | undefined;
}

export async function insertSubscription(
  trx: Knex.Transaction,
  row: Omit<SubscriptionRow, 'event_types'> & { url_sha256: Buffer; event_types: string },
): Promise<SubscriptionRow> {
  const [inserted] = (await trx('event_subscriptions').insert(row).returning('*')) as SubscriptionRow[];
  return inserted as SubscriptionRow;
}

export async function listLive(db: Db): Promise<SubscriptionRow[]> {
  return (await db('event_subscriptions')
    .whereNot({ state: 'deleted' })
    .orderBy([
      { column: 'created_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])) as SubscriptionRow[];
}

/** The subscription unless deleted; `lock` takes its row lock (the caller's transaction). */
export async function findLive(db: Db, id: string, lock = false): Promise<SubscriptionRow | undefined> {
  const query = db('event_subscriptions').where({ id }).whereNot({ state: 'deleted' });
  if (lock) query.forUpdate();
  return (await query.first()) as SubscriptionRow | undefined;
}

/** The subscription in any state, locked. */
export async function lockSubscription(trx: Knex.Transaction, id: string): Promise<SubscriptionRow | undefined> {
  return (await trx('event_subscriptions').where({ id }).forUpdate().first()) as SubscriptionRow | undefined;
}

/** Marks it deleted and erases its secrets. */
export async function deleteSubscription(trx: Knex.Transaction, id: string, now: Date): Promise<void> {
  await trx('event_subscriptions').where({ id }).update({ state: 'deleted', updated_at: now });
  await trx('event_subscription_secrets').where({ subscription_id: id }).delete();
}

/** The live secret a rotation with this idempotency key made, if any. */
export async function secretOfRotation(
  trx: Knex.Transaction,
  id: string,
  rotationKey: string,
  now: Date,
): Promise<string | undefined> {
  const made = (await trx('event_subscription_secrets')
    .where({ subscription_id: id, rotation_key: rotationKey })
    .where((q) => q.whereNull('expires_at').orWhere('expires_at', '>', now))
    .first('id')) as { id: string } | undefined;
  return made?.id;
}

/** Erases the secrets whose overlap has ended; the others stop signing at `until` at the latest. */
export async function endSecretsAt(trx: Knex.Transaction, id: string, now: Date, until: Date): Promise<void> {
  await trx('event_subscription_secrets').where({ subscription_id: id }).where('expires_at', '<=', now).delete();
  await trx('event_subscription_secrets')
    .where({ subscription_id: id })
    .where((q) => q.whereNull('expires_at').orWhere('expires_at', '>', until))
    .update({ expires_at: until });
}

export async function listDeliveries(
  db: Db,
  id: string,
  filter: { readonly state?: DeliveryState; readonly limit: number; readonly cursor?: string },
): Promise<Page<DeliveryRow>> {
  const query = db('outbound_deliveries as d')
    .join('outbound_events as e', 'e.id', 'd.event_id')
    .where('d.subscription_id', id)
    .orderBy([
      { column: 'd.created_at', order: 'desc' },
      { column: 'd.event_id', order: 'desc' },
    ])
    .limit(filter.limit + 1)
    .select(
      'd.subscription_id',
      'd.event_id',
      'e.type',
      'd.shopper_ref',
      'd.state',
      'd.attempts',
      'd.next_attempt_at',
      'd.last_status',
      'd.last_error',
      'd.delivered_at',
      'd.created_at',
    );
  if (filter.state !== undefined) query.where('d.state', filter.state);
  afterCursor(query, filter.cursor, 'd.created_at', 'd.event_id');
  return pageOf((await query) as DeliveryRow[], filter.limit, (r) => [r.created_at, r.event_id]);
}

export async function listAttempts(
  db: Db,
  id: string,
  filter: { readonly limit: number; readonly cursor?: string },
): Promise<Page<AttemptRow>> {
  const query = db('outbound_delivery_attempts')
    .where({ subscription_id: id })
    .orderBy([
      { column: 'attempted_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])
    .limit(filter.limit + 1);
  afterCursor(query, filter.cursor, 'attempted_at', 'id');
  return pageOf((await query) as AttemptRow[], filter.limit, (r) => [r.attempted_at, r.id]);
}

export async function lockDelivery(
  trx: Knex.Transaction,
  id: string,
  eventId: string,
): Promise<DeliveryRow | undefined> {
  return (await trx('outbound_deliveries').where({ subscription_id: id, event_id: eventId }).forUpdate().first()) as
    DeliveryRow | undefined;
}

/** Queues a delivery again with a fresh attempt budget, due now on the database's clock. */
export async function requeueDelivery(trx: Knex.Transaction, id: string, eventId: string, now: Date): Promise<void> {
  await trx('outbound_deliveries').where({ subscription_id: id, event_id: eventId }).update({
    state: 'pending',
    attempts: 0,
    // Due on the database's clock, which the dispatcher reads (not this instance's).
    next_attempt_at: trx.fn.now(),
    leased_until: null,
    lease_token: null,
    updated_at: now,
  });
}

export async function findDelivery(db: Db, id: string, eventId: string): Promise<DeliveryRow> {
  return (await db('outbound_deliveries as d')
    .join('outbound_events as e', 'e.id', 'd.event_id')
    .where({ 'd.subscription_id': id, 'd.event_id': eventId })
    .first('d.*', 'e.type')) as DeliveryRow;
}

/**
 * Deliveries waiting, and when the oldest was queued. Deliveries of a deleted or disabled
 * subscription wait for nobody: not counted.
 */
export async function deliveryBacklog(db: Db): Promise<{ pending: number; oldest: Date | null }> {
  const row = (await db('outbound_deliveries as d')
    .join('event_subscriptions as s', 's.id', 'd.subscription_id')
    .where({ 'd.state': 'pending', 's.state': 'active' })
    .first(db.raw('count(*) as n'), db.raw('min(d.created_at) as oldest'))) as
    { n: number | string; oldest: Date | null } | undefined;
  return { pending: Number(row?.n ?? 0), oldest: row?.oldest ?? null };
}

/** Active subscriptions by circuit-breaker state, on the database's clock. */
export async function breakerStates(db: Db): Promise<{ closed: number; open: number; half_open: number }> {
  const row = (await db('event_subscriptions')
    .where({ state: 'active' })
    .first(
      db.raw('count(*) filter (where breaker_open_until is null) as closed'),
      db.raw('count(*) filter (where breaker_open_until > now()) as open'),
      db.raw('count(*) filter (where breaker_open_until <= now()) as half_open'),
    )) as { closed: number | string; open: number | string; half_open: number | string } | undefined;
  return { closed: Number(row?.closed ?? 0), open: Number(row?.open ?? 0), half_open: Number(row?.half_open ?? 0) };
}
