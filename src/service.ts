/**
 * Composition root of the running service: opens the core (src/core.ts), builds every feature with
 * its factory (`src/<feature>/<feature>-feature.ts`) in dependency order, and hands their handlers to
 * the app. Nothing else constructs a feature's services.
 */
import os from 'node:os';
import type { Express } from 'express';
import { createAuthenticator, keyResolverFor, type Authenticator } from './auth/authenticator.js';
import { loadDevIssuer } from './auth/dev-issuer.js';
import { createCardsFeature } from './cards/cards-feature.js';
import type { CardRetention } from './cards/retention-service.js';
import type { VaultService } from './cards/vault-service.js';
import type { Clock } from './clock/clock.js';
import type { Config } from './config/config.js';
import { productionDowngrades } from './config/downgrades.js';
import { loadConfiguredMasterKey, openKeyedCore, type KeyedCore } from './core.js';
import type { Knex } from 'knex';
import type { Database } from './db/database.js';
import { recordedLegacyCardData } from './db/legacy-card-data.js';
import type { EventDispatcher } from './events/dispatcher.js';
import { createEventsFeature, moveLegacySubscriptionSecrets } from './events/events-feature.js';
import type { SubscriptionService } from './events/subscription-service.js';
import type { HostResolver } from './events/target-policy.js';
import type { Readiness } from './health/health-handlers.js';
import { createHealthFeature } from './health/health-feature.js';
import { createApp } from './http/app.js';
import { loadApiSpec, type ApiSpec } from './http/openapi.js';
import { authHandlers } from './http/principal-handlers.js';
import { requestDurations } from './http/request-metrics.js';
import type { KeyRing } from './keys/key-ring.js';
import { createKeysFeature } from './keys/keys-feature.js';
import type { LoadedMasterKey } from './keys/master-key-source.js';
import { storedReference } from './keys/reference-digests.js';
import type { Unsealer } from './keys/unseal.js';
import type { Logger } from './logging/logger.js';
import { createLoyaltyFeature } from './loyalty/loyalty-feature.js';
import { createReturnsFeature } from './loyalty/returns-feature.js';
import type { LoyaltyService } from './loyalty/loyalty-service.js';
import type { MemberService } from './loyalty/member-service.js';
import type { Metrics } from './metrics/metrics.js';
import { createMtlsFeature } from './mtls/mtls-feature.js';
import {
  shopperPaymentsMover,
  type PaymentService,
  type PaymentTransitionListener,
} from './payments/payment-service.js';
import { lastPaymentUseOfCards } from './payments/payment-read-store.js';
import { createPaymentsFeature } from './payments/payments-feature.js';
import { createWebhooksFeature, storedEventDecoder } from './webhooks/webhooks-feature.js';

export interface Service {
  readonly app: Express;
  readonly database: Database;
  readonly masterKey: LoadedMasterKey;
  readonly readiness: Readiness;
  readonly keyRing: KeyRing;
  readonly vault: VaultService;
  /** Card-data retention (PCI DSS 3.2.1): the CLI's plan and apply, and the day's scheduled run. */
  readonly retention: CardRetention;
  readonly payments: PaymentService;
  readonly loyalty: LoyaltyService;
  readonly members: MemberService;
  readonly subscriptions: SubscriptionService;
  /** The in-process outbox dispatcher (built even when EVENTS_DISPATCHER_ENABLED=false, but not started). */
  readonly dispatcher: EventDispatcher;
  readonly metrics: Metrics;
  readonly spec: ApiSpec;
  /** Present when MASTER_KEY_SOURCE=shares: the instance's seal state and its share submissions. */
  readonly unsealer: Unsealer | undefined;
  /** Readiness turns false so load balancers stop sending traffic; in-flight work continues. */
  startDraining(): void;
  close(): Promise<void>;
}

export interface BuildOptions {
  readonly logger: Logger;
  /** Use this database instead of opening one from config (tests). The caller closes it. */
  readonly database?: Database;
  readonly enforceResponseContract?: boolean;
  /** Extra listeners on payment transitions, after the loyalty ledger's (tests). */
  readonly paymentListeners?: readonly PaymentTransitionListener[];
  /** How webhook target host names are resolved for the SSRF check (tests map fake hosts). */
  readonly eventResolver?: HostResolver;
  /** The application clock (default: the system's); tests move time with their own. */
  readonly clock?: Clock;
}

