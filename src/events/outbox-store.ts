/**
 * The transactional outbox's store: statement fragments another store appends to its own statement,
 * and one statement of its own. Events are written by the transaction that makes the change they
 * report (a ledger flush, an enrolment, a merge, a first sighting), so an event exists if and only if
 * its change committed: a rolled-back change emits nothing, a committed one is never lost.
 *
 * One statement per write, however many events: the events, and a delivery row for every active
 * subscription that wants the type. The event row is always written, even with no subscriber: it is
 * the record that replay and audits read, and it costs one small insert in a transaction that
 * already writes several rows. The fan-out is a join on the (small) subscriptions table, so a
 * webhook with no subscriber pays no delivery rows. A subscription receives the events committed
 * after it was created; it is not sent the history. A delivery is due at its event's time, but never
 * later than the database's `now()`: the dispatcher reads the database clock, and a writer whose
 * clock runs fast must not hold its events back.
 */
import type { Knex } from 'knex';
import type { WritePart } from '../db/write-together.js';
import type { OutboundEvent } from './event-types.js';

type Db = Knex | Knex.Transaction;

/**
 * The outbox as common table expressions, to append to another data-modifying `WITH` (the vault's
 * one-statement first sighting). Names start with `outbox_`.
 */
export function outboxCtes(events: readonly OutboundEvent[]): { sql: string; bindings: Knex.RawBinding[] } {
  if (events.length === 0) throw new Error('outboxCtes needs at least one event');
  return {
    sql: `outbox_values (id, type, shopper_ref, body, created_at) as (
            values ${events.map(() => '(?::text, ?::text, ?::text, ?::text, ?::timestamptz)').join(', ')}),
          outbox_events as (
            insert into outbound_events (id, type, shopper_ref, body, created_at)
            select id, type, shopper_ref, body, created_at from outbox_values
            on conflict (id) do nothing
            returning id, type, shopper_ref, seq, created_at),
          outbox_deliveries as (
            insert into outbound_deliveries
              (subscription_id, event_id, shopper_ref, event_seq, state, attempts, next_attempt_at, created_at, updated_at)
            select s.id, e.id, e.shopper_ref, e.seq, 'pending', 0, least(e.created_at, now()), e.created_at, e.created_at
            from outbox_events e
            join event_subscriptions s on s.state = 'active' and jsonb_exists(s.event_types, e.type))`,
    bindings: events.flatMap((e) => [e.id, e.type, e.shopperRef, e.body, e.createdAt]),
  };
}

/** The events as a part of a statement of several writes (src/db/write-together.ts); undefined for none. */
export function outboxPart(events: readonly OutboundEvent[]): WritePart | undefined {
  if (events.length === 0) return undefined;
  const { sql, bindings } = outboxCtes(events);
  return { ctes: sql, bindings };
}

/** Writes events (and their deliveries) on the caller's transaction, in one statement. */
export async function writeEvents(db: Db, events: readonly OutboundEvent[]): Promise<void> {
  if (events.length === 0) return;
  const { sql, bindings } = outboxCtes(events);
  await db.raw(`with ${sql} select 1`, bindings);
}
