/**
 * Composition root of returns at a till (issue 22). Built after payments (a return adds a fact to the
 * original payment through the payment service, whose listeners are loyalty's), with the loyalty
 * feature's store credit and the card vault; `buildService` calls it.
 */
import type { Knex } from 'knex';
import type { VaultService } from '../cards/vault-service.js';
import type { Clock } from '../clock/clock.js';
import type { Config } from '../config/config.js';
import type { HandlerMap } from '../http/types.js';
import type { PaymentService } from '../payments/payment-service.js';
import { returnsHandlers } from './returns-handlers.js';
import { ReturnsService } from './returns-service.js';
import type { StoreCreditService } from './store-credit.js';

export interface ReturnsFeatureDeps {
  readonly knex: Knex;
  readonly vault: VaultService;
  readonly payments: PaymentService;
  readonly storeCredit: StoreCreditService;
  readonly config: Config['returns'];
  readonly clock: Clock;
}

export interface ReturnsFeature {
  readonly returns: ReturnsService;
  readonly handlers: HandlerMap;
}

export function createReturnsFeature(deps: ReturnsFeatureDeps): ReturnsFeature {
  const returns = new ReturnsService(
    deps.knex,
    { vault: deps.vault, payments: deps.payments, storeCredit: deps.storeCredit },
    { windowDays: deps.config.windowDays, perMinute: deps.config.perMinute, now: deps.clock },
  );
  return { returns, handlers: returnsHandlers(returns, deps.config.windowDays) };
}
