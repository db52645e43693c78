/**
 * Composition root: the one place that turns a Config into a running set of parts. Features get
 * their dependencies from here; nothing else constructs a database, a key source or a logger.
 */
import type { Express } from 'express';
import { createAuthenticator, keyResolverFor } from './auth/authenticator.js';
import { authHandlers } from './http/principal-handlers.js';
import { loadDevIssuer } from './auth/dev-issuer.js';
import type { Config } from './config/config.js';
import { productionDowngrades } from './config/downgrades.js';
import type { Database } from './db/database.js';
import { openServiceDatabase } from './db/embedded-store.js';
import { migrateToLatest } from './db/migrations.js';
import { createReadiness, healthHandlers, type Readiness } from './health/health-handlers.js';
import { createApp } from './http/app.js';
import { loadApiSpec, type ApiSpec } from './http/openapi.js';
import { loadMasterKey, type LoadedMasterKey } from './keys/master-key-source.js';
import type { Logger } from './logging/logger.js';
import { InstanceHeartbeat } from './keys/instance-heartbeat.js';
import { KeyRing } from './keys/key-ring.js';
import { ensureAuditChain } from './audit/audit-log.js';
import { moveLegacySecrets } from './events/subscription-secrets.js';
import { checkKeyTriggers } from './keys/key-version-triggers.js';
import { ClientCertificateAuthority } from './mtls/client-certificates.js';
import { daysLeft, isOverdue, watchCryptoperiods } from './keys/cryptoperiods.js';
import { VaultService } from './cards/vault-service.js';
import { cardsHandlers } from './cards/cards-handlers.js';
import { sharedBudgetAtRate } from './ratelimit/rate-limiter.js';
import { TokenBuckets } from './ratelimit/token-bucket.js';
import os from 'node:os';
import { Metrics } from './metrics/metrics.js';
import { PaymentService, type PaymentTransitionListener } from './payments/payment-service.js';
import { paymentsHandlers } from './payments/payments-handlers.js';
import { loadWebhookSecrets } from './webhooks/webhook-secrets.js';
import { LoyaltyService } from './loyalty/loyalty-service.js';
import { MemberService } from './loyalty/member-service.js';
import { loyaltyHandlers } from './loyalty/loyalty-handlers.js';
import { storedEvent } from './webhooks/stored-events.js';
import { webhookHandlers } from './webhooks/webhook-handlers.js';
import fs from 'node:fs';
import { createClientCertificateVerifier } from './mtls/client-certificate-verifier.js';
import { EventDispatcher } from './events/dispatcher.js';
import { eventsHandlers } from './events/events-handlers.js';
import { SubscriptionService } from './events/subscription-service.js';
import { systemResolver, type HostResolver, type TargetPolicy } from './events/target-policy.js';
import type { Knex } from 'knex';

export interface Service {
  readonly app: Express;
  readonly database: Database;
  readonly masterKey: LoadedMasterKey;
  readonly readiness: Readiness;
  readonly keyRing: KeyRing;
  readonly vault: VaultService;
  readonly payments: PaymentService;
  readonly loyalty: LoyaltyService;
  readonly members: MemberService;
  readonly subscriptions: SubscriptionService;
  /** The in-process outbox dispatcher (built even when EVENTS_DISPATCHER_ENABLED=false, but not started). */
  readonly dispatcher: EventDispatcher;
  readonly metrics: Metrics;
  readonly spec: ApiSpec;
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
}

