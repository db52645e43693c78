/**
 * Composition root of the card vault: the vault service (tokenise, lookup, detokenise over the card
 * store) and its HTTP handlers with their limits: a token bucket per client, and the first-sighting
 * budget shared by every instance (on the database). Other features get the vault from here, through
 * the composition root (loyalty enrols by card, payments resolve cards, webhooks ask for known PANs).
 */
import type { Knex } from 'knex';
import type { Clock } from '../clock/clock.js';
import type { Config } from '../config/config.js';
import type { HandlerMap } from '../http/types.js';
import type { KeyRing } from '../keys/key-ring.js';
import type { Logger } from '../logging/logger.js';
import { sharedBudgetAtRate } from '../ratelimit/rate-limiter.js';
import { TokenBuckets } from '../ratelimit/token-bucket.js';
import { NO_SCHEDULE, repeatEvery, type Schedule } from '../scheduling/repeat.js';
import { cardsHandlers } from './cards-handlers.js';
import { CardRetention, type LastPaymentUse } from './retention-service.js';
import { VaultService } from './vault-service.js';

export interface CardsFeatureDeps {
  readonly knex: Knex;
  readonly keyRing: KeyRing;
  readonly config: Config['vault'];
  readonly clock: Clock;
  /** When a card was last used by a payment (the payments feature's answer, for retention). */
  readonly lastPaymentUse: LastPaymentUse;
  /** For the retention schedule's reports; none: the schedule is off (a CLI runs retention itself). */
  readonly logger?: Logger;
}

export interface CardsFeature {
  readonly vault: VaultService;
  /** Card-data retention (PCI DSS 3.2.1): plan, apply, the day's scheduled run. */
  readonly retention: CardRetention;
  readonly handlers: HandlerMap;
  readonly schedules: readonly Schedule[];
}

export function createCardsFeature(deps: CardsFeatureDeps): CardsFeature {
  const { knex, config } = deps;
  const vault = new VaultService(knex, deps.keyRing, {
    detokenise: { enabled: config.detokeniseEnabled, perMinute: config.detokenisePerMinute },
    lookupConcurrency: config.lookupConcurrency,
    createConcurrency: config.createConcurrency,
    now: deps.clock,
  });
  const handlers = cardsHandlers(
    vault,
    new TokenBuckets({ ratePerSecond: config.cardRatePerSecond, burst: config.cardRateBurst }),
    sharedBudgetAtRate(knex, 'first-sighting', config.firstSightingsPerMinute, config.firstSightingsBurst),
  );
  const retention = new CardRetention(knex, {
    policy: { days: config.retention.days, keepFingerprints: config.retention.keepFingerprints },
    lastPaymentUse: deps.lastPaymentUse,
    now: deps.clock,
  });
  const schedule =
    deps.logger === undefined ? NO_SCHEDULE : scheduleRetention(retention, config.retention.intervalMs, deps.logger);
  return { vault, retention, handlers, schedules: [schedule] };
}

/**
 * Each instance tries the day's run every interval (the first after a random part of it); the first
 * try of a UTC day on any instance runs it, the others find it made (retention-service.ts). Off
 * without a retention period or with a 0 interval. A failure is logged; the next try runs it.
 */
function scheduleRetention(retention: CardRetention, intervalMs: number, logger: Logger): Schedule {
  if (!retention.configured || intervalMs === 0) return NO_SCHEDULE;
  return repeatEvery(intervalMs, Math.floor(Math.random() * intervalMs), () =>
    retention
      .runScheduled()
      .then((evidence) => {
        if (evidence.replacesUnverifiedRun !== undefined) {
          logger.error(
            { retention: evidence },
            'card-data retention: the day’s run was recorded without its audit entry (forged?); purged anyway',
          );
        } else if (evidence.ran) logger.info({ retention: evidence }, 'card-data retention run made');
      })
      .catch((error: unknown) => logger.error({ err: error }, 'card-data retention run failed')),
  );
}
