/**
 * Soak: signed webhook deliveries (each a new payment, on 2,000 cards) and known-card lookups, 3:1,
 * against the service on PostgreSQL for SOAK_MINUTES (default 10) minutes, in one-minute windows.
 * The service's RSS is sampled every 2 s: per window, its floor (what survives garbage collection)
 * must stay flat (no cache, map or listener growing with traffic), and throughput with it.
 *
 * Not part of a plain `npm run bench` (it alone takes longer than the whole bench): run it by name,
 * `npm run bench -- soak`. Target: the last window; baseline: the first window, same run. A ratio
 * near 1.0 says the service is as fast at the end as at the start.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { issueDevToken } from '../../src/cli/token.js';
import { loadConfig } from '../../src/config/config.js';
import { measure, type Measurement } from '../lib/load.js';
import { withTempPostgres } from '../lib/postgres.js';
import type { LoadOptions, Scenario, ScenarioResult } from '../lib/scenario.js';
import { startService, withTempDir } from '../lib/servers.js';
import { randomPan, seedKnownCards, signedAuthorisations } from './webhooks.js';

const CARDS = 2_000;
const WINDOW_SECONDS = 60;

async function runSoak(load: LoadOptions): Promise<ScenarioResult> {
  const minutes = Number(process.env['SOAK_MINUTES'] ?? 10);
  if (!Number.isInteger(minutes) || minutes < 2) throw new Error('SOAK_MINUTES must be a whole number >= 2');
  return withTempDir((dir) =>
    withTempPostgres(async (databaseUrl) => {
      const secret = `whsec_${randomBytes(32).toString('base64')}`;
      const service = await startService(dir, {
        DATABASE_URL: databaseUrl,
        MASTER_KEY: randomBytes(32).toString('base64'),
        WEBHOOK_PLATFORM_SECRETS: secret,
      });
      try {
        const pans = Array.from({ length: CARDS }, randomPan);
        await seedKnownCards(service.url, service.dataDir, pans);
        const bearer = await issueDevToken(loadConfig({ NODE_ENV: 'development', DATA_DIR: service.dataDir }), {
          scopes: ['tokens:write'],
          subject: 'bench-soak',
          ttlSeconds: 3600 * 24,
        });
        const delivery = signedAuthorisations(secret, pans);
        let n = 0;
        const nextRequest = () => {
          n += 1;
          if (n % 4 !== 0) return { path: '/v1/webhooks/platform', ...delivery() };
          return {
            path: '/v1/tokens',
            body: JSON.stringify({ pan: pans[randomInt(pans.length)] }),
            headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` },
          };
        };
        const windows: Measurement[] = [];
        // RSS every 2 s; per minute its floor (what survives garbage collection: a leak raises it)
        // and its top (the garbage between collections).
        const rss: { floor: number; top: number }[] = [];
        // Every sample too, for the chart (heap is not sampled: the service reports no heap figure
        // the bench can read cheaply; RSS comes from /proc).
        const series: { seconds: number; rssMiB: number }[] = [];
        const soakStart = Date.now();
        const window = { durationSeconds: WINDOW_SECONDS, warmupSeconds: 0, connections: load.connections };
        for (let w = 0; w < minutes; w++) {
          const samples: number[] = [];
          const sampler = setInterval(() => {
            const now = service.memory()?.rssMiB;
            if (now === undefined) return;
            samples.push(now);
            series.push({
              seconds: Math.round((Date.now() - soakStart) / 100) / 10,
              rssMiB: Math.round(now * 10) / 10,
            });
          }, 2_000);
          try {
            windows.push(
              await measure(
                { label: `minute ${w + 1}`, url: service.url, method: 'POST', nextRequest, server: service },
                window,
              ),
            );
          } finally {
            clearInterval(sampler);
          }
          rss.push({ floor: Math.min(...samples), top: Math.max(...samples) });
          process.stdout.write(
            `  minute ${w + 1}/${minutes}: ${Math.round(windows[w]!.requestsPerSecond)} req/s, ` +
              `RSS ${rss[w]!.floor.toFixed(0)}–${rss[w]!.top.toFixed(0)} MiB\n`,
          );
        }
        const first = windows[0] as Measurement;
        const last = windows[windows.length - 1] as Measurement;
        // Growth of the floor after the first window (JIT, pools and caches fill up during it).
        const slope = leastSquaresSlope(rss.slice(1).map((r) => r.floor));
        return {
          target: { ...last, label: `minute ${minutes} (last)` },
          baseline: { ...first, label: 'minute 1 (first)' },
          memory: {
            samples: series,
            perMinute: rss.map((r, i) => ({ minute: i + 1, floorMiB: r.floor, topMiB: r.top })),
          },
          notes: [
            `service on PostgreSQL, 3 signed webhook deliveries (new payments on ${CARDS} cards) to 1 known-card lookup, ` +
              `${load.connections} connections, ${minutes} × ${WINDOW_SECONDS} s`,
            `RSS per minute, lowest–highest of samples every 2 s (MiB): ${rss.map((r) => `${r.floor.toFixed(0)}–${r.top.toFixed(0)}`).join(', ')}`,
            `RSS floor at the start ${rss[0]!.floor.toFixed(0)} MiB → at the end ${rss[rss.length - 1]!.floor.toFixed(0)} MiB; ` +
              `peak ${last.peakRssMiB?.toFixed(0) ?? '?'} MiB; floor growth after minute 1: ${slope.toFixed(2)} MiB/min`,
          ],
        };
      } finally {
        await service.stop();
      }
    }),
  );
}

function leastSquaresSlope(ys: readonly number[]): number {
  if (ys.length < 2) return 0;
  const n = ys.length;
  const meanX = (n - 1) / 2;
  const meanY = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  ys.forEach((y, x) => {
    num += (x - meanX) * (y - meanY);
    den += (x - meanX) ** 2;
  });
  return num / den;
}

export const soak: Scenario = {
  name: 'soak',
  description: 'webhooks + lookups for SOAK_MINUTES (10) minutes: RSS per minute, last minute vs first',
  optional: true,
  run: runSoak,
};
