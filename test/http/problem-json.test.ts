import { expect } from 'chai';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { ERROR_CATALOG, type ErrorCode } from '../../src/errors/app-error.js';
import { loadApiSpec } from '../../src/http/openapi.js';
import { toAppError } from '../../src/http/problem.js';
import { problemStatus } from '../../src/http/problem-statuses.js';
import { signToken } from '../support/auth.js';
import type { TestResponse } from '../support/harness.js';
import {
  INTERNAL_ERROR_MESSAGE,
  TEST_BODY_LIMIT_BYTES,
  startHttpTestApp,
  type HttpTestApp,
} from '../support/http-test-app.js';
import { rawRequest } from '../support/raw-request.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;
const PAN = '4111111111111111';

/** The Problem schema of the real contract: every error body must match it. */
const problemSchema = (
  (loadApiSpec().document['components'] as Record<string, Record<string, object>>)['schemas'] as Record<string, object>
)['Problem'] as object;
const validateProblem = addFormats(new Ajv2020({ strict: true })).compile(problemSchema);

function expectProblem(res: TestResponse, status: number, code: ErrorCode): void {
  expect(res.status, res.text).to.equal(status);
  expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
  expect(res.body.code).to.equal(code);
  expect(res.body.status).to.equal(status);
  expect(res.body.title).to.equal(ERROR_CATALOG[code].title);
  expect(res.body.type).to.equal(`urn:loyalty-vault:problem:${code.toLowerCase().replace(/_/g, '-')}`);
  expect(res.body.requestId).to.be.a('string').and.equal(res.headers.get('x-request-id'));
  expect(validateProblem(res.body), JSON.stringify(validateProblem.errors)).to.equal(true);
}

function pointersOf(res: TestResponse): string[] {
  return (res.body.errors as { pointer: string }[]).map((e) => e.pointer);
}

