/** HTTP adapters of the outbound-event subscriptions (admin only). Validated input in, one service call out. */
import { pageBody } from '../db/keyset-cursor.js';
import type { HandlerMap } from '../http/types.js';
import { validInput } from '../http/types.js';
import { actorOf } from '../http/callers.js';
import type { EventType } from './event-types.js';
import type {
  AttemptRow,
  DeliveryRow,
  DeliveryState,
  NewSubscription,
  SubscriptionRow,
  SubscriptionService,
} from './subscription-service.js';
import { DEFAULT_SECRET_OVERLAP_SECONDS } from './subscription-service.js';

export function eventsHandlers(subscriptions: SubscriptionService): HandlerMap {
  const idOf = (req: Parameters<HandlerMap[string]>[0]): string => validInput(req).path['subscriptionId'] as string;
  return {
    async createSubscription(req, res) {
      const { subscription, secret } = await subscriptions.create(
        validInput(req).body as NewSubscription,
        actorOf(req),
      );
      // The only time the secret is shown; GET never returns it.
      res.status(201).json({ ...subscriptionJson(subscription), secret });
    },

    async listSubscriptions(_req, res) {
      res.json({ items: (await subscriptions.list()).map(subscriptionJson) });
    },

    async getSubscription(req, res) {
      res.json(subscriptionJson(await subscriptions.get(idOf(req))));
    },

    async deleteSubscription(req, res) {
      await subscriptions.delete(idOf(req), actorOf(req));
      res.status(204).end();
    },

    async rotateSubscriptionSecret(req, res) {
      const { body, headers } = validInput(req);
      const overlap = (body as { overlapSeconds?: number } | undefined)?.overlapSeconds;
      const rotated = await subscriptions.rotateSecret(
        idOf(req),
        overlap ?? DEFAULT_SECRET_OVERLAP_SECONDS,
        actorOf(req),
        headers['idempotency-key'] as string | undefined,
      );
      res.status(201).json({
        secretId: rotated.secretId,
        secret: rotated.secret,
        previousSecretsExpireAt: rotated.previousSecretsExpireAt.toISOString(),
      });
    },

    async listSubscriptionDeliveries(req, res) {
      const { query } = validInput(req);
      const page = await subscriptions.deliveries(idOf(req), {
        limit: query['limit'] as number,
        ...(query['state'] === undefined ? {} : { state: query['state'] as DeliveryState }),
        ...(query['cursor'] === undefined ? {} : { cursor: query['cursor'] as string }),
      });
      res.json(pageBody(page, deliveryJson));
    },

    async listSubscriptionAttempts(req, res) {
      const { query } = validInput(req);
      const page = await subscriptions.attempts(idOf(req), {
        limit: query['limit'] as number,
        ...(query['cursor'] === undefined ? {} : { cursor: query['cursor'] as string }),
      });
      res.json(pageBody(page, attemptJson));
    },

    async replaySubscriptionDelivery(req, res) {
      const eventId = validInput(req).path['eventId'] as string;
      res.json(deliveryJson(await subscriptions.replay(idOf(req), eventId, actorOf(req))));
    },
  };
}

function subscriptionJson(row: SubscriptionRow): Record<string, unknown> {
  return {
    id: row.id,
    url: row.url,
    eventTypes: row.event_types as readonly EventType[],
    ...(row.description === null ? {} : { description: row.description }),
    state: row.state,
    ...(row.disabled_reason === null ? {} : { disabledReason: row.disabled_reason }),
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

function deliveryJson(row: DeliveryRow): Record<string, unknown> {
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

function attemptJson(row: AttemptRow): Record<string, unknown> {
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
