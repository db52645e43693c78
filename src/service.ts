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
import {
  shopperPaymentsMover,
  type PaymentService,
  type PaymentTransitionListener,
} from './payments/payment-service.js';
import { createPaymentsFeature } from './payments/payments-feature.js';
import type { LoyaltyService } from './loyalty/loyalty-service.js';
import type { MemberService } from './loyalty/member-service.js';
import { createLoyaltyFeature } from './loyalty/loyalty-feature.js';
import { createWebhooksFeature, decodeStoredEvent } from './webhooks/webhooks-feature.js';
import fs from 'node:fs';
import { createClientCertificateVerifier } from './mtls/client-certificate-verifier.js';
import type { EventDispatcher } from './events/dispatcher.js';
import { createEventsFeature } from './events/events-feature.js';
import type { SubscriptionService } from './events/subscription-service.js';
import type { HostResolver } from './events/target-policy.js';
import type { Knex } from 'knex';
import { forgetAuditChainKeys } from './audit/audit-chain-keys.js';
import { isSharesSource } from './keys/master-key-sources/shares.js';
import { refuseWhileSealed } from './keys/sealed-operations.js';
import { Unsealer } from './keys/unseal.js';
import { unsealHandlers } from './keys/unseal-handlers.js';

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
  if (config.masterKey.source === 'shares' && config.masterKey.shareFiles.length > 0) {
    // Cleartext shares beside a service would unseal it at every start with no custodian present and
    // no audit entry (and skip the start-up key work that runs at an unseal): split knowledge gone.
    throw new Error(
      'MASTER_KEY_SHARE_FILES is for the key CLI only: unset it for the service, which is unsealed by the custodians (keys unseal)',
    );
  }
  const masterKey = await loadMasterKey(config.masterKey, config.masterKeyPrevious, config.masterKeyPreviousSources);
  logger.info({ masterKey: masterKey.source.location }, `master key: ${masterKey.source.description}`);
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
    await masterKey.source.close?.();
    throw error;
  }

  const keyRing = new KeyRing(database.knex, masterKey.source, config.vault.keyRingRefreshMs);
  const origin = `service:${os.hostname()}:${process.pid}`;
  // Reports the key-ring generation this instance holds; the key CLI waits for it (issue 18).
  const heartbeat = new InstanceHeartbeat(database.knex, keyRing, {
    onError: (error) => logger.warn({ err: error }, 'key-ring heartbeat failed; the next beat retries'),
  });
  let heartbeatStarted = false;
  // Built further down (it needs the services built after the vault): started by openVault.
  const late: { dispatcher?: EventDispatcher } = {};
  /**
   * Everything that needs the master key at start: at once for the env and file sources, after
   * `keys unseal` for the shares source (which starts sealed and must not unwrap anything before).
   */
  const openVault = async (): Promise<void> => {
    await keyRing.ensureInitialKeys(origin);
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
      actor: { actor: 'system', actorType: 'system', origin },
      cryptoperiodDays: config.keys.cryptoperiodDays['mtls-client-ca'],
    }).sealPendingRevocations();
    if (sealedRevocations > 0) logger.info({ sealedRevocations }, 'earlier mTLS revocations sealed');
    if (!heartbeatStarted) {
      heartbeatStarted = true;
      await heartbeat.start();
    } else {
      await heartbeat.beat();
    }
    if (config.events.dispatcherEnabled) late.dispatcher?.start();
  };
  const sharesSource = isSharesSource(masterKey.source) ? masterKey.source : undefined;
  const unsealer =
    sharesSource === undefined
      ? undefined
      : new Unsealer({
          knex: database.knex,
          source: sharesSource,
          onUnsealed: openVault,
          onSealing: async () => {
            await late.dispatcher?.stop();
            keyRing.forget();
            forgetAuditChainKeys(database.knex);
            await heartbeat.withdraw();
          },
          log: (fields, message) => logger.info(fields, message),
        });
  if (unsealer === undefined) await openVault();
  else {
    logger.warn(
      "VAULT SEALED: the master key is in custodians' shares (MASTER_KEY_SOURCE=shares). Card operations answer 503 VAULT_SEALED until M custodians run keys unseal against this instance.",
    );
  }
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
  const features = await composeFeatures({ knex: database.knex, keyRing, vault, config, logger, metrics }, options);
  late.dispatcher = features.dispatcher;
  // Sealed, the dispatcher waits for the unseal (it needs the subscription-secret key): openVault starts it.
  if (config.events.dispatcherEnabled && !(sharesSource?.sealed ?? false)) features.dispatcher.start();
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
  const readiness = createReadiness({
    ping: (ms) => database.ping(ms),
    isDraining: () => draining,
    masterKey: masterKey.source,
    onMasterKeyReason: (state) =>
      state.ready
        ? logger.info('master key ready again')
        : logger.warn({ code: state.code, reason: state.detail }, 'master key not ready'),
  });
  const spec = loadApiSpec();
  const app = createApp({
    spec,
    handlers: {
      ...healthHandlers(readiness, spec.yamlText),
      ...authHandlers(),
      ...unsealHandlers(unsealer),
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
      ...features.handlers,
      getMetrics(_req, res) {
        res.type('text/plain; version=0.0.4').send(metrics.render());
      },
    },
    authenticator,
    logger,
    // Sealed (MASTER_KEY_SOURCE=shares): every operation not on the key-free list answers 503 VAULT_SEALED.
    beforeHandler: (operationId) => refuseWhileSealed(operationId, masterKey.source),
    bodyLimitBytes: config.http.bodyLimitBytes,
    trustProxy: config.http.trustProxy,
    enforceResponseContract: options.enforceResponseContract ?? false,
    clientCertificates,
    signatures: features.signatures,
  });

  return {
    app,
    database,
    masterKey,
    readiness,
    keyRing,
    vault,
    payments: features.payments,
    loyalty: features.loyalty,
    members: features.members,
    subscriptions: features.subscriptions,
    dispatcher: features.dispatcher,
    metrics,
    spec,
    startDraining() {
      draining = true;
    },
    unsealer,
    async close() {
      cryptoperiods.stop();
      for (const schedule of features.schedules) await schedule.stop();
      await heartbeat.stop().catch((error: unknown) => logger.warn({ err: error }, 'removing the heartbeat failed'));
      // The rebuilt key dies with the service: a restart starts sealed.
      sharesSource?.seal();
      if (ownsDatabase) await database.close();
      await masterKey.source.close?.();
    },
  };
}

