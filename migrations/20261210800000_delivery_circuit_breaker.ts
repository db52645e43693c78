/**
 * Issue 24, outbound delivery isolated per subscriber: a circuit breaker per subscription, in the
 * database so every instance shares it (src/events/dispatcher.ts).
 *
 * - `breaker_timeouts`: consecutive delivery attempts of the subscription that timed out (an answer
 *   of any status resets it).
 * - `breaker_open_until`: set when the count reaches the threshold; until then (database clock) no
 *   delivery of the subscription is claimed (open); afterwards one at a time is (half-open, the
 *   probe) until an answer closes it (both columns reset) or a timeout opens it again.
 *
 * Neither column is text-like, so the card-data guard needs no re-attaching.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`alter table event_subscriptions
    add column breaker_timeouts integer not null default 0,
    add column breaker_open_until timestamptz`);
  await knex.raw(`alter table event_subscriptions
    add constraint event_subscriptions_breaker_timeouts_check check (breaker_timeouts >= 0)`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`alter table event_subscriptions
    drop constraint event_subscriptions_breaker_timeouts_check,
    drop column breaker_open_until,
    drop column breaker_timeouts`);
}
