/** HTTP adapters of the outbound-event subscriptions (admin only). Validated input in, one service call out. */
import { pageBody } from '../db/keyset-cursor.js';
import type { HandlerMap } from '../http/types.js';
import { actorOf } from '../http/callers.js';
import { contractHandlers, filled, type Schemas } from '../http/contract.js';
import type { EventType } from './event-types.js';
import type { AttemptRow, DeliveryRow, SubscriptionRow, SubscriptionService } from './subscription-service.js';
import type { SubscriptionState } from './subscription-store.js';
import { DEFAULT_SECRET_OVERLAP_SECONDS } from './subscription-service.js';

export function eventsHandlers(subscriptions: SubscriptionService): HandlerMap {
  return contractHandlers({
    async createSubscription(req, res) {
      const { subscription, secret } = await subscriptions.create(req.valid.body, actorOf(req));
      const created = subscriptionJson(subscription);
      if (created.state !== 'active') throw new Error(`a subscription was created ${created.state}`);
      // The only time the secret is shown; GET never returns it.
      res.status(201).json({ ...created, state: created.state, secret });
    },

    async listSubscriptions(_req, res) {
      res.json({ items: (await subscriptions.list()).map(subscriptionJson) });
    },

    async getSubscription(req, res) {
      res.json(subscriptionJson(await subscriptions.get(req.valid.path.subscriptionId)));
    },

    async deleteSubscription(req, res) {
      await subscriptions.delete(req.valid.path.subscriptionId, actorOf(req));
      res.status(204).end();
    },

    async rotateSubscriptionSecret(req, res) {
      const { path, body, headers } = req.valid;
      const rotated = await subscriptions.rotateSecret(
        path.subscriptionId,
        body?.overlapSeconds ?? DEFAULT_SECRET_OVERLAP_SECONDS,
        actorOf(req),
        headers['idempotency-key'],
      );
      res.status(201).json({
        secretId: rotated.secretId,
        secret: rotated.secret,
        previousSecretsExpireAt: rotated.previousSecretsExpireAt.toISOString(),
      });
    },

    async listSubscriptionDeliveries(req, res) {
      const { path, query } = req.valid;
      const page = await subscriptions.deliveries(path.subscriptionId, {
        limit: filled(query.limit, 'limit'),
        ...(query.state === undefined ? {} : { state: query.state }),
        ...(query.cursor === undefined ? {} : { cursor: query.cursor }),
      });
      res.json(pageBody(page, deliveryJson));
    },

    async listSubscriptionAttempts(req, res) {
      const { path, query } = req.valid;
      const page = await subscriptions.attempts(path.subscriptionId, {
        limit: filled(query.limit, 'limit'),
        ...(query.cursor === undefined ? {} : { cursor: query.cursor }),
      });
      res.json(pageBody(page, attemptJson));
    },

    async replaySubscriptionDelivery(req, res) {
      const { subscriptionId, eventId } = req.valid.path;
      res.json(deliveryJson(await subscriptions.replay(subscriptionId, eventId, actorOf(req))));
    },
  });
}

function subscriptionJson(row: SubscriptionRow): Schemas['Subscription'] {
  return {
    id: row.id,
    url: row.url,
    eventTypes: row.event_types as readonly EventType[],
    ...(row.description === null ? {} : { description: row.description }),
    state: liveState(row.state),
    ...(row.disabled_reason === null ? {} : { disabledReason: row.disabled_reason }),
    ...breakerJson(row),
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

/** The circuit breaker, when it has counted a timeout (see src/events/dispatcher.ts). */
function breakerJson(row: SubscriptionRow): { breaker?: Schemas['SubscriptionBreaker'] } {
  const openUntil = row.breaker_open_until;
  if (openUntil === null && row.breaker_timeouts === 0) return {};
  const state = openUntil === null ? 'closed' : openUntil.getTime() > Date.now() ? 'open' : 'half_open';
  return {
    breaker: {
      state,
      consecutiveTimeouts: row.breaker_timeouts,
      ...(openUntil === null ? {} : { openUntil: openUntil.toISOString() }),
    },
  };
}

/** The service answers live subscriptions only: its store leaves deleted ones out. */
function liveState(state: SubscriptionState): Schemas['Subscription']['state'] {
  if (state === 'deleted') throw new Error('a deleted subscription reached the API');
  return state;
}

function deliveryJson(row: DeliveryRow): Schemas['Delivery'] {
  return {
    eventId: row.event_id,
    type: row.type,
    shopperReference: row.shopper_ref,
    state: row.state,
    attempts: row.attempts,
    ...(row.state === 'pending' ? { nextAttemptAt: row.next_attempt_at.toISOString() } : {}),
    ...(row.last_status === null ? {} : { lastStatus: row.last_status }),
    ...(row.last_error === null ? {} : { lastError: row.last_error }),
    ...(row.delivered_at === null ? {} : { deliveredAt: row.delivered_at.toISOString() }),
    createdAt: row.created_at.toISOString(),
  };
}

function attemptJson(row: AttemptRow): Schemas['DeliveryAttempt'] {
  return {
    id: row.id,
    eventId: row.event_id,
    attempt: row.attempt,
    outcome: row.outcome,
    ...(row.status_code === null ? {} : { statusCode: row.status_code }),
    latencyMs: row.latency_ms,
    ...(row.error === null ? {} : { error: row.error }),
    attemptedAt: row.attempted_at.toISOString(),
  };
}
