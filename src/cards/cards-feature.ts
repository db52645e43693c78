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
import { sharedBudgetAtRate } from '../ratelimit/rate-limiter.js';
import { TokenBuckets } from '../ratelimit/token-bucket.js';
import { cardsHandlers } from './cards-handlers.js';
import { VaultService } from './vault-service.js';

export interface CardsFeatureDeps {
  readonly knex: Knex;
  readonly keyRing: KeyRing;
  readonly config: Config['vault'];
  readonly clock: Clock;
}

export interface CardsFeature {
  readonly vault: VaultService;
  readonly handlers: HandlerMap;
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
  return { vault, handlers };
}
