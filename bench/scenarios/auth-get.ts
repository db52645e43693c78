/**
 * An authenticated GET through the whole HTTP chain (request id, helmet, bearer JWT verification
 * with EdDSA, scope check, contract validation, handler, request log line) against the smallest
 * express JSON echo: what the foundation costs per request before any feature adds work.
 */
import { loadConfig } from '../../src/config/config.js';
import { issueDevToken } from '../../src/cli/token.js';
import { measure } from '../lib/load.js';
import type { Scenario } from '../lib/scenario.js';
import { startEcho, startService, withTempDir } from '../lib/servers.js';

export const authGet: Scenario = {
  name: 'auth-get',
  description: 'authenticated GET /v1/whoami vs an express 5 JSON echo',
  run: (load) =>
    withTempDir(async (dir) => {
      const service = await startService(dir);
      const echo = await startEcho(dir);
      try {
        // The service created its development signing key in DATA_DIR; sign with the same key.
        const token = await issueDevToken(loadConfig({ NODE_ENV: 'development', DATA_DIR: service.dataDir }), {
          scopes: ['bench:read'],
          subject: 'bench',
          ttlSeconds: 3600,
        });
        const headers = { authorization: `Bearer ${token}` };
        // Baseline first, then target, each with its own warm-up; both get the same header bytes.
        const baseline = await measure(
          { label: 'express JSON echo', url: `${echo.url}/v1/whoami`, headers, server: echo },
          load,
        );
        const target = await measure(
          { label: 'GET /v1/whoami', url: `${service.url}/v1/whoami`, headers, server: service },
          load,
        );
        return {
          target,
          baseline,
          notes: [
            `service: node dist/src/main.js, embedded PGlite, development issuer (EdDSA), LOG_LEVEL=${service.logLevel}`,
            'baseline: bench/servers/echo.ts, express 5 with no middleware, answering the same path and headers',
          ],
        };
      } finally {
        await echo.stop();
        await service.stop();
      }
    }),
};
