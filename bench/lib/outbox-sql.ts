/**
 * The outbox's CTEs (src/events/outbox-store.ts) as pgbench SQL: the event, and a delivery row per active
 * subscriber wanting its type. For the baselines that run what the service runs.
 */

/** About the size of a real `points.*` event body (no quotes to escape). */
const EVENT_BODY = JSON.stringify({
  id: 'evt_points_pending_aaaaaaaaaaaaaaaaaaaaaaaaaaaa', // no digit run: the card-data guard refuses 20+ digits
  type: 'points.pending',
  timestamp: '2026-11-30T00:00:00.000Z',
  data: {
    shopperReference: 'shp_aaaaaaaaaaaaaaaaaaaaaaaaaa',
    points: 123,
    paymentId: 'pay_aaaaaaaaaaaaaaaaaaaaaaaaaa',
    ruleVersion: 1,
    balance: { available: 0, pending: 123, lifetimeEarned: 0 },
  },
});

/** `id` and `shopper` are SQL expressions (pgbench variables allowed); `type` a literal event type. */
export const outboxSql = (
  id: string,
  type: string,
  shopper: string,
): string => `outbox_values (id, type, shopper_ref, body, created_at) AS (
    VALUES (${id}, '${type}', (${shopper})::text, '${EVENT_BODY}', now())),
  outbox_events AS (INSERT INTO outbound_events (id, type, shopper_ref, body, created_at)
    SELECT id, type, shopper_ref, body, created_at FROM outbox_values ON CONFLICT (id) DO NOTHING
    RETURNING id, type, shopper_ref, seq, created_at),
  outbox_deliveries AS (INSERT INTO outbound_deliveries
    (subscription_id, event_id, shopper_ref, event_seq, state, attempts, next_attempt_at, created_at, updated_at)
    SELECT s.id, e.id, e.shopper_ref, e.seq, 'pending', 0, least(e.created_at, now()), e.created_at, e.created_at
    FROM outbox_events e JOIN event_subscriptions s ON s.state = 'active' AND jsonb_exists(s.event_types, e.type))`;
