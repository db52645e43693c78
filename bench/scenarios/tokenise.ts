/**
 * POST /v1/tokens on PostgreSQL, against the express JSON echo receiving the same body.
 *
 * - tokenise-known: one card, seen before: fingerprint lookup under every readable MAC version (one
 *   indexed select joining the card) and no write. The aim is ≥ 50% of the echo's throughput.
 * - tokenise-new: a new card every request: AES-GCM + HMAC, one transaction inserting shopper, card,
 *   identifier and fingerprint rows, one commit (fsync) each.
 * - tokenise-pkcs11: new cards, the service with its master key in a SoftHSM2 token (target) against
 *   the same service with the master key in MASTER_KEY (baseline), each on a fresh database. The data
 *   keys are unwrapped once into the key ring, so the hot path should not touch the token: the ratio
 *   should be about 1.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { createMasterKeyInToken } from '../../src/keys/master-key-sources/pkcs11.js';
import { createSoftHsmToken } from '../../test/support/softhsm.js';
import { loadConfig } from '../../src/config/config.js';
import { issueDevToken } from '../../src/cli/token.js';
import { luhnValid } from '../../src/cards/luhn.js';
import { measure } from '../lib/load.js';
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

export const tokenisePkcs11: Scenario = {
  name: 'tokenise-pkcs11',
  description: 'POST /v1/tokens, new cards: master key in a SoftHSM2 token vs in MASTER_KEY (PostgreSQL)',
  run: (load) =>
    withTempDir(async (dir) => {
      const token = createSoftHsmToken('lv-bench');
      try {
        await createMasterKeyInToken(token.settings, 'lv-bench-kek');
        const baseline = await measureNewCards(
          dir,
          'MASTER_KEY (env)',
          { MASTER_KEY: randomBytes(32).toString('base64') },
          load,
        );
        const tokenEnv = Object.fromEntries(
          Object.entries(token.env('lv-bench-kek')).filter((e): e is [string, string] => e[1] !== undefined),
        );
        const target = await measureNewCards(
          dir,
          'PKCS#11 (SoftHSM2)',
          { ...tokenEnv, SOFTHSM2_CONF: process.env['SOFTHSM2_CONF'] ?? '' },
          load,
        );
        return {
          target,
          baseline,
          notes: [
            'both: node dist/src/main.js on a fresh PostgreSQL database, pool 10, a new card every request',
            'target: MASTER_KEY_SOURCE=pkcs11 (SoftHSM2); baseline: MASTER_KEY; data keys cached in the key ring',
          ],
        };
      } finally {
        token.remove();
      }
    }),
};