/** What every feature factory is built from. */
interface FeatureCore {
  readonly knex: Knex;
  readonly keyRing: KeyRing;
  readonly vault: VaultService;
  readonly config: Config;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/**
 * One factory per feature (`createXFeature`), composed here in dependency order: loyalty (whose
 * earning listens to payments, and whose merges move payments), payments, events, then the gateway
 * webhooks that feed payments. Each returns its services, handlers and schedules.
 */
async function composeFeatures(core: FeatureCore, options: BuildOptions) {
  const { knex, keyRing, vault, config, logger, metrics } = core;
  const loyalty = createLoyaltyFeature({
    knex,
    keyRing,
    vault,
    payments: shopperPaymentsMover(),
    expiryIntervalMs: config.loyalty.expiryIntervalMs,
    logger,
    metrics,
  });
  const payments = createPaymentsFeature({
    knex,
    vault,
    config: config.payments,
    listeners: [loyalty.paymentListener, ...(options.paymentListeners ?? [])],
    decodeStored: decodeStoredEvent,
    shopperRefs: loyalty.reachableShopperRefs,
    metrics,
  });
  const events = createEventsFeature({
    knex,
    keyRing,
    config: config.events,
    ...(options.eventResolver === undefined ? {} : { resolver: options.eventResolver }),
    logger,
    metrics,
  });
  const webhooks = await createWebhooksFeature({
    config: config.webhooks,
    payments: payments.payments,
    isKnownPan: (digits) => vault.isKnownPan(digits),
    logger,
    metrics,
  });
  return {
    payments: payments.payments,
    loyalty: loyalty.loyalty,
    members: loyalty.members,
    subscriptions: events.subscriptions,
    dispatcher: events.dispatcher,
    handlers: { ...webhooks.handlers, ...payments.handlers, ...loyalty.handlers, ...events.handlers },
    signatures: webhooks.signatures,
    schedules: [...events.schedules, ...loyalty.schedules],
  };
}
