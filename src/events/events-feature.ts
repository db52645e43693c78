/**
 * Composition root of outbound events: the subscription service, the in-process outbox dispatcher
 * (built always, started when EVENTS_DISPATCHER_ENABLED), the admin handlers, and the backlog and breaker gauges.
 */
import type { Knex } from 'knex';
import type { Clock } from '../clock/clock.js';
import type { Config } from '../config/config.js';
import type { HandlerMap } from '../http/types.js';
import type { KeyRing } from '../keys/key-ring.js';
import type { Logger } from '../logging/logger.js';
import { METRICS } from '../metrics/catalogue.js';
import type { Metrics } from '../metrics/metrics.js';
import { repeatEvery, type Schedule } from '../scheduling/repeat.js';
import { EventDispatcher } from './dispatcher.js';
import { eventsHandlers } from './events-handlers.js';
import { moveLegacySecrets } from './subscription-secrets.js';
import { SubscriptionService } from './subscription-service.js';
import { breakerStates, deliveryBacklog } from './subscription-store.js';
import { systemResolver, type HostResolver, type TargetPolicy } from './target-policy.js';

export interface EventsFeatureDeps {
  readonly knex: Knex;
  readonly keyRing: KeyRing;
  readonly config: Config['events'];
  /** How target host names are resolved for the SSRF check (tests map fake hosts). */
  readonly resolver?: HostResolver;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export interface EventsFeature {
  readonly subscriptions: SubscriptionService;
  readonly dispatcher: EventDispatcher;
  readonly handlers: HandlerMap;
  /** The backlog gauges and the dispatcher. */
  readonly schedules: readonly Schedule[];
}

export function createEventsFeature(deps: EventsFeatureDeps): EventsFeature {
  const { config, logger, metrics } = deps;
  const targets: TargetPolicy = {
    resolver: deps.resolver ?? systemResolver,
    allowHttp: config.allowHttpTargets,
    allowPrivate: config.allowPrivateTargets,
  };
  if (targets.allowPrivate) {
    logger.warn(
      'EVENTS_ALLOW_PRIVATE_TARGETS is on: webhooks may reach loopback and private addresses (development only).',
    );
  }
  const subscriptions = new SubscriptionService({
    knex: deps.knex,
    keyRing: deps.keyRing,
    targets,
    resolveTimeoutMs: config.timeoutMs,
    now: deps.clock,
  });
  const deliveries = metrics.counter(METRICS.outboundDeliveries);
  const deadLetters = metrics.counter(METRICS.outboundDeadLetters);
  const durations = metrics.histogram(METRICS.outboundDeliveryDuration);
  const breakerOpened = metrics.counter(METRICS.outboundBreakerOpened);
  const dispatcher = new EventDispatcher({
    knex: deps.knex,
    keyRing: deps.keyRing,
    targets,
    options: config,
    now: deps.clock,
    onAttempt: (outcome, dead, latencyMs) => {
      deliveries({ outcome });
      durations.observe({ outcome }, latencyMs / 1000);
      if (dead) deadLetters({});
    },
    onBreaker: (change, subscriptionId) => {
      if (change === 'opened') breakerOpened({});
      logger.warn({ subscriptionId, breaker: change }, 'outbound delivery circuit breaker changed');
    },
    onError: (error) => logger.error({ err: error }, 'outbound event dispatch round failed'),
  });
  // Not started here: the composition root starts it once the vault is open (a sealed vault has no
  // subscription-secret key to sign with yet), when EVENTS_DISPATCHER_ENABLED.
  return {
    subscriptions,
    dispatcher,
    handlers: eventsHandlers(subscriptions),
    // Stopped on close even when not started here (a test may have started it).
    schedules: [watchBacklog(deps, metrics, logger), { stop: () => dispatcher.stop() }],
  };
}

/**
 * Start-up work under the master key (the keys feature runs it when the vault opens): secrets sealed
 * under pan-encryption before they had a key of their own (issue 17), moved once.
 */
export async function moveLegacySubscriptionSecrets(
  deps: Pick<EventsFeatureDeps, 'knex' | 'keyRing' | 'logger'>,
): Promise<void> {
  const legacySecrets = await moveLegacySecrets(deps.knex, deps.keyRing);
  if (legacySecrets.moved + legacySecrets.failed > 0) {
    deps.logger.info(legacySecrets, 'subscription secrets moved from pan-encryption to the subscription-secret key');
  }
}

/**
 * Outbox backlog gauges, read from the database every 15 s (not at scrape time: a scrape must not
 * query): deliveries waiting, and the age of the oldest (the lag a subscriber sees).
 */
function watchBacklog(deps: Pick<EventsFeatureDeps, 'knex' | 'clock'>, metrics: Metrics, logger: Logger): Schedule {
  let pending = 0;
  let lagSeconds = 0;
  let breakers = { closed: 0, open: 0, half_open: 0 };
  metrics.gauge(METRICS.outboundDeliveriesPending, () => [{ labels: {}, value: pending }]);
  metrics.gauge(METRICS.outboundSubscriptionsByBreaker, () =>
    Object.entries(breakers).map(([state, value]) => ({ labels: { state }, value })),
  );
  metrics.gauge(METRICS.outboundDeliveryLag, () => [{ labels: {}, value: lagSeconds }]);
  return repeatEvery(15_000, 0, () =>
    Promise.all([deliveryBacklog(deps.knex), breakerStates(deps.knex)])
      .then(([backlog, states]) => {
        breakers = states;
        pending = backlog.pending;
        lagSeconds =
          backlog.oldest === null ? 0 : Math.max(0, (deps.clock().getTime() - backlog.oldest.getTime()) / 1000);
      })
      .catch((error: unknown) => logger.warn({ err: error }, 'reading the outbox backlog failed')),
  );
}
