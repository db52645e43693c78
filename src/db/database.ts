/**
 * One database handle for the whole process: knex over `pg` when DATABASE_URL is set, otherwise
 * embedded PGlite under DATA_DIR. Both run the same migrations and the same SQL.
 *
 * Both drivers are given the same type parsing so that code never depends on which one is in use:
 * `bigint` columns come back as JavaScript numbers (refused beyond 2^53), `numeric` as strings.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import knexFactory, { type Knex } from 'knex';
import pg from 'pg';
import { PGlite, type PGliteOptions } from '@electric-sql/pglite';
import type { Config } from '../config/config.js';
import type { Logger } from '../logging/logger.js';

const require = createRequire(import.meta.url);
// knex-pglite is CommonJS that assigns the client class to module.exports.
const ClientPGLite = require('knex-pglite') as typeof knexFactory.Client;

export type DatabaseKind = 'postgres' | 'pglite';

export interface Database {
  readonly knex: Knex;
  readonly kind: DatabaseKind;
  /** The embedded store's PGlite (file or memory), for the store socket only; undefined otherwise. */
  readonly pglite?: PGlite | undefined;
  /** Cheap round trip used by readiness; rejects when the database cannot answer within `timeoutMs`. */
  ping(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

const INT8_OID = 20;

function parseInt8(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new RangeError('bigint column value exceeds the safe integer range');
  return n;
}

/** pg's parsers, but `bigint` as a checked number (pg's default is a string). */
const pgTypes = {
  getTypeParser(oid: Parameters<typeof pg.types.getTypeParser>[0], format?: 'text' | 'binary'): unknown {
    if (Number(oid) === INT8_OID) return parseInt8;
    return format === 'binary' ? pg.types.getTypeParser(oid, 'binary') : pg.types.getTypeParser(oid, 'text');
  },
};

export function createDatabase(config: Config, logger?: Logger): Database {
  const db = config.database;
  const log = knexLog(logger);
  if (db.url !== undefined) {
    return wrap(
      'postgres',
      knexFactory({
        client: 'pg',
        connection: {
          connectionString: db.url,
          application_name: 'loyalty-vault',
          statement_timeout: db.statementTimeoutMs,
          idle_in_transaction_session_timeout: Math.max(db.statementTimeoutMs * 2, 10_000),
          connectionTimeoutMillis: db.connectTimeoutMs,
          types: pgTypes,
        } as Knex.PgConnectionConfig,
        pool: { min: 0, max: db.poolMax, idleTimeoutMillis: 30_000 },
        acquireConnectionTimeout: db.connectTimeoutMs,
        ...log,
      }),
    );
  }
  const dir = path.join(config.dataDir, 'pgdata');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return createPgliteDatabase(new PGlite(dir, { parsers: { [INT8_OID]: parseInt8 } }), log);
}

/**
 * knex prints its own warnings (e.g. "Acquire connection error" with the driver's stack) with
 * console.log: plain text on stdout, beside the JSON log and past the PAN masker. Route them
 * through the service logger instead.
 */
function knexLog(logger: Logger | undefined): Pick<Knex.Config, 'log'> {
  if (logger === undefined) return {};
  const text = (message: unknown): string => (typeof message === 'string' ? message : JSON.stringify(message));
  return {
    log: {
      warn: (message: unknown) => logger.warn({ component: 'knex' }, text(message)),
      error: (message: unknown) => logger.error({ component: 'knex' }, text(message)),
      deprecate: (message: unknown) => logger.warn({ component: 'knex' }, text(message)),
      debug: (message: unknown) => logger.debug({ component: 'knex' }, text(message)),
    },
  };
}

/**
 * What lets a new in-memory PGlite skip its slow start (about 2 s of WebAssembly compilation and
 * initdb): the compiled modules, the file-system bundle and a data folder that initdb already wrote.
 */
export type MemoryDatabaseStart = Pick<
  PGliteOptions,
  'pgliteWasmModule' | 'initdbWasmModule' | 'fsBundle' | 'loadDataDir'
>;

/**
 * An in-memory PGlite database: what the test suite uses when no DATABASE_URL is given. With
 * `start`, it begins from that data folder (a blank cluster, as initdb leaves it) instead of running
 * initdb again.
 */
export function createMemoryDatabase(start: MemoryDatabaseStart = {}): Database {
  return createPgliteDatabase(new PGlite({ ...start, parsers: { [INT8_OID]: parseInt8 } }));
}

function createPgliteDatabase(pglite: PGlite, log: Pick<Knex.Config, 'log'> = {}): Database {
  return wrap(
    'pglite',
    knexFactory({
      client: ClientPGLite,
      dialect: 'postgres',
      connection: () => ({ pglite }) as object,
      ...log,
    } as Knex.Config),
    pglite,
  );
}

/**
 * A client of the embedded store that a running service serves on a Unix socket (store-socket.ts):
 * `pg` with `host` = the socket's directory. Still kind `pglite`: the store behind it is one
 * single-session PGlite, so callers keep to one lane. One connection, so that this process's work is
 * one session there; no statement or idle timeouts are sent (they would apply to the one session
 * that the service shares).
 */
export function createStoreSocketDatabase(socketDir: string, connectTimeoutMs: number): Database {
  return wrap(
    'pglite',
    knexFactory({
      client: 'pg',
      connection: {
        host: socketDir,
        port: 5432,
        user: 'postgres',
        database: 'postgres',
        connectionTimeoutMillis: connectTimeoutMs,
        types: pgTypes,
      } as Knex.PgConnectionConfig,
      pool: { min: 0, max: 1 },
      acquireConnectionTimeout: 120_000,
    }),
  );
}

function wrap(kind: DatabaseKind, knex: Knex, pglite?: PGlite): Database {
  let closed = false;
  return {
    knex,
    kind,
    pglite,
    async ping(timeoutMs) {
      if (closed) throw new Error('database handle is closed');
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('database ping timed out')), timeoutMs);
      });
      try {
        await Promise.race([knex.raw('select 1'), timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await knex.destroy();
    },
  };
}
