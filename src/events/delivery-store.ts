/**
 * SQL of the outbox dispatcher: claiming due deliveries under a lease, checking the lease before a
 * send, and recording an attempt. Leases and due times are on the database's clock ({@link dbTime}).
 */
import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { newId } from '../ids/prefixed-id.js';

export type DeliveryOutcome = 'delivered' | 'failed' | 'gone' | 'refused' | 'timeout';

export interface ClaimedDelivery {
  readonly subscriptionId: string;
  readonly eventId: string;
  readonly attempts: number;
  readonly url: string;
  readonly body: string;
  readonly leaseToken: string;
}

/** The database's clock moved by `offsetMs`. */
export function dbTime(knex: Knex, offsetMs: number): Knex.Raw {
  return knex.raw(`now() + ?::double precision * interval '1 millisecond'`, [offsetMs]);
}

/**
 * Leases the due heads of their queues, in one short transaction (committed before any delivery
 * starts): only the head of a (subscription, shopper) queue is ever due; no more than
 * `maxInFlightPerSubscription` of a subscription are leased at once (one while its breaker is
 * half-open), counting every instance's live leases; none while its breaker is open. The
 * subscription rows are locked (`for no key update ... skip locked`, which the outbox's inserts do
 * not wait for) so that two instances claiming at once cannot both fill the same subscription's cap.
 * `candidates` is how many rows were looked at: as many as `limit` means more may be due.
 */
export async function claimDue(
  knex: Knex,
  claim: {
    readonly dbNow: Knex.Raw;
    readonly leasedUntil: Knex.Raw;
    readonly now: Date;
    readonly batchSize: number;
    readonly maxInFlightPerSubscription: number;
  },
): Promise<{ claimed: ClaimedDelivery[]; candidates: number }> {
  return knex.transaction(async (trx) => {
    const { rows } = (await trx.raw(
      `select d.subscription_id, d.event_id, d.attempts, s.url, e.body, f.in_flight,
         (s.breaker_open_until is not null) as half_open
       from outbound_deliveries d
       join event_subscriptions s on s.id = d.subscription_id and s.state = 'active'
         and (s.breaker_open_until is null or s.breaker_open_until <= ?)
       join outbound_events e on e.id = d.event_id
       cross join lateral (
         select count(*)::int as in_flight from outbound_deliveries l
         where l.subscription_id = d.subscription_id and l.state = 'pending' and l.leased_until > ?) f
       where d.state = 'pending' and d.next_attempt_at <= ?
         and (d.leased_until is null or d.leased_until <= ?)
         and f.in_flight < case when s.breaker_open_until is null then ? else 1 end
         and not exists (
           select 1 from outbound_deliveries p
           where p.subscription_id = d.subscription_id and p.shopper_ref = d.shopper_ref
             and p.state = 'pending' and p.event_seq < d.event_seq)
       order by d.next_attempt_at, d.event_seq
       limit ?
       for update of d skip locked
       for no key update of s skip locked`,
      [claim.dbNow, claim.dbNow, claim.dbNow, claim.dbNow, claim.maxInFlightPerSubscription, claim.batchSize],
    )) as {
      rows: {
        subscription_id: string;
        event_id: string;
        attempts: number;
        url: string;
        body: string;
        in_flight: number;
        half_open: boolean;
      }[];
    };
    // The cap counted the leases before this claim: take no more than the room each subscription has.
    const room = new Map<string, number>();
    const chosen = rows.filter((r) => {
      const left =
        room.get(r.subscription_id) ?? (r.half_open ? 1 : claim.maxInFlightPerSubscription) - Number(r.in_flight);
      room.set(r.subscription_id, left - 1);
      return left > 0;
    });
    if (chosen.length === 0) return { claimed: [], candidates: rows.length };
    const leaseToken = randomUUID();
    await trx.raw(
      `update outbound_deliveries d set leased_until = ?, lease_token = ?, updated_at = ?
       from unnest(?::text[], ?::text[]) as c (subscription_id, event_id)
       where d.subscription_id = c.subscription_id and d.event_id = c.event_id`,
      [claim.leasedUntil, leaseToken, claim.now, chosen.map((r) => r.subscription_id), chosen.map((r) => r.event_id)],
    );
    return {
      claimed: chosen.map((r) => ({
        subscriptionId: r.subscription_id,
        eventId: r.event_id,
        attempts: r.attempts,
        url: r.url,
        body: r.body,
        leaseToken,
      })),
      candidates: rows.length,
    };
  });
}

/** Whether the claim's lease is still held, and runs past `leasedPast`. */
export async function holdsLease(knex: Knex, claimed: ClaimedDelivery, leasedPast: Knex.Raw): Promise<boolean> {
  const row = (await knex('outbound_deliveries')
    .where({
      subscription_id: claimed.subscriptionId,
      event_id: claimed.eventId,
      lease_token: claimed.leaseToken,
      state: 'pending',
    })
    .where('leased_until', '>', leasedPast)
    .first('event_id')) as { event_id: string } | undefined;
  return row !== undefined;
}

