/**
 * Each test file gets a database of its own. With DATABASE_URL set (CI's PostgreSQL run), a fresh
 * database `t_<random>` is created on that server and dropped afterwards; otherwise an in-memory
 * PGlite instance (the embedded default). Tests never rely on leftovers.
 */
import { randomBytes } from 'node:crypto';
import knexFactory from 'knex';
import type { Config } from '../../src/config/config.js';
import { createDatabase, createMemoryDatabase, type Database } from '../../src/db/database.js';

export const usingPostgres = process.env['DATABASE_URL'] !== undefined && process.env['DATABASE_URL'] !== '';

export interface TestDatabase extends Database {
  /** Connection URL of this test database (PostgreSQL mode only): for a second service instance. */
  readonly url: string | undefined;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  if (!usingPostgres) {
    const db = createMemoryDatabase();
    return { ...db, url: undefined };
  }
  const adminUrl = process.env['DATABASE_URL'] as string;
  const name = `t_${randomBytes(6).toString('hex')}`;
  await withAdmin(adminUrl, (admin) => admin.raw(`create database ${name}`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const db = createDatabase(testDbConfig(url.toString()));
  return {
    ...db,
    url: url.toString(),
    async close() {
      await db.close();
      await withAdmin(adminUrl, (admin) => admin.raw(`drop database if exists ${name} with (force)`));
    },
  };
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
