/**
 * Composition root of the keys in a running instance: opening the vault (initial data keys, the audit
 * chain, the write-time key check, the other features' start-up work under the master key, the
 * instance heartbeat), the unsealer and its handlers when the master key is in custodians' shares,
 * the sealed-vault gate, and the cryptoperiod watch with its gauges. Key custody itself (rotation,
 * dual control, shares) is the key CLI's.
 */
import type { Knex } from 'knex';
import { forgetAuditChainKeys } from '../audit/audit-chain-keys.js';
import { forgetReferenceKey } from './reference-digests.js';
import { ensureAuditChain } from '../audit/audit-log.js';
import type { Clock } from '../clock/clock.js';
import type { Config } from '../config/config.js';
import type { HandlerMap } from '../http/types.js';
import type { Logger } from '../logging/logger.js';
import { METRICS } from '../metrics/catalogue.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Schedule } from '../scheduling/repeat.js';
import { isOverdue, secondsLeft, watchCryptoperiods, type CryptoperiodWatch } from './cryptoperiods.js';
import { InstanceHeartbeat } from './instance-heartbeat.js';
import type { KeyRing } from './key-ring.js';
import { checkKeyTriggers } from './key-version-triggers.js';
import type { MasterKeySource } from './master-key-types.js';
import { isSharesSource } from './master-key-sources/shares.js';
import { refuseWhileSealed } from './sealed-operations.js';
import { Unsealer } from './unseal.js';
import { unsealHandlers } from './unseal-handlers.js';

export interface KeysFeatureDeps {
  readonly knex: Knex;
  readonly masterKey: MasterKeySource;
  readonly keyRing: KeyRing;
  readonly cryptoperiodDays: Config['keys']['cryptoperiodDays'];
  /** This instance, as the initial keys record it (`service:<host>:<pid>`). */
  readonly origin: string;
  /** Other features' start-up work that needs the master key, run in order at every opening. */
  readonly openingSteps: readonly (() => Promise<void>)[];
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export interface KeysFeature {
  /** Present when MASTER_KEY_SOURCE=shares: the instance's seal state and its share submissions. */
  readonly unsealer: Unsealer | undefined;
  readonly handlers: HandlerMap;
  /** Sealed, every operation not on the key-free list answers 503 VAULT_SEALED. */
  readonly beforeHandler: (operationId: string) => void;
  /** The cryptoperiod watch. */
  readonly schedules: readonly Schedule[];
  /**
   * `start` runs now if the vault is open and again at every later unseal; `stop` runs when it is
   * sealed again, before the keys are forgotten (what needs keys, e.g. the events dispatcher).
   */
  whileOpen(start: () => void, stop: () => Promise<void>): void;
  /** Withdraws the heartbeat and, with shares, forgets the rebuilt key (a restart starts sealed). */
  close(): Promise<void>;
}

export async function createKeysFeature(deps: KeysFeatureDeps): Promise<KeysFeature> {
  const { knex, keyRing, logger } = deps;
  // What the ring holds, read at scrape time: instances that disagree have not all seen a rotation.
  deps.metrics.gauge(METRICS.keyRingGeneration, () => [{ labels: {}, value: keyRing.loadedGeneration }]);
  // Reports the key-ring generation this instance holds; the key CLI waits for it (issue 18).
  const heartbeat = new InstanceHeartbeat(knex, keyRing, {
    onError: (error) => logger.warn({ err: error }, 'key-ring heartbeat failed; the next beat retries'),
  });
  let heartbeatStarted = false;
  let open = false;
  const whileOpen: { start: () => void; stop: () => Promise<void> }[] = [];
  /**
   * Everything that needs the master key at start: at once for the env and file sources, after
   * `keys unseal` for the shares source (which starts sealed and must not unwrap anything before).
   */
  const openVault = async (): Promise<void> => {
    await keyRing.ensureInitialKeys(deps.origin);
    // Keys the audit trail on first start after migration 20261206000300 and checks its head.
    await ensureAuditChain(knex);
    await warnOnKeyTriggers(knex, logger);
    for (const step of deps.openingSteps) await step();
    const first = !heartbeatStarted;
    heartbeatStarted = true;
    await (first ? heartbeat.start() : heartbeat.beat());
    open = true;
    for (const hooks of whileOpen) hooks.start();
  };
  const sharesSource = isSharesSource(deps.masterKey) ? deps.masterKey : undefined;
  const unsealer =
    sharesSource === undefined
      ? undefined
      : new Unsealer({
          knex,
          source: sharesSource,
          onUnsealed: openVault,
          onSealing: async () => {
            open = false;
            for (const hooks of whileOpen) await hooks.stop();
            keyRing.forget();
            forgetAuditChainKeys(knex);
            forgetReferenceKey(knex);
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
  const cryptoperiods = await watchKeyPeriods(deps);
  return {
    unsealer,
    handlers: unsealHandlers(unsealer),
    beforeHandler: (operationId) => refuseWhileSealed(operationId, deps.masterKey),
    schedules: [{ stop: () => Promise.resolve(cryptoperiods.stop()) }],
    whileOpen(start, stop) {
      whileOpen.push({ start, stop });
      if (open) start();
    },
    async close() {
      await heartbeat.stop().catch((error: unknown) => logger.warn({ err: error }, 'removing the heartbeat failed'));
      // The rebuilt key dies with the service: a restart starts sealed.
      sharesSource?.seal();
    },
  };
}

/**
 * The write-time key check lives in triggers the service's own role could drop or disable: say so
 * loudly at start (`keys status` reports the same and exits 1); the service still starts.
 */
async function warnOnKeyTriggers(knex: Knex, logger: Logger): Promise<void> {
  const keyChecks = await checkKeyTriggers(knex);
  if (keyChecks.length > 0) {
    logger.warn(
      { findings: keyChecks },
      'key-version triggers are missing, disabled or altered: the database no longer refuses stale-key writes',
    );
  }
}

/** PCI DSS 3.7.4: a key past its cryptoperiod is reported at start-up and every hour, and exposed. */
async function watchKeyPeriods(deps: KeysFeatureDeps): Promise<CryptoperiodWatch> {
  const { logger, metrics, clock } = deps;
  const cryptoperiods = await watchCryptoperiods(deps.knex, deps.cryptoperiodDays, {
    intervalMs: 3_600_000,
    now: clock,
    onOverdue: (p) =>
      logger.warn(
        { purpose: p.purpose, version: p.version, expiredAt: p.expiresAt?.toISOString() },
        `key ${p.purpose} v${p.version} is past its cryptoperiod of ${p.cryptoperiodDays} days: rotate it (npm run keys -- rotate --purpose ${p.purpose})`,
      ),
    onError: (error) => logger.error({ err: error }, 'cryptoperiod check failed'),
  });
  const labels = (p: { purpose: string; version: number }): Record<'purpose' | 'version', string> => ({
    purpose: p.purpose,
    version: String(p.version),
  });
  metrics.gauge(METRICS.keyCryptoperiodRemaining, () =>
    cryptoperiods.periods().map((p) => ({ labels: labels(p), value: secondsLeft(p, clock()) ?? 0 })),
  );
  metrics.gauge(METRICS.keyCryptoperiodOverdue, () =>
    cryptoperiods.periods().map((p) => ({ labels: labels(p), value: isOverdue(p, clock()) ? 1 : 0 })),
  );
  return cryptoperiods;
}