describe('HTTP layer: problem+json errors', () => {
  let app: HttpTestApp;
  let writer: string;

  before(async () => {
    app = await startHttpTestApp();
    writer = await signToken({ scope: 'a:write' });
  });
  after(() => app.close());

  const createThing = (body: string, headers: Record<string, string> = {}, path = '/things/thg_abcd') =>
    app.request('POST', path, {
      token: writer,
      body,
      headers: { 'content-type': 'application/json', ...headers },
    });

  it('when the request is valid, then the handler answers with the validated input', async () => {
    const res = await createThing(JSON.stringify({ name: 'Coffee', amount: 3 }));
    expect(res.status, res.text).to.equal(201);
    expect(res.body).to.deep.equal({ thingId: 'thg_abcd', name: 'Coffee', amount: 3 });
  });

  describe('when the body does not match the schema, then 400 VALIDATION_FAILED points at the problem', () => {
    const cases: [string, unknown, string[]][] = [
      ['required fields are missing', {}, ['/body/name', '/body/amount']],
      ['a field has the wrong type', { name: 'Coffee', amount: 'ten' }, ['/body/amount']],
      ['a field breaks its pattern', { name: PAN, amount: 1 }, ['/body/name']],
      ['an unknown property is sent', { name: 'Coffee', amount: 1, [PAN]: 'x' }, ['/body']],
      ['the body is a JSON array', [1, 2], ['/body']],
    ];
    for (const [name, body, pointers] of cases) {
      it(`when ${name}, then the errors point at ${pointers.join(', ')}`, async () => {
        const res = await createThing(JSON.stringify(body));
        expectProblem(res, 400, 'VALIDATION_FAILED');
        expect(pointersOf(res)).to.include.members(pointers);
        for (const issue of res.body.errors as { message: unknown }[]) expect(issue.message).to.be.a('string');
      });
    }

    it('when no body is sent to an operation that requires one, then the error points at /body', async () => {
      const res = await app.request('POST', '/things/thg_abcd', { token: writer });
      expectProblem(res, 400, 'VALIDATION_FAILED');
      expect(pointersOf(res)).to.deep.equal(['/body']);
    });
  });

  describe('when input carries a card number, then the error body never repeats it', () => {
    const cases: [string, unknown][] = [
      ['as a value that fails validation', { name: PAN, amount: 1 }],
      ['as an unknown property name', { name: 'Coffee', amount: 1, [PAN]: 'x' }],
      // The pointer itself would hold the PAN here: the renderer's masking is the safety net.
      ['as a property name inside the pointer', { name: 'Coffee', amount: 1, labels: { [PAN]: 'far too long' } }],
      ['as a number of the wrong type', { name: 'Coffee', amount: Number(PAN) + 0.5 }],
    ];
    for (const [name, body] of cases) {
      it(`when it is sent ${name}, then the 400 body does not contain it`, async () => {
        const res = await createThing(JSON.stringify(body));
        expectProblem(res, 400, 'VALIDATION_FAILED');
        expect(res.text).not.to.contain(PAN);
        expect(res.text).not.to.contain(PAN.slice(0, 12));
      });
    }

    it('when it is sent in malformed JSON, then the 400 body does not contain it', async () => {
      const res = await createThing(`{"name": "${PAN}", "amount": `);
      expectProblem(res, 400, 'MALFORMED_JSON');
      expect(res.text).not.to.contain(PAN);
    });

    it('when it is sent in the path, then the 400 body does not contain it', async () => {
      const res = await createThing(JSON.stringify({ name: 'Coffee', amount: 1 }), {}, `/things/${PAN}`);
      expectProblem(res, 400, 'VALIDATION_FAILED');
      expect(pointersOf(res)).to.deep.equal(['/path/thingId']);
      expect(res.text).not.to.contain(PAN);
    });

    it('when it is sent as an unknown query parameter name, then the 400 body does not contain it', async () => {
      const res = await app.request('GET', `/things?${PAN}=1`);
      expectProblem(res, 400, 'VALIDATION_FAILED');
      expect(res.text).not.to.contain(PAN);
    });
  });

  describe('when the body cannot be read as JSON, then it is refused before validation', () => {
    const cases: [string, string, Record<string, string>, number, ErrorCode][] = [
      ['it is truncated', '{"name": "Coffee", ', {}, 400, 'MALFORMED_JSON'],
      ['it is a bare string (strict JSON)', '"Coffee"', {}, 400, 'MALFORMED_JSON'],
      ['it is plain text', 'name=Coffee', { 'content-type': 'text/plain' }, 415, 'UNSUPPORTED_MEDIA_TYPE'],
      [
        'it is a form',
        'name=Coffee&amount=1',
        { 'content-type': 'application/x-www-form-urlencoded' },
        415,
        'UNSUPPORTED_MEDIA_TYPE',
      ],
      [
        'it is larger than the limit',
        JSON.stringify({ name: 'Coffee', amount: 1, labels: { a: 'x'.repeat(TEST_BODY_LIMIT_BYTES) } }),
        {},
        413,
        'PAYLOAD_TOO_LARGE',
      ],
    ];
    for (const [name, body, headers, status, code] of cases) {
      it(`when ${name}, then ${status} ${code}`, async () => {
        expectProblem(await createThing(body, headers), status, code);
      });
    }

    it('when a body has no content type, then 415 UNSUPPORTED_MEDIA_TYPE', async () => {
      const res = await rawRequest(app.url, {
        method: 'POST',
        path: '/things/thg_abcd',
        headers: { authorization: `Bearer ${writer}` },
        body: JSON.stringify({ name: 'Coffee', amount: 1 }),
      });
      expect(res.status).to.equal(415);
      expect((JSON.parse(res.text) as { code: string }).code).to.equal('UNSUPPORTED_MEDIA_TYPE');
    });
  });

  describe('query parameters are validated and coerced from the contract', () => {
    it('when an integer parameter is sent, then the handler receives a number', async () => {
      const res = await app.request('GET', '/things?limit=25');
      expect(res.status, res.text).to.equal(200);
      expect(res.body).to.deep.equal({ limit: 25, limitType: 'number' });
    });

    const cases: [string, string, string][] = [
      ['not a number', '?limit=ten', '/query/limit'],
      ['below its minimum', '?limit=0', '/query/limit'],
      ['a fraction', '?limit=2.5', '/query/limit'],
      ['an unknown parameter', '?limt=5', '/query'],
    ];
    for (const [name, query, pointer] of cases) {
      it(`when the query has ${name}, then 400 VALIDATION_FAILED at ${pointer}`, async () => {
        const res = await app.request('GET', `/things${query}`);
        expectProblem(res, 400, 'VALIDATION_FAILED');
        expect(pointersOf(res)).to.deep.equal([pointer]);
      });
    }
  });

  describe('routes outside the contract', () => {
    it('when the path is not documented, then 404 ROUTE_NOT_FOUND', async () => {
      expectProblem(await app.request('GET', '/nothing-here'), 404, 'ROUTE_NOT_FOUND');
      expectProblem(await app.request('GET', '/things/thg_abcd/more'), 404, 'ROUTE_NOT_FOUND');
    });

    it('when the method is not documented on a path, then 405 METHOD_NOT_ALLOWED with Allow', async () => {
      const res = await app.request('DELETE', '/things/thg_abcd');
      expectProblem(res, 405, 'METHOD_NOT_ALLOWED');
      expect(
        res.headers
          .get('allow')
          ?.split(',')
          .map((m) => m.trim()),
      ).to.have.members(['POST', 'GET', 'HEAD']);

      const put = await app.request('PUT', '/things', { json: { any: 'thing' } });
      expectProblem(put, 405, 'METHOD_NOT_ALLOWED');
      expect(put.headers.get('allow')).to.equal('GET, HEAD');
    });
  });

  describe('when a handler fails unexpectedly, then 500 INTERNAL reveals nothing', () => {
    it('then the body has the problem members only, without message or stack, and the error is logged', async () => {
      const res = await app.request('GET', '/boom');
      expectProblem(res, 500, 'INTERNAL');
      expect(Object.keys(res.body as object)).to.have.members(['type', 'title', 'status', 'code', 'requestId']);
      expect(res.text).not.to.contain('hunter2');
      expect(res.text).not.to.contain('postgres://');
      expect(res.text).not.to.match(/\bat .*\.ts:\d+/);
      // Logged for operators, with the request id that the client saw.
      const logged = app
        .logs()
        .split('\n')
        .find((l) => l.includes('"request failed"') && l.includes(res.body.requestId));
      expect(logged).to.be.a('string').and.contain(INTERNAL_ERROR_MESSAGE.slice(0, 14));
    });

    it('when a handler answers outside its documented schema, then 500 RESPONSE_CONTRACT_VIOLATION', async () => {
      const res = await app.request('GET', '/contract-breach');
      expectProblem(res, 500, 'RESPONSE_CONTRACT_VIOLATION');
      expect(res.text).not.to.contain('not a boolean');
    });
  });

  describe('every response carries the safety headers', () => {
    const requests: [string, string, string][] = [
      ['a success', 'GET', '/things?limit=1'],
      ['a validation error', 'GET', '/things?limit=x'],
      ['a 404', 'GET', '/nothing-here'],
      ['a 500', 'GET', '/boom'],
    ];
    for (const [name, method, path] of requests) {
      it(`when the response is ${name}, then it is not cacheable and has the helmet headers`, async () => {
        const res = await app.request(method, path);
        expect(res.headers.get('cache-control')).to.equal('no-store');
        expect(res.headers.get('x-content-type-options')).to.equal('nosniff');
        expect(res.headers.get('content-security-policy')).to.equal("default-src 'none';frame-ancestors 'none'");
        expect(res.headers.get('strict-transport-security')).to.match(/^max-age=\d+/);
        expect(res.headers.get('referrer-policy')).to.equal('no-referrer');
        expect(res.headers.get('cross-origin-resource-policy')).to.equal('same-origin');
        expect(res.headers.get('x-frame-options')).to.equal('SAMEORIGIN');
        expect(res.headers.get('x-powered-by')).to.equal(null);
        expect(res.headers.get('etag')).to.equal(null);
      });
    }
  });

  describe('request ids', () => {
    it('when the client sends none, then a req_ id is made that the PAN masker can never rewrite', async () => {
      // Generated UUIDs used to be masked now and then: their digit groups can form a Luhn-valid run.
      for (let i = 0; i < 50; i++) {
        const res = await app.request('GET', '/nothing-here');
        expect(res.headers.get('x-request-id')).to.match(/^req_[a-z2-7]{26}$/);
        expect(res.body.requestId).to.equal(res.headers.get('x-request-id'));
      }
    });

    it('when the client sends a plain request id, then it is kept in the header and the problem', async () => {
      const res = await app.request('GET', '/nothing-here', { headers: { 'x-request-id': 'client-req.42' } });
      expect(res.headers.get('x-request-id')).to.equal('client-req.42');
      expect(res.body.requestId).to.equal('client-req.42');
    });

    const unsafe: [string, string][] = [
      ['a card number', PAN],
      ['a card number inside text', `req-${PAN}`],
      ['a card number in dashed groups', '4111-1111-1111-1111'],
      ['a card number in dotted groups', 'ref.4111.1111.1111.1111'],
      ['a card number in colon groups', '5555:5555:5555:4444'],
      ['a card number in groups of two separators', '4111..1111..1111..1111'],
      ['a card number in mixed multi-character groups', '5555-.5555:_5555.-4444'],
      ['something too long', 'r'.repeat(65)],
      ['characters outside the safe set', 'id with spaces'],
    ];
    for (const [name, id] of unsafe) {
      it(`when the client request id holds ${name}, then a fresh id replaces it`, async () => {
        const res = await app.request('GET', '/nothing-here', { headers: { 'x-request-id': id } });
        expect(res.headers.get('x-request-id')).to.match(/^req_[a-z2-7]{26}$/);
        expect(res.body.requestId).to.equal(res.headers.get('x-request-id'));
        expect(res.text).not.to.contain(id);
        expect(app.logs()).not.to.contain(id);
      });
    }
  });
});

