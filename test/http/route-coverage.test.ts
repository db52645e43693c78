import http from 'node:http';
import { expect } from 'chai';
import type { Express } from 'express';
import { createLocalJWKSet } from 'jose';
import { createAuthenticator } from '../../src/auth/authenticator.js';
import { createApp } from '../../src/http/app.js';
import { loadApiSpec } from '../../src/http/openapi.js';
import { testJwks } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { HTTP_TEST_SPEC_FILE, httpTestHandlers } from '../support/http-test-app.js';
import { captureLogs } from '../support/log-capture.js';

interface RouteLayer {
  readonly route?: { readonly path: unknown; readonly methods: Readonly<Record<string, boolean>> };
  /** A mounted router (the API reference's): its routes are served too. */
  readonly handle?: { readonly stack?: readonly RouteLayer[] };
}

/** The one router outside the contract: the rendered reference (src/http/api-reference.ts, ADR 0009). */
const API_REFERENCE_ROUTES = ['GET /', 'GET /docs/', 'GET /docs', 'GET /docs/init.js', 'GET /docs/scalar.js'];

/**
 * "GET /v1/whoami" for every route the express app serves, except the 405 catch-alls: express 5's
 * `app.all` registers a route for every method node knows (router's own `route.all` sets `_all`).
 */
function servedRoutes(app: Express): string[] {
  return routesOf((app as unknown as { router: { stack: readonly RouteLayer[] } }).router.stack);
}

function routesOf(stack: readonly RouteLayer[]): string[] {
  const served: string[] = [];
  for (const layer of stack) {
    if (layer.route === undefined) {
      served.push(...routesOf(layer.handle?.stack ?? []));
      continue;
    }
    const { path, methods } = layer.route;
    if (methods['_all'] === true || http.METHODS.every((m) => methods[m.toLowerCase()] === true)) continue;
    expect(path, 'routes are plain strings from openapi.yaml').to.be.a('string');
    for (const [method, on] of Object.entries(methods)) if (on) served.push(`${method.toUpperCase()} ${String(path)}`);
  }
  return served;
}

describe('OpenAPI route coverage', () => {
  let svc: TestService;

  before(async () => {
    svc = await startTestService();
  });
  after(() => svc.close());

  const documented = (): string[] =>
    svc.service.spec.operations.map(
      (op) => `${op.method.toUpperCase()} ${op.pathTemplate.replace(/\{([^}]+)\}/g, ':$1')}`,
    );

  it('when the service is built, then every documented operation is served', () => {
    expect(documented()).not.to.be.empty;
    expect(servedRoutes(svc.service.app)).to.include.members(documented());
  });

  it('when the service is built, then every served route is documented, each once, besides the API reference', () => {
    const served = servedRoutes(svc.service.app);
    expect(served).to.have.members([...documented(), ...API_REFERENCE_ROUTES]);
    expect(new Set(served).size).to.equal(served.length);
  });

  it('when operations are read, then they are exactly those of openapi.yaml', () => {
    const paths = svc.service.spec.document['paths'] as Record<string, Record<string, unknown>>;
    const fromYaml = Object.entries(paths).flatMap(([p, item]) =>
      ['get', 'put', 'post', 'delete', 'patch'].filter((m) => m in item).map((m) => `${m.toUpperCase()} ${p}`),
    );
    expect(svc.service.spec.operations.map((op) => `${op.method.toUpperCase()} ${op.pathTemplate}`)).to.have.members(
      fromYaml,
    );
  });

  it('when GET /openapi.yaml is called, then it serves the document the service validates against', async () => {
    const res = await svc.request('GET', '/openapi.yaml');
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.match(/^application\/yaml/);
    expect(res.text).to.equal(loadApiSpec().yamlText);
  });

  describe('when handlers and the contract disagree, then the app refuses to start', () => {
    const build = async (handlers: Parameters<typeof createApp>[0]['handlers']): Promise<Express> =>
      createApp({
        spec: loadApiSpec(HTTP_TEST_SPEC_FILE),
        handlers,
        authenticator: createAuthenticator(
          {
            issuer: 'i',
            audience: 'a',
            keys: { source: 'static', jwks: await testJwks() },
            algorithms: ['ES256'],
            clockToleranceSeconds: 0,
            maxTokenAgeSeconds: 86_400,
          },
          createLocalJWKSet(await testJwks()),
        ),
        logger: captureLogs().logger,
        bodyLimitBytes: 1024,
        trustProxy: false,
        enforceResponseContract: false,
      });

    it('when a documented operation has no handler, then it is named', async () => {
      const { explode: _omitted, ...handlers } = httpTestHandlers();
      expect(_omitted).to.be.a('function');
      let error: unknown;
      await build(handlers).catch((e: unknown) => (error = e));
      expect(String(error)).to.contain('explode is documented but has no handler');
    });

    it('when a handler has no documented operation, then it is named', async () => {
      let error: unknown;
      await build({ ...httpTestHandlers(), deleteEverything: () => undefined }).catch((e: unknown) => (error = e));
      expect(String(error)).to.contain('deleteEverything has a handler but is not documented');
    });

    it('when they agree, then the served routes are exactly the documented ones', async () => {
      const app = await build(httpTestHandlers());
      expect(servedRoutes(app)).to.have.members([
        ...API_REFERENCE_ROUTES,
        'GET /things',
        'POST /things/:thingId',
        'GET /things/:thingId',
        'GET /boom',
        'GET /contract-breach',
      ]);
    });

    it('when a route is added outside the contract, then the introspection sees it', async () => {
      const app = await build(httpTestHandlers());
      app.get('/debug/dump', () => undefined);
      expect(servedRoutes(app)).to.include('GET /debug/dump');
    });
  });
});
