/**
 * The HTTP layer (createApp) on port 0, built from the test-only contract in
 * `test/fixtures/http-test-api.yaml`, with the real authenticator trusting the test issuer.
 */
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createLocalJWKSet } from 'jose';
import { createAuthenticator } from '../../src/auth/authenticator.js';
import { createApp } from '../../src/http/app.js';
import { loadApiSpec, type ApiSpec } from '../../src/http/openapi.js';
import { validInput, type HandlerMap } from '../../src/http/types.js';
import { TEST_AUDIENCE, TEST_ISSUER, testJwks } from './auth.js';
import { send, type RequestOptions, type TestResponse } from './harness.js';
import { captureLogs } from './log-capture.js';

export const HTTP_TEST_SPEC_FILE = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  'fixtures',
  'http-test-api.yaml',
);

export const TEST_BODY_LIMIT_BYTES = 1024;

/** Text of the error the `explode` handler throws: internals that must never reach a client. */
export const INTERNAL_ERROR_MESSAGE = 'pool exhausted for postgres://svc:hunter2@db.internal/loyalty';

export function httpTestHandlers(): HandlerMap {
  return {
    listThings(req, res) {
      const { limit } = validInput(req).query;
      res.json({ limit: limit ?? null, limitType: typeof limit });
    },
    createThing(req, res) {
      const body = validInput(req).body as { name: string; amount: number };
      res.status(201).json({ thingId: validInput(req).path['thingId'], name: body.name, amount: body.amount });
    },
    getThing(req, res) {
      res.json({ thingId: validInput(req).path['thingId'] });
    },
    explode() {
      throw new Error(INTERNAL_ERROR_MESSAGE);
    },
    breakContract(_req, res) {
      res.json({ ok: 'not a boolean', leaked: 'internal' });
    },
  };
}

export interface HttpTestApp {
  readonly url: string;
  readonly spec: ApiSpec;
  logs(): string;
  request(method: string, path: string, init?: RequestOptions): Promise<TestResponse>;
  close(): Promise<void>;
}

export async function startHttpTestApp(): Promise<HttpTestApp> {
  const spec = loadApiSpec(HTTP_TEST_SPEC_FILE);
  const captured = captureLogs();
  const authenticator = createAuthenticator(
    {
      issuer: TEST_ISSUER,
      audience: TEST_AUDIENCE,
      keys: { source: 'static', jwks: await testJwks() },
      algorithms: ['ES256', 'EdDSA', 'RS256', 'PS256'],
      clockToleranceSeconds: 30,
      maxTokenAgeSeconds: 86_400,
    },
    createLocalJWKSet(await testJwks()),
  );
  const app = createApp({
    spec,
    handlers: httpTestHandlers(),
    authenticator,
    logger: captured.logger,
    bodyLimitBytes: TEST_BODY_LIMIT_BYTES,
    trustProxy: false,
    enforceResponseContract: true,
  });
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    spec,
    logs: () => captured.text(),
    request: (method, p, init) => send(url, method, p, init),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