export async function buildService(config: Config, options: BuildOptions): Promise<Service> {
  const { logger } = options;
  const downgrades = productionDowngrades(config);
  if (downgrades.length > 0) {
    logger.warn(
      { downgrades },
      `!!! ${downgrades.length} SECURITY DOWNGRADE(S) IN FORCE:\n${downgrades.map((d) => `  - ${d}`).join('\n')}`,
    );
  }
  const masterKey = await loadMasterKey(config.masterKey, config.masterKeyPrevious);
  if (masterKey.generatedDevKeyFile !== undefined) {
    logger.warn(
      { file: masterKey.generatedDevKeyFile },
      '!!! DEVELOPMENT MASTER KEY GENERATED. It protects every card in this data folder. Never use it in production: set MASTER_KEY or MASTER_KEY_FILE. !!!',
    );
  }

  const ownsDatabase = options.database === undefined;
  const database = options.database ?? (await openServiceDatabase(config, logger));
  try {
    const applied = await migrateToLatest(database.knex);
    if (applied.length > 0) logger.info({ migrations: applied }, 'database migrated');
  } catch (error) {
    if (ownsDatabase) await database.close();
    throw error;
  }

  const keyRing = new KeyRing(database.knex, masterKey.source, config.vault.keyRingRefreshMs);
  await keyRing.ensureInitialKeys(`service:${os.hostname()}:${process.pid}`);
  // Keys the audit trail on first start after migration 20261206000300 and checks its head.
  await ensureAuditChain(database.knex);
  // The write-time key check lives in triggers the service's own role could drop or disable: say so
  // loudly at start (`keys status` reports the same and exits 1); the service still starts.
  const keyChecks = await checkKeyTriggers(database.knex);
  if (keyChecks.length > 0) {
    logger.warn(
      { findings: keyChecks },
      'key-version triggers are missing, disabled or altered: the database no longer refuses stale-key writes',
    );
  }
  // Secrets sealed under pan-encryption before they had a key of their own (issue 17): moved once.
  const legacySecrets = await moveLegacySecrets(database.knex, keyRing);
  if (legacySecrets.moved + legacySecrets.failed > 0) {
    logger.info(legacySecrets, 'subscription secrets moved from pan-encryption to the subscription-secret key');
  }
  // Certificates revoked before revocations were sealed (issue 17): appended to the sealed list once.
  const sealedRevocations = await new ClientCertificateAuthority({
    knex: database.knex,
    masterKey: masterKey.source,
    actor: { actor: 'system', actorType: 'system', origin: `service:${os.hostname()}:${process.pid}` },
    cryptoperiodDays: config.keys.cryptoperiodDays['mtls-client-ca'],
  }).sealPendingRevocations();
  if (sealedRevocations > 0) logger.info({ sealedRevocations }, 'earlier mTLS revocations sealed');
  // Reports the key-ring generation this instance holds; the key CLI waits for it (issue 18).
  const heartbeat = new InstanceHeartbeat(database.knex, keyRing, {
    onError: (error) => logger.warn({ err: error }, 'key-ring heartbeat failed; the next beat retries'),
  });
  await heartbeat.start();
  const vault = new VaultService(database.knex, keyRing, {
    detokenise: { enabled: config.vault.detokeniseEnabled, perMinute: config.vault.detokenisePerMinute },
    lookupConcurrency: config.vault.lookupConcurrency,
    createConcurrency: config.vault.createConcurrency,
  });

  const metrics = new Metrics();
  // PCI DSS 3.7.4: a key past its cryptoperiod is reported at start-up and every hour, and exposed.
  const cryptoperiods = await watchCryptoperiods(database.knex, config.keys.cryptoperiodDays, {
    intervalMs: 3_600_000,
    onOverdue: (p) =>
      logger.warn(
        { purpose: p.purpose, version: p.version, expiredAt: p.expiresAt?.toISOString() },
        `key ${p.purpose} v${p.version} is past its cryptoperiod of ${p.cryptoperiodDays} days: rotate it (npm run keys -- rotate --purpose ${p.purpose})`,
      ),
    onError: (error) => logger.error({ err: error }, 'cryptoperiod check failed'),
  });
  metrics.gauge(
    'key_cryptoperiod_days_left',
    'Whole days left in the cryptoperiod of each published or active key version (negative: overdue).',
    () =>
      cryptoperiods.periods().map((p) => ({
        labels: { purpose: p.purpose, version: String(p.version) },
        value: daysLeft(p, new Date()) ?? 0,
      })),
  );
  metrics.gauge('key_cryptoperiod_overdue', '1 when a published or active key version is past its cryptoperiod.', () =>
    cryptoperiods.periods().map((p) => ({
      labels: { purpose: p.purpose, version: String(p.version) },
      value: isOverdue(p, new Date()) ? 1 : 0,
    })),
  );
  const batches = metrics.counter('payment_batches_total', 'Committed webhook transactions (group commit).');
  const batched = metrics.counter(
    'payment_batch_events_total',
    'Webhook events committed by those transactions; divided by payment_batches_total, the mean batch size.',
  );
  const loyalty = new LoyaltyService(database.knex, {
    onExpiryError: (shopperRef, error) =>
      logger.error({ err: error, shopperRef }, 'expiring a shopper failed; skipped'),
  });
  const payments = new PaymentService(database.knex, vault, {
    autoCaptureChannels: config.payments.autoCaptureChannels,
    listeners: [loyalty.onPaymentTransitions, ...(options.paymentListeners ?? [])],
    batch: {
      maxBatch: config.payments.batchMax,
      concurrency: config.payments.batchConcurrency,
      onBatch: (size) => {
        batches({});
        batched({}, size);
      },
    },
  });
  const members = new MemberService({ knex: database.knex, keyRing, vault, payments });
  const expiry = scheduleExpiry(loyalty, config.loyalty.expiryIntervalMs, logger, metrics);
  const targets: TargetPolicy = {
    resolver: options.eventResolver ?? systemResolver,
    allowHttp: config.events.allowHttpTargets,
    allowPrivate: config.events.allowPrivateTargets,
  };
  if (targets.allowPrivate) {
    logger.warn(
      'EVENTS_ALLOW_PRIVATE_TARGETS is on: webhooks may reach loopback and private addresses (development only).',
    );
  }
  const subscriptions = new SubscriptionService({
    knex: database.knex,
    keyRing,
    targets,
    resolveTimeoutMs: config.events.timeoutMs,
  });
  const deliveries = metrics.counter('outbound_deliveries_total', 'Outbound event delivery attempts, by outcome.');
  const deadLetters = metrics.counter('outbound_dead_letters_total', 'Outbound event deliveries dead-lettered.');
  const dispatcher = new EventDispatcher({
    knex: database.knex,
    keyRing,
    targets,
    options: config.events,
    onAttempt: (outcome, dead) => {
      deliveries({ outcome });
      if (dead) deadLetters({});
    },
    onError: (error) => logger.error({ err: error }, 'outbound event dispatch round failed'),
  });
  const backlog = watchBacklog(database.knex, metrics, logger);
  if (config.events.dispatcherEnabled) dispatcher.start();
  const webhooks = await loadWebhookSecrets(config.webhooks);
  if (webhooks.generatedDevFile !== undefined) {
    logger.warn(
      { file: webhooks.generatedDevFile },
      'DEVELOPMENT webhook secrets in use (generated into the data folder). Set WEBHOOK_PLATFORM_SECRETS, WEBHOOK_ADYEN_HMAC_KEYS and WEBHOOK_STRIPE_SECRETS for real use.',
    );
  }

  const devJwks =
    config.auth.keys.source === 'dev-issuer' ? (await loadDevIssuer(config.auth.keys.file)).jwks : undefined;
  if (devJwks !== undefined) {
    logger.warn(
      'DEVELOPMENT token issuer trusted: any token from `npm run token` is accepted. Set AUTH_JWKS_URL or AUTH_PUBLIC_KEYS for real use.',
    );
  }
  const authenticator = createAuthenticator(config.auth, keyResolverFor(config.auth.keys, devJwks));
  // Client certificates are judged only where the HTTPS listener can carry them (TLS_PORT).
  const clientCertificates =
    config.tls.port === undefined
      ? undefined
      : {
          mode: config.tls.cardRoutesAuth,
          verifier: createClientCertificateVerifier(database.knex, {
            masterKey: masterKey.source,
            revocationCheckMs: config.tls.revocationCheckMs,
            onTamper: (problem) =>
              logger.error(
                { problem },
                'mTLS revocation list failed its integrity check: refusing every client certificate',
              ),
            extraCaPem:
              config.tls.clientCaFile === undefined ? undefined : fs.readFileSync(config.tls.clientCaFile, 'utf8'),
          }),
        };

  let draining = false;
  const readiness = createReadiness({ ping: (ms) => database.ping(ms), isDraining: () => draining });
  const spec = loadApiSpec();
  const app = createApp({
    spec,
    handlers: {
      ...healthHandlers(readiness, spec.yamlText),
      ...authHandlers(),
      ...cardsHandlers(
        vault,
        new TokenBuckets({ ratePerSecond: config.vault.cardRatePerSecond, burst: config.vault.cardRateBurst }),
        sharedBudgetAtRate(
          database.knex,
          'first-sighting',
          config.vault.firstSightingsPerMinute,
          config.vault.firstSightingsBurst,
        ),
      ),
      ...webhookHandlers({
        payments,
        secrets: webhooks.secrets,
        metrics,
        isKnownPan: (digits) => vault.isKnownPan(digits),
      }),
      ...paymentsHandlers(database.knex, payments, storedEvent),
      ...loyaltyHandlers({ knex: database.knex, loyalty, members }),
      ...eventsHandlers(subscriptions),
      getMetrics(_req, res) {
        res.type('text/plain; version=0.0.4').send(metrics.render());
      },
    },
    authenticator,
    logger,
    bodyLimitBytes: config.http.bodyLimitBytes,
    trustProxy: config.http.trustProxy,
    enforceResponseContract: options.enforceResponseContract ?? false,
    clientCertificates,
  });

  return {
    app,
    database,
    masterKey,
    readiness,
    keyRing,
    vault,
    payments,
    loyalty,
    members,
    subscriptions,
    dispatcher,
    metrics,
    spec,
    startDraining() {
      draining = true;
    },
    async close() {
      cryptoperiods.stop();
      backlog.stop();
      await dispatcher.stop();
      await expiry.stop();
      await heartbeat.stop().catch((error: unknown) => logger.warn({ err: error }, 'removing the heartbeat failed'));
      if (ownsDatabase) await database.close();
    },
  };
}

