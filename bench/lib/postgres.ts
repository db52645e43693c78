/**
 * A throw-away PostgreSQL database for one scenario, on the server named by BENCH_DATABASE_URL
 * (default: this machine's, postgres://postgres@127.0.0.1:5432/postgres). Dropped afterwards.
 */
import { randomBytes } from 'node:crypto';
import knexFactory from 'knex';

export const BENCH_ADMIN_URL = process.env['BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';

async function admin(sql: string): Promise<void> {
  const knex = knexFactory({ client: 'pg', connection: BENCH_ADMIN_URL, pool: { min: 0, max: 1 } });
  try {
    await knex.raw(sql);
  } finally {
    await knex.destroy();
  }
}

export async function withTempPostgres<T>(fn: (url: string) => Promise<T>): Promise<T> {
  const name = `bench_${randomBytes(5).toString('hex')}`;
  await admin(`create database ${name}`);
  const url = new URL(BENCH_ADMIN_URL);
  url.pathname = `/${name}`;
  try {
    return await fn(url.toString());
  } finally {
    await admin(`drop database if exists ${name} with (force)`);
  }
}