export async function buildService(config: Config, options: BuildOptions): Promise<Service> {
  const core = await openServiceCore(config, options);
  const { logger, clock, database, keyRing, masterKey, metrics } = core;
  const { mtls, keys } = await composeKeys(core);
  const cards = createCardsFeature({
    knex: database.knex,
    keyRing,
    config: config.vault,
    clock,
    lastPaymentUse: lastPaymentUseOfCards,
    logger,
  });
  const features = await composeFeatures(core, cards.vault, options);
  // Sealed, the dispatcher waits for the unseal (it needs the subscription-secret key to sign).
  keys.whileOpen(
    () => {
      if (config.events.dispatcherEnabled) features.dispatcher.start();
    },
    () => features.dispatcher.stop(),
  );
  const spec = loadApiSpec();
  const health = createHealthFeature({ database, masterKey: masterKey.source, openApiYaml: spec.yamlText, logger });
  const app = createApp({
    spec,
    handlers: {
      ...health.handlers,
      ...authHandlers(),
      ...keys.handlers,
      ...cards.handlers,
      ...features.handlers,
      async getMetrics(_req, res) {
        res.type(metrics.contentType).send(await metrics.render());
      },
    },
    authenticator: await serviceAuthenticator(config, logger, clock),
    logger,
    beforeHandler: keys.beforeHandler,
    bodyLimitBytes: config.http.bodyLimitBytes,
    trustProxy: config.http.trustProxy,
    enforceResponseContract: options.enforceResponseContract ?? false,
    clientCertificates: mtls.clientCertificates,
    signatures: features.signatures,
    observeRequest: requestDurations(metrics),
  });
  return {
    app,
    database,
    masterKey,
    readiness: health.readiness,
    keyRing,
    vault: cards.vault,
    retention: cards.retention,
    payments: features.payments,
    loyalty: features.loyalty,
    members: features.members,
    subscriptions: features.subscriptions,
    dispatcher: features.dispatcher,
    metrics,
    spec,
    startDraining: () => health.startDraining(),
    unsealer: keys.unsealer,
    async close() {
      for (const schedule of [...keys.schedules, ...cards.schedules, ...features.schedules]) await schedule.stop();
      await keys.close();
      await core.close();
    },
  };
}

/**
 * Refuses an unsafe start, loads the master key, and opens the core on the service's database (or
 * the one a test gives) with pending migrations applied.
 */
async function openServiceCore(config: Config, options: BuildOptions): Promise<KeyedCore> {
  const { logger } = options;
  const downgrades = productionDowngrades(config);
  if (downgrades.length > 0) {
    logger.warn(
      { downgrades },
      `!!! ${downgrades.length} SECURITY DOWNGRADE(S) IN FORCE:\n${downgrades.map((d) => `  - ${d}`).join('\n')}`,
    );
  }
  if (config.masterKey.source === 'shares' && config.masterKey.shareFiles.length > 0) {
    // Cleartext shares beside a service would unseal it at every start with no custodian present and
    // no audit entry (and skip the start-up key work that runs at an unseal): split knowledge gone.
    throw new Error(
      'MASTER_KEY_SHARE_FILES is for the key CLI only: unset it for the service, which is unsealed by the custodians (keys unseal)',
    );
  }
  if (config.masterKeyPreviousSources.some((previous) => previous.source === 'shares')) {
    // The same: a previous key in shares is rebuilt from cleartext share files, for the key CLI's rotation.
    throw new Error(
      'MASTER_KEY_PREVIOUS_SOURCE=shares is for the key CLI only: instances stay on their configuration until `keys rotate --purpose master --apply` has re-wrapped every key, then restart with the new source alone',
    );
  }
  const masterKey = await loadConfiguredMasterKey(config);
  logger.info({ masterKey: masterKey.source.location }, `master key: ${masterKey.source.description}`);
  if (masterKey.generatedDevKeyFile !== undefined) {
    logger.warn(
      { file: masterKey.generatedDevKeyFile },
      '!!! DEVELOPMENT MASTER KEY GENERATED. It protects every card in this data folder. Never use it in production: set MASTER_KEY or MASTER_KEY_FILE. !!!',
    );
  }
  const core = await openKeyedCore(config, {
    database: options.database === undefined ? { role: 'service' } : { role: 'given', database: options.database },
    logger,
    clock: options.clock,
    masterKey,
  });
  if (core.migrations.length > 0) logger.info({ migrations: core.migrations }, 'database migrated');
  await warnOfLegacyCardData(core.database.knex, logger);
  return core;
}

/**
 * The keys of the running instance, and mTLS (whose start-up work needs the master key): opens the
 * vault at once, or at the unseal when the master key is in custodians' shares.
 */
