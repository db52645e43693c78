/**
 * GET /v1/shoppers/{ref}/balance on PostgreSQL for 10,000 shoppers with points (two lots each, one
 * expiring within 30 days, so every answer lists `expiringSoon`), each request a random shopper
 * reading its own balance with its own token (`loyalty:read`, `shopper_ref` claim).
 *
 * Baseline: the express JSON echo receiving the same GETs (same paths, same tokens). As a second
 * figure, in the notes: pgbench on the same database running the statements one request runs
 * (shopper exists, merge lookup, account row, lots expiring soon), sequentially where the service
 * runs the last two in parallel on two pooled connections.
 */
import { randomBytes, randomInt } from 'node:crypto';
import knexFactory from 'knex';
import { measure, type Measurement } from '../lib/load.js';
import { seedLoyalty, shopperRef, shopperRefSql, shopperTokens } from '../lib/loyalty.js';
import { pgbench } from '../lib/pgbench.js';
import { withTempPostgres } from '../lib/postgres.js';
import type { LoadOptions, Scenario, ScenarioResult } from '../lib/scenario.js';
import { startEcho, startService, withTempDir } from '../lib/servers.js';

const SHOPPERS = 10_000;

/**
 * What one balance request runs, as knex sends it (loyalty/ledger-store.ts balanceRow,
 * shoppers/shopper-store.ts findShopperAndSurvivor).
 */
function balanceScript(shoppers: number): string {
  const ref = shopperRefSql(':k');
  return `\\set k random(1, ${shoppers})
select "m"."survivor_ref" from "shoppers" as "s" left join "shopper_merges" as "m" on "m"."merged_ref" = "s"."shopper_ref"
  where "s"."shopper_ref" = ${ref} limit 1;
select coalesce(a.available, 0) as available, coalesce(a.pending, 0) as pending,
       coalesce(a.lifetime_earned, 0) as lifetime_earned,
       (select coalesce(json_agg(json_build_object('remaining', l.remaining, 'expires_at', l.expires_at)), '[]')
          from loyalty_lots l
         where l.shopper_ref = ${ref} and l.remaining > 0 and l.expires_at <= now() + interval '30 days') as lots
  from (select 1) as one left join loyalty_accounts a on a.shopper_ref = ${ref};
`;
}

async function runBalance(load: LoadOptions): Promise<ScenarioResult> {
  return withTempDir((dir) =>
    withTempPostgres(async (databaseUrl) => {
      // The service migrates the fresh database on start; the seed goes in after that.
      const service = await startService(dir, {
        DATABASE_URL: databaseUrl,
        MASTER_KEY: randomBytes(32).toString('base64'),
        DB_POOL_MAX: '10',
      });
      const echo = await startEcho(dir);
      const knex = knexFactory({ client: 'pg', connection: databaseUrl, pool: { min: 0, max: 2 } });
      try {
        const seeded = await seedLoyalty(knex, { shoppers: SHOPPERS, lotsPerShopper: 2, pointsPerLot: 500 });
        const signed = await shopperTokens(service.dataDir, SHOPPERS, ['loyalty:read']);

        // Sanity: one shopper's answer is what the seed says (a wrong seed would measure a 404 path).
        const probe = await fetch(`${service.url}/v1/shoppers/${shopperRef(1)}/balance`, {
          headers: { authorization: `Bearer ${signed.tokens[0] ?? ''}` },
        });
        const balance = (await probe.json()) as { available?: number; expiringSoon?: unknown[] };
        if (probe.status !== 200 || balance.available !== 1000 || balance.expiringSoon?.length !== 1) {
          throw new Error(`balance probe: ${probe.status} ${JSON.stringify(balance)}`);
        }

        const nextRequest = () => {
          const n = 1 + randomInt(SHOPPERS);
          return {
            path: `/v1/shoppers/${shopperRef(n)}/balance`,
            headers: { authorization: `Bearer ${signed.tokens[n - 1] ?? ''}` },
          };
        };
        // Baseline first, then target, each with its own warm-up; both get the same requests.
        const baseline = await measure({ label: 'express JSON echo', url: echo.url, nextRequest, server: echo }, load);
        const target = await measure(
          { label: 'GET /v1/shoppers/…/balance', url: service.url, nextRequest, server: service },
          load,
        );
        await service.stop();
        await echo.stop();

        const sql = await pgbench(
          'pgbench, same 2 selects',
          databaseUrl,
          [{ name: 'balance', sql: balanceScript(SHOPPERS), weight: 1 }],
          load,
          dir,
        );
        return {
          target,
          baseline,
          notes: [
            `service: node dist/src/main.js on PostgreSQL (fresh database), pool 10, LOG_LEVEL=${service.logLevel}`,
            `${seeded.shoppers} shoppers, ${seeded.lots} lots (one expiring within 30 days each), seeded set-based in ${seeded.milliseconds} ms`,
            `each request: a random shopper's balance with its own token; ${signed.tokens.length} tokens pre-signed in ${signed.milliseconds} ms`,
            'baseline: bench/servers/echo.ts, express 5 echo, same paths and headers',
            `second baseline: ${describe(sql)}; target = ${ratio(target, sql)}`,
            '  (pgbench -M extended runs the access check and the balance statement, as the service does)',
          ],
        };
      } finally {
        await knex.destroy();
        await echo.stop();
        await service.stop();
      }
    }),
  );
}

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function describe(m: Measurement): string {
  const latency =
    m.latencyMs === undefined ? '' : `, p50 ${fmt(m.latencyMs.p50, 1)} ms, p99 ${fmt(m.latencyMs.p99, 1)} ms`;
  return `${m.label} ${fmt(m.requestsPerSecond)} tx/s${latency}`;
}

function ratio(target: Measurement, baseline: Measurement): string {
  const throughput = target.requestsPerSecond / baseline.requestsPerSecond;
  if (target.latencyMs === undefined || baseline.latencyMs === undefined)
    return `throughput ${throughput.toFixed(2)} × that`;
  const p99 = target.latencyMs.p99 / Math.max(baseline.latencyMs.p99, 0.001);
  return `throughput ${throughput.toFixed(2)} × that, p99 ${p99.toFixed(2)} × that`;
}

export const balance: Scenario = {
  name: 'balance',
  description: 'GET /v1/shoppers/{ref}/balance, 10,000 shoppers (PostgreSQL) vs express echo; pgbench in notes',
  run: runBalance,
};
