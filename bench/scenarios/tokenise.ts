/**
 * POST /v1/tokens on PostgreSQL, against the express JSON echo receiving the same body.
 *
 * - tokenise-known: one card, seen before: fingerprint lookup under every readable MAC version (one
 *   indexed select joining the card) and no write. The aim is ≥ 50% of the echo's throughput.
 * - tokenise-new: a new card every request: AES-GCM + HMAC, one transaction inserting shopper, card,
 *   identifier and fingerprint rows, one commit (fsync) each.
 * - tokenise-pkcs11: new cards, the service with its master key in a SoftHSM2 token (target) against
 *   the same service with the master key in MASTER_KEY (baseline), each run on a fresh database, the
 *   sides alternated and repeated (env, pkcs11, pkcs11, env) with each side's spread reported. The
 *   data keys are unwrapped once into the key ring, so the hot path should not touch the token: the
 *   ratio should be about 1, within the spread.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { createMasterKeyInToken } from '../../src/keys/master-key-sources/pkcs11.js';
import { createSoftHsmToken } from '../../test/support/softhsm.js';
import { loadConfig } from '../../src/config/config.js';
import { issueDevToken } from '../../src/cli/token.js';
import { luhnValid } from '../../src/cards/luhn.js';
import { measure, type Measurement } from '../lib/load.js';
import type { LoadOptions, Scenario, ScenarioResult } from '../lib/scenario.js';
import { withTempPostgres } from '../lib/postgres.js';
import { startEcho, startService, withTempDir } from '../lib/servers.js';

/** A Luhn-valid number under a test BIN, made in memory for the run and never written anywhere. */
function randomPan(): string {
  let body = '411111';
  while (body.length < 15) body += String(randomInt(10));
  for (let d = 0; ; d++) if (luhnValid(body + d)) return body + d;
}

async function runTokenise(load: LoadOptions, kind: 'known' | 'new'): Promise<ScenarioResult> {
  return withTempDir((dir) =>
    withTempPostgres(async (databaseUrl) => {
      const service = await startService(dir, {
        DATABASE_URL: databaseUrl,
        MASTER_KEY: randomBytes(32).toString('base64'),
        DB_POOL_MAX: '10',
      });
      const echo = await startEcho(dir);
      try {
        const token = await issueDevToken(loadConfig({ NODE_ENV: 'development', DATA_DIR: service.dataDir }), {
          scopes: ['tokens:write'],
          subject: 'bench',
          ttlSeconds: 3600,
        });
        const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
        const known = JSON.stringify({ pan: randomPan(), expiryMonth: 12, expiryYear: 2030 });
        const seed = await fetch(`${service.url}/v1/tokens`, { method: 'POST', headers, body: known });
        if (seed.status !== 201) throw new Error(`seeding the known card failed with ${seed.status}`);
        const body = kind === 'known' ? { body: known } : { nextBody: () => JSON.stringify({ pan: randomPan() }) };
        const baseline = await measure(
          { label: 'express JSON echo', url: `${echo.url}/v1/tokens`, method: 'POST', headers, ...body, server: echo },
          load,
        );
        const target = await measure(
          {
            label: `POST /v1/tokens (${kind} card)`,
            url: `${service.url}/v1/tokens`,
            method: 'POST',
            headers,
            ...body,
            server: service,
          },
          load,
        );
        return {
          target,
          baseline,
          notes: [
            `service: node dist/src/main.js on PostgreSQL (fresh database), pool 10, LOG_LEVEL=${service.logLevel}`,
            kind === 'known'
              ? 'every request tokenises the same, already known card: lookup only, no write'
              : 'every request tokenises a new card: encrypt, MAC, one transaction and commit',
            'baseline: bench/servers/echo.ts, express 5 echo, same method, headers and body',
          ],
        };
      } finally {
        await echo.stop();
        await service.stop();
      }
    }),
  );
}

export const tokeniseKnown: Scenario = {
  name: 'tokenise-known',
  description: 'POST /v1/tokens for a known card (PostgreSQL) vs express echo',
  run: (load) => runTokenise(load, 'known'),
};

export const tokeniseNew: Scenario = {
  name: 'tokenise-new',
  description: 'POST /v1/tokens for a new card each request (PostgreSQL) vs express echo',
  run: (load) => runTokenise(load, 'new'),
};