async function composeKeys(core: KeyedCore) {
  const { config, database, keyRing, masterKey, clock, logger, metrics } = core;
  const knex = database.knex;
  const actor = { actor: 'system', actorType: 'system', origin: `service:${os.hostname()}:${process.pid}` } as const;
  const mtls = createMtlsFeature({
    knex,
    masterKey: masterKey.source,
    tls: config.tls,
    cryptoperiodDays: config.keys.cryptoperiodDays['mtls-client-ca'],
    actor,
    clock,
    logger,
  });
  const keys = await createKeysFeature({
    knex,
    masterKey: masterKey.source,
    keyRing,
    cryptoperiodDays: config.keys.cryptoperiodDays,
    origin: actor.origin,
    openingSteps: [() => moveLegacySubscriptionSecrets({ knex, keyRing, logger }), () => mtls.sealPendingRevocations()],
    clock,
    logger,
    metrics,
  });
  return { mtls, keys };
}

/** Bearer tokens from the configured keys; the development issuer's when nothing else is set. */
async function serviceAuthenticator(config: Config, logger: Logger, clock: Clock): Promise<Authenticator> {
  const devJwks =
    config.auth.keys.source === 'dev-issuer' ? (await loadDevIssuer(config.auth.keys.file)).jwks : undefined;
  if (devJwks !== undefined) {
    logger.warn(
      'DEVELOPMENT token issuer trusted: any token from `npm run token` is accepted. Set AUTH_JWKS_URL or AUTH_PUBLIC_KEYS for real use.',
    );
  }
  return createAuthenticator(config.auth, keyResolverFor(config.auth.keys, devJwks), () => clock().getTime());
}

/**
 * One factory per feature (`createXFeature`), composed here in dependency order: loyalty (whose
 * earning listens to payments, and whose merges move payments), payments, events, then the gateway
 * webhooks that feed payments. Each returns its services, handlers and schedules.
 */
async function composeFeatures(core: KeyedCore, vault: VaultService, options: BuildOptions) {
  const { config, database, keyRing, clock, logger, metrics } = core;
  const knex = database.knex;
  const loyalty = createLoyaltyFeature({
    knex,
    keyRing,
    vault,
    payments: shopperPaymentsMover(clock),
    expiryIntervalMs: config.loyalty.expiryIntervalMs,
    finance: config.loyalty,
    clock,
    logger,
    metrics,
  });
  const payments = createPaymentsFeature({
    knex,
    vault,
    config: config.payments,
    listeners: [loyalty.paymentListener, ...(options.paymentListeners ?? [])],
    decodeStored: storedEventDecoder({ storedReference: (id) => storedReference(knex, id) }),
    shopperRefs: loyalty.reachableShopperRefs,
    earnings: loyalty.purchaseEarnings,
    clock,
    metrics,
  });
  // Returns at a till add facts to payments (whose listeners are loyalty's) and issue store credit.
  const returns = createReturnsFeature({
    knex,
    vault,
    payments: payments.payments,
    storeCredit: loyalty.storeCredit,
    config: config.returns,
    clock,
  });
  const events = createEventsFeature({
    knex,
    keyRing,
    config: config.events,
    ...(options.eventResolver === undefined ? {} : { resolver: options.eventResolver }),
    clock,
    logger,
    metrics,
  });
  const webhooks = await createWebhooksFeature({
    config: config.webhooks,
    payments: payments.payments,
    isKnownPan: (digits) => vault.isKnownPan(digits),
    storedReference: (id) => storedReference(knex, id),
    clock,
    logger,
    metrics,
  });
  return {
    payments: payments.payments,
    loyalty: loyalty.loyalty,
    members: loyalty.members,
    subscriptions: events.subscriptions,
    dispatcher: events.dispatcher,
    handlers: {
      ...webhooks.handlers,
      ...payments.handlers,
      ...loyalty.handlers,
      ...returns.handlers,
      ...events.handlers,
    },
    signatures: webhooks.signatures,
    schedules: [...events.schedules, ...loyalty.schedules],
  };
}

/**
 * Card data stored before the guard that nothing may rewrite (migration 20261209300000, docs/card-data.md
 * "Cleaning what was stored before"): said at every start until someone deals with it.
 */
async function warnOfLegacyCardData(knex: Knex, logger: Logger): Promise<void> {
  const found = await recordedLegacyCardData(knex);
  if (found.length === 0) return;
  logger.warn(
    { cardDataFindings: found },
    'card data stored before the guard is still held where it cannot be rewritten (card_data_legacy_findings; docs/card-data.md)',
  );
}