/**
 * The in-process expiry schedule (off when the interval is 0). Runs are never concurrent within a
 * process, and are safe across instances (accounts are taken with SKIP LOCKED); a failed run is
 * logged and the next one tries again. The first run waits a random part of the interval, so
 * instances started together do not all run at once.
 */
function scheduleExpiry(
  loyalty: LoyaltyService,
  intervalMs: number,
  logger: Logger,
  metrics: Metrics,
): { stop(): Promise<void> } {
  if (intervalMs === 0) return { stop: () => Promise.resolve() };
  const expired = metrics.counter('loyalty_points_expired_total', 'Points expired by the in-process expiry job.');
  let running: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const run = (): void => {
    running = loyalty
      .expireDue()
      .then((result) => {
        expired({}, result.points);
        if (result.lots > 0) logger.info({ ...result }, 'loyalty points expired');
      })
      .catch((error: unknown) => logger.error({ err: error }, 'loyalty expiry run failed'))
      .finally(() => {
        running = undefined;
        if (!stopped) timer = setTimeout(run, intervalMs).unref();
      });
  };
  timer = setTimeout(run, Math.floor(Math.random() * intervalMs)).unref();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}

/**
 * Outbox backlog gauges, read from the database every 15 s (not at scrape time: a scrape must not
 * query): deliveries waiting, and the age of the oldest (the lag a subscriber sees).
 */