/** One service on a fresh database with the given master-key settings, measured on new cards. */
async function measureNewCards(dir: string, label: string, masterKeyEnv: Record<string, string>, load: LoadOptions) {
  return withTempPostgres(async (databaseUrl) => {
    const service = await startService(dir, { DATABASE_URL: databaseUrl, DB_POOL_MAX: '10', ...masterKeyEnv });
    try {
      const token = await issueDevToken(loadConfig({ NODE_ENV: 'development', DATA_DIR: service.dataDir }), {
        scopes: ['tokens:write'],
        subject: 'bench',
        ttlSeconds: 3600,
      });
      const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
      return await measure(
        {
          label,
          url: `${service.url}/v1/tokens`,
          method: 'POST',
          headers,
          nextBody: () => JSON.stringify({ pan: randomPan() }),
          server: service,
        },
        load,
      );
    } finally {
      await service.stop();
    }
  });
}

/**
 * The order of the runs of tokenise-pkcs11: each side twice, alternated (ABBA), so that neither side
 * always runs first (cold disk, page cache, the shared machine's load at that minute). One run of
 * each once put the token side 38% faster than the env side, which only the order and the noise can
 * explain (both serve from the same in-memory key ring).
 */
const PKCS11_RUN_ORDER = ['env', 'pkcs11', 'pkcs11', 'env'] as const;

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** One side's runs as one measurement: medians of throughput and latencies, sums of counts. */
function combined(label: string, runs: readonly Measurement[]): Measurement {
  const latencies = runs.map((r) => r.latencyMs).filter((l) => l !== undefined);
  const peaks = runs.map((r) => r.peakRssMiB).filter((m) => m !== undefined);
  return {
    label: `${label}, median of ${runs.length} runs`,
    requestsPerSecond: median(runs.map((r) => r.requestsPerSecond)),
    ...(latencies.length === runs.length
      ? {
          latencyMs: {
            p50: median(latencies.map((l) => l.p50)),
            p90: median(latencies.map((l) => l.p90)),
            p99: median(latencies.map((l) => l.p99)),
            max: Math.max(...latencies.map((l) => l.max)),
          },
        }
      : {}),
    requests: runs.reduce((n, r) => n + r.requests, 0),
    durationSeconds: runs.reduce((n, r) => n + r.durationSeconds, 0),
    non2xx: runs.reduce((n, r) => n + r.non2xx, 0),
    errors: runs.reduce((n, r) => n + r.errors, 0),
    ...(peaks.length === 0 ? {} : { peakRssMiB: Math.max(...peaks) }),
  };
}

/** min–max of a side's throughput and its width relative to the median. */
function spread(runs: readonly Measurement[]): string {
  const rps = runs.map((r) => r.requestsPerSecond);
  const low = Math.min(...rps);
  const high = Math.max(...rps);
  return `${low.toFixed(0)}–${high.toFixed(0)} req/s (±${((100 * (high - low)) / 2 / median(rps)).toFixed(0)}% of the median)`;
}

export const tokenisePkcs11: Scenario = {
  name: 'tokenise-pkcs11',
  description:
    'POST /v1/tokens, new cards: master key in a SoftHSM2 token vs in MASTER_KEY, alternated env, pkcs11, pkcs11, env (PostgreSQL)',
  run: (load) =>
    withTempDir(async (dir) => {
      const token = createSoftHsmToken('lv-bench');
      try {
        await createMasterKeyInToken(token.settings, 'lv-bench-kek');
        const tokenEnv = Object.fromEntries(
          Object.entries(token.env('lv-bench-kek')).filter((e): e is [string, string] => e[1] !== undefined),
        );
        const sides = {
          env: { label: 'MASTER_KEY (env)', env: () => ({ MASTER_KEY: randomBytes(32).toString('base64') }) },
          pkcs11: {
            label: 'PKCS#11 (SoftHSM2)',
            env: () => ({ ...tokenEnv, SOFTHSM2_CONF: process.env['SOFTHSM2_CONF'] ?? '' }),
          },
        };
        const runs: Record<keyof typeof sides, Measurement[]> = { env: [], pkcs11: [] };
        const sequence: string[] = [];
        for (const side of PKCS11_RUN_ORDER) {
          const measured = await measureNewCards(dir, sides[side].label, sides[side].env(), load);
          runs[side].push(measured);
          sequence.push(`${side} ${measured.requestsPerSecond.toFixed(0)}`);
        }
        return {
          target: combined(sides.pkcs11.label, runs.pkcs11),
          baseline: combined(sides.env.label, runs.env),
          notes: [
            'both: node dist/src/main.js on a fresh PostgreSQL database per run, pool 10, a new card every request',
            'target: MASTER_KEY_SOURCE=pkcs11 (SoftHSM2); baseline: MASTER_KEY; data keys cached in the key ring',
            `runs in order (req/s): ${sequence.join(', ')}; each side's figure is the median of its runs`,
            `spread: env ${spread(runs.env)}; pkcs11 ${spread(runs.pkcs11)}. A ratio inside the spread is no difference`,
          ],
        };
      } finally {
        token.remove();
      }
    }),
};
