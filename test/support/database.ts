/**
 * Each test file gets a database of its own. With DATABASE_URL set (CI's PostgreSQL run), a fresh
 * database `t_<random>` is created on that server and dropped afterwards; otherwise an in-memory
 * PGlite instance (the embedded default). Tests never rely on leftovers.
 *
 * `{ migrated: true }` gives the database every migration already applied, exactly as
 * `migrateToLatest` on a blank one would (migrations write no random or time-dependent rows): on
 * PostgreSQL a copy of a template database this process migrated once (`create database … template`,
 * dropped by the root hook when the run ends), on PGlite a load of a migrated data folder. Migrating
 * each database anew cost 1–2 s on PostgreSQL and 0.5–1 s on PGlite, over a hundred times a run.
 */
import { randomBytes } from 'node:crypto';
import knexFactory from 'knex';
import type { Config } from '../../src/config/config.js';
import { createDatabase, createMemoryDatabase, type Database } from '../../src/db/database.js';
import { migrateToLatest } from '../../src/db/migrations.js';
import { blankClusterStart, migratedClusterStart } from './pglite-start.js';

export const usingPostgres = process.env['DATABASE_URL'] !== undefined && process.env['DATABASE_URL'] !== '';

export interface TestDatabase extends Database {
  /** Connection URL of this test database (PostgreSQL mode only): for a second service instance. */
  readonly url: string | undefined;
}

export interface TestDatabaseOptions {
  /** Every migration applied (as migrateToLatest would); a blank database otherwise. */
  readonly migrated?: boolean;
}

export async function createTestDatabase(options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  if (!usingPostgres) {
    const db = createMemoryDatabase(await (options.migrated === true ? migratedClusterStart() : blankClusterStart()));
    return { ...db, url: undefined };
  }
  const adminUrl = process.env['DATABASE_URL'] as string;
  const name = `t_${randomBytes(6).toString('hex')}`;
  const template = options.migrated === true ? ` template ${await migratedTemplate(adminUrl)}` : '';
  await withAdmin(adminUrl, (admin) => admin.raw(`create database ${name}${template}`));
  const url = databaseUrl(adminUrl, name);
  const db = createDatabase(testDbConfig(url));
  return {
    ...db,
    url,
    async close() {
      await db.close();
      await dropDatabase(adminUrl, name);
    },
  };
}

let template: Promise<string> | undefined;

/** The name of this process's migrated template database, made on first use. */
function migratedTemplate(adminUrl: string): Promise<string> {
  template ??= (async () => {
    const name = `t_template_${randomBytes(6).toString('hex')}`;
    await withAdmin(adminUrl, (admin) => admin.raw(`create database ${name}`));
    const db = createDatabase(testDbConfig(databaseUrl(adminUrl, name)));
    try {
      await migrateToLatest(db.knex);
    } finally {
      await db.close();
    }
    return name;
  })();
  return template;
}

/** Drops the template database, if this process made one (the root hook calls it once, at the end). */
export async function dropMigratedTemplate(): Promise<void> {
  if (template === undefined || !usingPostgres) return;
  const name = await template.catch(() => undefined);
  template = undefined;
  if (name !== undefined) await dropDatabase(process.env['DATABASE_URL'] as string, name);
}

function databaseUrl(adminUrl: string, name: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

function dropDatabase(adminUrl: string, name: string): Promise<void> {
  return withAdmin(adminUrl, (admin) => admin.raw(`drop database if exists ${name} with (force)`));
}

export function testDbConfig(url: string, overrides: Partial<Config['database']> = {}): Config {
  return {
    database: { url, poolMax: 10, statementTimeoutMs: 10_000, connectTimeoutMs: 3_000, ...overrides },
    dataDir: '/nonexistent',
  } as Config;
}

async function withAdmin(url: string, fn: (admin: knexFactory.Knex) => Promise<unknown>): Promise<void> {
  const admin = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 1 } });
  try {
    await fn(admin);
  } finally {
    await admin.destroy();
  }
}