export interface AttemptRecord {
  readonly attempt: number;
  readonly outcome: DeliveryOutcome;
  readonly status: number | undefined;
  readonly error: string | undefined;
  readonly latencyMs: number;
  readonly dead: boolean;
  readonly now: Date;
  /** When a failed, not dead, delivery is due again (database clock). */
  readonly nextAttemptAt: () => Knex.Raw;
  /** The circuit breaker: consecutive timeouts that open it, and until when it then stays open. */
  readonly breaker: {
    readonly threshold: number;
    readonly openUntil: () => Knex.Raw;
    /** The database clock now (an open time at or before it has passed: half-open). */
    readonly now: () => Knex.Raw;
  };
}

/** What recording an attempt did to the subscription's breaker. */
export type BreakerChange = 'opened' | 'closed' | undefined;

/**
 * Records an attempt and its consequence in one transaction, if this claim still holds the lease
 * (a lease that ran out and was taken again is not ours): delivered, gone (the subscription is
 * disabled; the delivery stays pending, not counted), or failed (retried later, or dead).
 */
export async function recordAttempt(
  knex: Knex,
  claimed: ClaimedDelivery,
  record: AttemptRecord,
): Promise<BreakerChange> {
  const { attempt, outcome, status, error, now } = record;
  return knex.transaction(async (trx) => {
    const key = { subscription_id: claimed.subscriptionId, event_id: claimed.eventId };
    const owned = (await trx('outbound_deliveries')
      .where({ ...key, lease_token: claimed.leaseToken, state: 'pending' })
      .forUpdate()
      .first('attempts')) as { attempts: number } | undefined;
    if (owned === undefined) return undefined;
    await trx('outbound_delivery_attempts').insert({
      id: newId('att'),
      ...key,
      attempt,
      outcome,
      status_code: status ?? null,
      latency_ms: record.latencyMs,
      error: error ?? null,
      attempted_at: now,
    });
    const common = { leased_until: null, lease_token: null, last_status: status ?? null, updated_at: now };
    if (outcome === 'delivered') {
      await trx('outbound_deliveries')
        .where(key)
        .update({ ...common, state: 'delivered', attempts: attempt, last_error: null, delivered_at: now });
    } else if (outcome === 'gone') {
      // The receiver says the endpoint is gone for good: stop sending anything to it. The delivery
      // stays pending (not counted as an attempt), so re-enabling would resume where it stopped.
      await trx('outbound_deliveries')
        .where(key)
        .update({ ...common, last_error: error ?? null });
      await trx('event_subscriptions')
        .where({ id: claimed.subscriptionId, state: 'active' })
        .update({ state: 'disabled', disabled_reason: 'gone', updated_at: now });
    } else {
      await trx('outbound_deliveries')
        .where(key)
        .update({
          ...common,
          state: record.dead ? 'dead' : 'pending',
          attempts: attempt,
          last_error: error ?? null,
          next_attempt_at: record.nextAttemptAt(),
        });
    }
    return updateBreaker(trx, claimed.subscriptionId, outcome, status, record.breaker);
  });
}

/**
 * The subscription's circuit breaker after an attempt: a timeout counts (and opens it at the
 * threshold, or again after a failed half-open probe); any answer from the receiver (a status)
 * closes it; other failures (refused target, network error, ours) leave it as it is.
 */
async function updateBreaker(
  trx: Knex.Transaction,
  subscriptionId: string,
  outcome: DeliveryOutcome,
  status: number | undefined,
  breaker: AttemptRecord['breaker'],
): Promise<BreakerChange> {
  if (outcome === 'timeout') {
    // Opened: the count reaches the threshold, or the half-open probe (open time passed) timed out.
    const { rows } = (await trx.raw(
      `update event_subscriptions s
       set breaker_timeouts = s.breaker_timeouts + 1,
           breaker_open_until = case when s.breaker_timeouts + 1 >= ? then ? else s.breaker_open_until end
       from (select breaker_open_until as was from event_subscriptions where id = ?) o
       where s.id = ?
       returning (s.breaker_timeouts = ? or (o.was is not null and o.was <= ?)) as opened`,
      [breaker.threshold, breaker.openUntil(), subscriptionId, subscriptionId, breaker.threshold, breaker.now()],
    )) as { rows: { opened: boolean }[] };
    return rows[0]?.opened === true ? 'opened' : undefined;
  }
  if (status === undefined) return undefined;
  const closed = await trx('event_subscriptions')
    .where({ id: subscriptionId })
    .andWhere((q) => q.where('breaker_timeouts', '>', 0).orWhereNotNull('breaker_open_until'))
    .update({ breaker_timeouts: 0, breaker_open_until: null });
  return closed > 0 ? 'closed' : undefined;
}