describe('HTTP layer: database failures become 503, not 500', () => {
  const cases: [string, Error & { code?: string }][] = [
    [
      'the connection under a transaction was lost',
      new Error('ROLLBACK - Client has encountered a connection error and is not queryable'),
    ],
    ['the server closed the connection mid-query', new Error('select 1 - Connection terminated unexpectedly')],
    [
      'the server is shutting down (57P01)',
      Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
    ],
    [
      'the server is starting up (57P03)',
      Object.assign(new Error('the database system is starting up'), { code: '57P03' }),
    ],
    [
      'the server refuses connections',
      Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }),
    ],
  ];
  for (const [what, error] of cases) {
    it(`when ${what}, then 503 DATABASE_UNAVAILABLE with Retry-After`, () => {
      const problem = toAppError(error);
      expect({ code: problem.code, status: problemStatus(problem) }).to.deep.equal({
        code: 'DATABASE_UNAVAILABLE',
        status: 503,
      });
      expect(problem.headers).to.have.property('Retry-After');
    });
  }

  it('when an error only mentions a connection but carries a SQLSTATE of its own, then it stays a 500', () => {
    const error = Object.assign(new Error('Connection terminated: duplicate key'), { code: '23505' });
    expect(toAppError(error).code).to.equal('INTERNAL');
  });
});
