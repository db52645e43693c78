/**
 * How a process gets its database so that an embedded data folder always has exactly one owner:
 *
 * - {@link openServiceDatabase}: the service takes the folder's owner lock for as long as it runs and
 *   serves the store to local commands on a Unix socket in the folder (store-socket.ts).
 * - {@link openCliDatabase}: every CLI command. When the service holds the folder, the command works
 *   through that socket, so what it writes is written by the owner and never lost; when nobody holds
 *   it, the command takes the lock itself until it ends (a starting service, or a second command,
 *   is refused meanwhile with DATA_FOLDER_IN_USE).
 *
 * With DATABASE_URL set both are plain PostgreSQL connections: the server does the sharing.
 */
import { describeDatabase, type Config } from '../config/config.js';
import { AppError } from '../errors/app-error.js';
import type { Logger } from '../logging/logger.js';
import { createDatabase, createStoreSocketDatabase, type Database } from './database.js';
import { acquireOwnerLock, describeOwner, liveOwner, type OwnerLock, type OwnerRecord } from './owner-lock.js';
import { checkPrivateFolder, checkSocketPathLength, serveStoreSocket, storeSocketDir } from './store-socket.js';

/** How long a command waits for a service that holds the folder but is not serving yet (starting). */
const SERVICE_START_WAIT_MS = 15_000;
/** How often the service checks that its owner lock is still in place (and restores a deleted one). */
const LOCK_CHECK_MS = 2_000;

export interface ServiceDatabaseOptions {
  /**
   * Called once when the service must stop owning the store: another process took the owner lock,
   * or a socket client left the session in a state that could not be reset. Default: SIGTERM to
   * this process, i.e. the graceful shutdown of main.ts (readiness fails from that moment on).
   */
  readonly onFatal?: (reason: string) => void;
}

export async function openServiceDatabase(
  config: Config,
  logger: Logger,
  options: ServiceDatabaseOptions = {},
): Promise<Database> {
  if (config.database.url !== undefined) return createDatabase(config, logger);
  // Checked before the lock and the store are taken: a refusal leaves nothing behind.
  checkSocketPathLength(config.dataDir);
  const lock = acquireOwnerLock(config.dataDir, 'service', 'service');
  let fatal: string | undefined;
  const stop = (reason: string): void => {
    if (fatal !== undefined) return;
    fatal = reason;
    (options.onFatal ?? (() => process.kill(process.pid, 'SIGTERM')))(reason);
  };
  let database: Database | undefined;
  try {
    database = createDatabase(config, logger);
    const { pglite } = database;
    if (pglite === undefined) throw new Error('the embedded store has no PGlite');
    const socket = await serveStoreSocket({
      pglite,
      knex: database.knex,
      dataDir: config.dataDir,
      onError: (error) => logger.warn({ err: error }, 'store socket: a client connection failed'),
      onPoisoned: (error) => {
        logger.error(
          { err: error, dataDir: config.dataDir },
          'a store socket client left the database session in a state that could not be reset: the store is closed and the service stops',
        );
        stop('the store session could not be reset');
      },
    });
    lock.announceSocket(socket.socketDir);
    logger.info(
      { dataDir: config.dataDir, socketDir: socket.socketDir },
      `this service owns the embedded store in ${config.dataDir}; CLI commands reach it through ${socket.socketDir}`,
    );
    const store = database;
    const watch = setInterval(() => {
      if (fatal !== undefined) return;
      const state = lock.reassert();
      if (state === 'restored')
        logger.warn({ dataDir: config.dataDir }, 'the owner lock file had been deleted: restored');
      if (state === 'lost') {
        // Another process's lock is in place: it may be writing these files now. This service stops
        // (its exit leaves that lock alone: a release removes only a lock carrying our nonce).
        logger.error(
          { dataDir: config.dataDir, holder: liveOwner(config.dataDir) },
          'another process has taken the owner lock of this data folder: two owners overwrite each other; this service stops',
        );
        stop('the owner lock was lost');
      }
    }, LOCK_CHECK_MS);
    watch.unref();
    return {
      ...store,
      async ping(timeoutMs) {
        if (fatal !== undefined) throw new Error(`the embedded store is no longer served: ${fatal}`);
        await store.ping(timeoutMs);
      },
      async close() {
        clearInterval(watch);
        try {
          await socket.close();
          await store.close();
        } finally {
          lock.release();
        }
      },
    };
  } catch (error) {
    await database?.close();
    lock.release();
    throw error;
  }
}

export interface CliDatabaseOptions {
  /** The command, for the lock record and messages: e.g. "keys rotate". */
  readonly command: string;
  /** Where the one line saying how the store is reached goes (stderr). */
  readonly notice?: (line: string) => void;
}

/**
 * The database for one CLI command. Call it only after the command line has been parsed (a usage
 * error or --help must not touch the data folder), and close what it returns when the command ends.
 */
export async function openCliDatabase(config: Config, options: CliDatabaseOptions): Promise<Database> {
  if (config.database.url !== undefined) return createDatabase(config);
  const notice = options.notice ?? (() => {});
  const deadline = Date.now() + SERVICE_START_WAIT_MS;
  for (;;) {
    const owner = liveOwner(config.dataDir);
    if (owner?.socketDir !== undefined) {
      // The socket is always the folder's own (the path recorded in the lock is not followed), and
      // the folders must be this user's and private: nobody else can put a fake store there.
      const socketDir = storeSocketDir(config.dataDir);
      checkPrivateFolder(config.dataDir);
      checkPrivateFolder(socketDir);
      notice(`${describeOwner(owner)} holds ${config.dataDir}: working through its socket ${socketDir}`);
      return createStoreSocketDatabase(socketDir, config.database.connectTimeoutMs);
    }
    if (owner !== undefined) {
      // The service between taking the lock and listening: wait for its socket. Another command: refuse.
      if (owner.role === 'service' && Date.now() < deadline) {
        await sleep(200);
        continue;
      }
      throw inUse(config, owner);
    }
    let lock: OwnerLock;
    try {
      lock = acquireOwnerLock(config.dataDir, 'cli', options.command);
    } catch (error) {
      if (error instanceof AppError && error.code === 'DATA_FOLDER_IN_USE') continue; // lost a race: look again
      throw error;
    }
    notice(`no service holds ${config.dataDir}: this command owns ${describeDatabase(config)} until it ends`);
    const database = createDatabase(config);
    return {
      ...database,
      async close() {
        // Checked before the command reports how it ended: if another process took the folder
        // meanwhile, what this command wrote may be overwritten, so it must not end as a success.
        const held = lock.stillHeld();
        try {
          await database.close();
        } finally {
          lock.release();
        }
        if (!held) {
          throw new AppError('DATA_FOLDER_IN_USE', {
            detail: `the owner lock of ${config.dataDir} was taken by another process while this command ran: its writes may be lost; check with \`keys list\` once that process has finished`,
          });
        }
      },
    };
  }
}

function inUse(config: Config, owner: OwnerRecord): AppError {
  return new AppError('DATA_FOLDER_IN_USE', {
    detail: `the embedded data folder ${config.dataDir} is held by ${describeOwner(owner)}; an embedded database belongs to one process: wait for it to finish`,
    extensions: { pid: owner.pid, role: owner.role },
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