function watchBacklog(knex: Knex, metrics: Metrics, logger: Logger): { stop(): void } {
  let pending = 0;
  let lagSeconds = 0;
  metrics.gauge('outbound_deliveries_pending', 'Outbound event deliveries waiting (all subscriptions).', () => [
    { labels: {}, value: pending },
  ]);
  metrics.gauge('outbound_delivery_lag_seconds', 'Age of the oldest waiting outbound event delivery.', () => [
    { labels: {}, value: lagSeconds },
  ]);
  const read = (): void => {
    // Deliveries of a deleted or disabled subscription wait for nobody: not counted.
    knex('outbound_deliveries as d')
      .join('event_subscriptions as s', 's.id', 'd.subscription_id')
      .where({ 'd.state': 'pending', 's.state': 'active' })
      .first(knex.raw('count(*) as n'), knex.raw('min(d.created_at) as oldest'))
      .then((row: { n: number | string; oldest: Date | null } | undefined) => {
        pending = Number(row?.n ?? 0);
        lagSeconds = row?.oldest == null ? 0 : Math.max(0, (Date.now() - row.oldest.getTime()) / 1000);
      })
      .catch((error: unknown) => logger.warn({ err: error }, 'reading the outbox backlog failed'));
  };
  read();
  const timer = setInterval(read, 15_000).unref();
  return { stop: () => clearInterval(timer) };
}
