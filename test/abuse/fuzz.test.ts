/**
 * Abuse: hostile requests to every operation of openapi.yaml. The answer is never a 5xx.
 */
import { expect } from 'chai';
import { loadApiSpec } from '../../src/http/openapi.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { rawRequest } from '../support/raw-request.js';

const PAN = '4111111111111111';

describe('Abuse: OpenAPI-driven fuzzing of every operation', function () {
  this.timeout(180_000);
  const operations = loadApiSpec().operations;
  let svc: TestService;

  before(async () => {
    svc = await startTestService();
  });
  after(() => svc?.close());

  describe('regressions the fuzzer found', () => {
    const withPathParameter = operations.filter((o) => o.pathTemplate.includes('{'));
    const withNumericQuery = operations.filter((o) =>
      [...((o.raw['parameters'] ?? []) as Record<string, unknown>[])].some(
        (p) => p['$ref'] === '#/components/parameters/Limit',
      ),
    );

    it('when a path segment is not valid percent-encoding, then every operation answers 400 VALIDATION_FAILED, not 500', async () => {
      expect(withPathParameter).not.to.be.empty;
      const admin = await signToken({ scope: 'loyalty:admin tokens:read tokens:write tokens:detokenise' });
      for (const op of withPathParameter) {
        for (const segment of ['%ZZ', '%E0%A4%A', '%C0%AE', `${PAN}%`]) {
          for (const token of [admin, undefined]) {
            const path = op.pathTemplate.replace(/\{[^}]+\}/g, segment);
            const res = await rawRequest(svc.url, {
              method: op.method.toUpperCase(),
              path,
              headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
            });
            expect(res.status, `${op.operationId} ${path}: ${res.text}`).to.equal(400);
            expect(JSON.parse(res.text)).to.include({ code: 'VALIDATION_FAILED' });
            expect(res.text).not.to.contain(PAN);
          }
        }
      }
      expect(svc.logs()).not.to.contain('Failed to decode param');
    });

    it('when a numeric query parameter is Infinity, then 400 VALIDATION_FAILED, not an unbounded page', async () => {
      expect(withNumericQuery.map((o) => o.operationId)).to.include('listWebhookInbox');
      const admin = await signToken({ scope: 'loyalty:admin' });
      for (const op of withNumericQuery) {
        for (const value of ['Infinity', '-Infinity', '1e400']) {
          const path = `${op.pathTemplate.replace(/\{[^}]+\}/g, 'shp_aaaaaaaaaaaaaaaaaaaaaaaaaa')}?limit=${value}`;
          const res = await rawRequest(svc.url, {
            method: op.method.toUpperCase(),
            path,
            headers: { authorization: `Bearer ${admin}` },
          });
          expect(res.status, `${op.operationId} ${path}: ${res.text}`).to.equal(400);
          const problem = JSON.parse(res.text) as { code: string; errors: { pointer: string }[] };
          expect(problem.code).to.equal('VALIDATION_FAILED');
          expect(problem.errors.map((e) => e.pointer)).to.deep.equal(['/query/limit']);
        }
      }
    });
  });
});
