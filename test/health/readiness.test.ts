import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { createLocalJWKSet } from 'jose';
import { createAuthenticator } from '../../src/auth/authenticator.js';
import { authHandlers } from '../../src/http/principal-handlers.js';
import { createDatabase, type Database } from '../../src/db/database.js';
import { createReadiness, healthHandlers } from '../../src/health/health-handlers.js';
import { createApp } from '../../src/http/app.js';
import { loadApiSpec } from '../../src/http/openapi.js';
import { TEST_AUDIENCE, TEST_ISSUER, testJwks } from '../support/auth.js';
import { testDbConfig, usingPostgres } from '../support/database.js';
import { send, startTestService, type TestResponse, type TestService } from '../support/harness.js';
import { captureLogs } from '../support/log-capture.js';

function expectNotReady(res: TestResponse, checks: Record<string, string>): void {
  expect(res.status, res.text).to.equal(503);
  expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
  expect(res.headers.get('retry-after')).to.equal('2');
  expect(res.body.code).to.equal('NOT_READY');
  expect(res.body.checks).to.deep.equal(checks);
}

/**
 * The real contract and health handlers over a database that cannot be reached. Built with createApp,
 * not buildService, because the service (rightly) refuses to start when migrations cannot run.
 */
async function startOn(database: Database): Promise<{ url: string; close(): Promise<void> }> {
  const spec = loadApiSpec();
  const readiness = createReadiness({ ping: (ms) => database.ping(ms), isDraining: () => false });
  const app = createApp({
    spec,
    // Operations other than health are not under test here; reaching one fails the test loudly.
    handlers: {
      ...Object.fromEntries(
        spec.operations.map((o) => [
          o.operationId,
          () => {
            throw new Error(`${o.operationId} is not under test`);
          },
        ]),
      ),
      ...healthHandlers(readiness, spec.yamlText),
      ...authHandlers(),
    },
    authenticator: createAuthenticator(
      {
        issuer: TEST_ISSUER,
        audience: TEST_AUDIENCE,
        keys: { source: 'static', jwks: await testJwks() },
        algorithms: ['ES256'],
        clockToleranceSeconds: 30,
        maxTokenAgeSeconds: 86_400,
      },
      createLocalJWKSet(await testJwks()),
    ),
    // The webhook operations declare a signature step; a scheme must exist for each (else no start).
    signatures: Object.fromEntries(
      spec.operations.flatMap((o) => {
        const scheme = o.raw['x-webhook-signature'];
        return typeof scheme === 'string'
          ? [
              [
                scheme,
                {
                  refuseSensitiveAuthenticationData: true,
                  verifyBytes: () => {
                    throw new Error(`${scheme} is not under test`);
                  },
                },
              ],
            ]
          : [];
      }),
    ),
    logger: captureLogs().logger,
    bodyLimitBytes: 1024,
    trustProxy: false,
    enforceResponseContract: true,
  });
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe(`readiness and liveness (${usingPostgres ? 'PostgreSQL' : 'embedded PGlite'})`, () => {
  describe('with the real service', () => {
    let svc: TestService;

    beforeEach(async () => {
      svc = await startTestService();
    });
    afterEach(() => svc.close());

    it('when the database answers, then /readyz is 200 with every check up', async () => {
      const res = await svc.request('GET', '/readyz');
      expect(res.status, res.text).to.equal(200);
      expect(res.body).to.deep.equal({ status: 'ready', checks: { database: 'up', process: 'up', masterKey: 'up' } });
    });

    it('when the database handle is closed, then /readyz is 503 NOT_READY and /healthz stays 200', async () => {
      await svc.db.close();
      expectNotReady(await svc.request('GET', '/readyz'), { database: 'down', process: 'up', masterKey: 'up' });
      const health = await svc.request('GET', '/healthz');
      expect(health.status).to.equal(200);
      expect(health.body).to.deep.equal({ status: 'ok' });
    });

    it('when the service is draining for shutdown, then /readyz is 503 with process down', async () => {
      svc.service.startDraining();
      expectNotReady(await svc.request('GET', '/readyz'), { database: 'up', process: 'down', masterKey: 'up' });
      expect((await svc.request('GET', '/healthz')).status).to.equal(200);
    });
  });

  describe('when PostgreSQL cannot be reached (nothing listens on the port)', () => {
    let database: Database;
    let app: { url: string; close(): Promise<void> };
    const captured = captureLogs();

    before(async () => {
      database = createDatabase(testDbConfig('postgres://postgres@127.0.0.1:1/unreachable'), captured.logger);
      app = await startOn(database);
    });
    after(async () => {
      await app.close();
      await database.close();
    });

    it('then /readyz is 503 NOT_READY with the database down', async () => {
      expectNotReady(await send(app.url, 'GET', '/readyz'), { database: 'down', process: 'up', masterKey: 'up' });
    });

    it('then /healthz is still 200: the process itself is alive', async () => {
      const res = await send(app.url, 'GET', '/healthz');
      expect(res.status).to.equal(200);
    });

    it('then the driver error goes to the JSON log, not to the console past the masker', async () => {
      expectNotReady(await send(app.url, 'GET', '/readyz'), { database: 'down', process: 'up', masterKey: 'up' });
      const knexLines = captured.lines().filter((l) => l['component'] === 'knex');
      expect(knexLines).not.to.be.empty;
      expect(knexLines[0]).to.include({ level: 'warn' });
      expect(String(knexLines[0]!['msg'])).to.contain('Acquire connection error');
    });

    it('then the error body holds neither the connection URL nor the driver error', async () => {
      const res = await send(app.url, 'GET', '/readyz');
      expect(res.text).not.to.contain('127.0.0.1:1');
      expect(res.text).not.to.contain('ECONNREFUSED');
    });
  });
});
