/**
 * The core every composition root starts from: the configuration, the database, the master key and
 * key ring, the clock, the logger and the metrics. `service.ts` (for `main.ts`) and every CLI open
 * theirs here, and build the features from it with the features' factories
 * (`src/<feature>/<feature>-feature.ts`); nothing else opens a database or a key ring.
 */
import type { Config } from './config/config.js';
import { systemClock, type Clock } from './clock/clock.js';
import { createDatabase, type Database } from './db/database.js';
import { openCliDatabase, openServiceDatabase, type CliDatabaseOptions } from './db/embedded-store.js';
import { migrateToLatest } from './db/migrations.js';
import { KeyRing } from './keys/key-ring.js';
import { loadMasterKey, type LoadedMasterKey } from './keys/master-key-source.js';
import { createLogger, type Logger } from './logging/logger.js';
import { Metrics } from './metrics/metrics.js';

export interface Core {
  readonly config: Config;
  readonly database: Database;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** What migrating at opening applied (empty when up to date or not asked to migrate). */
  readonly migrations: readonly string[];
  /** Closes what the core opened: the database (unless it was given), then the master key. */
  close(): Promise<void>;
}

/** A core with the master key and the key ring over it (the service, the key CLI). */
export interface KeyedCore extends Core {
  readonly masterKey: LoadedMasterKey;
  readonly keyRing: KeyRing;
}

/**
 * Where the database comes from: the service's (it owns an embedded data folder and serves it to
 * the CLIs), the supervisor's of several workers (PostgreSQL only: a plain connection, to migrate
 * before they start), a CLI command's (through the service's socket, or owning the folder while it runs), or
 * one the caller opened and closes itself (tests).
 */
export type DatabaseOpening =
  | { readonly role: 'service' }
  | { readonly role: 'supervisor' }
  | { readonly role: 'cli'; readonly cli: CliDatabaseOptions }
  | { readonly role: 'given'; readonly database: Database };

export interface CoreOptions {
  readonly database: DatabaseOpening;
  readonly logger: Logger;
  /** Default: the system clock. */
  readonly clock?: Clock | undefined;
  /** Apply pending migrations once open (default true). A failure closes the core again. */
  readonly migrate?: boolean;
  /** Runs when opening fails, before the core closes the master key (the key CLI's `hsm init` undo). */
  readonly onOpenFailure?: (() => Promise<void>) | undefined;
}

/** The database, the clock, the logger and the metrics: for the CLIs that need no master key. */
export function openCore(config: Config, options: CoreOptions): Promise<Core> {
  return open(config, options, async () => {});
}

/**
 * The core with the master key (loaded by the caller with {@link loadConfiguredMasterKey}, which may
 * have to check or undo something between the two) and a key ring over it. The core owns the master
 * key from here: a failure to open closes it.
 */
export async function openKeyedCore(
  config: Config,
  options: CoreOptions & { readonly masterKey: LoadedMasterKey },
): Promise<KeyedCore> {
  const { masterKey } = options;
  const core = await open(config, options, async () => {
    await masterKey.source.close?.();
  });
  return {
    ...core,
    masterKey,
    keyRing: new KeyRing(core.database.knex, masterKey.source, config.vault.keyRingRefreshMs),
  };
}

/** The master key the configuration names, with the previous ones of a rotation. */
export function loadConfiguredMasterKey(config: Config): Promise<LoadedMasterKey> {
  return loadMasterKey(config.masterKey, config.masterKeyPrevious, config.masterKeyPreviousSources);
}

/** A CLI's logger: to stderr (stdout is the command's answer), at LOG_LEVEL. */
export function cliLogger(config: Config): Logger {
  return createLogger(config.logLevel, process.stderr);
}

async function open(config: Config, options: CoreOptions, closeKeys: () => Promise<void>): Promise<Core> {
  const { logger } = options;
  const owned = options.database.role !== 'given';
  let database: Database;
  try {
    database = await openDatabase(config, options.database, logger);
  } catch (error) {
    await options.onOpenFailure?.();
    await closeKeys();
    throw error;
  }
  let migrations: readonly string[] = [];
  try {
    if (options.migrate ?? true) migrations = await migrateToLatest(database.knex);
  } catch (error) {
    if (owned) await database.close();
    await options.onOpenFailure?.();
    await closeKeys();
    throw error;
  }
  return {
    config,
    database,
    clock: options.clock ?? systemClock,
    logger,
    metrics: new Metrics(),
    migrations,
    async close() {
      try {
        if (owned) await database.close();
      } finally {
        await closeKeys();
      }
    },
  };
}

function openDatabase(config: Config, opening: DatabaseOpening, logger: Logger): Promise<Database> {
  switch (opening.role) {
    case 'given':
      return Promise.resolve(opening.database);
    case 'service':
      return openServiceDatabase(config, logger);
    case 'supervisor':
      return Promise.resolve(createDatabase(config, logger));
    case 'cli':
      return openCliDatabase(config, opening.cli);
  }
}
