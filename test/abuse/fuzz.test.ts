/**
 * OpenAPI-driven fuzzing: for every operation of openapi.yaml, 200 generated requests built from the
 * operation's own schemas (path, query, headers, JSON body), valid-shaped values mixed with hostile
 * ones. Whatever is sent, the service answers below 500, every 4xx is problem+json with a stable
 * `code`, and no response repeats a PAN that the request carried.
 *
 * Special cases, on purpose:
 * - Webhooks (`x-raw-body`) are sent unsigned (random or stale signature headers): every answer must
 *   be a 4xx problem; a signed delivery is not fuzzed here.
 * - Detokenisation is enabled (with a high rate limit) so that its validation and handler are
 *   reached; the seeded card it may reveal has a generated PAN, never one of the fuzzed ones.
 * - Header values and URLs stay under node's 16 KB header limit: beyond it node itself answers 431
 *   without reaching the app, which is not the service's contract.
 *
 * One service for the whole file; deep nesting (5,000 levels) and long strings stay within the 64 KB
 * body limit so that each case is cheap.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import fs from 'node:fs';
import { loadApiSpec, openApiPath, type Operation } from '../../src/http/openapi.js';
import { signToken } from '../support/auth.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { payment } from '../loyalty/support.js';
import {
  FUZZ_PANS,
  allScopes,
  contentType,
  echoedPans,
  fromSchema,
  hostileRawBody,
  hostileString,
  isBearer,
  isWebhook,
  mutated,
  parametersOf,
  percentEncode,
  prefixedId,
  requestBodySchema,
  send,
  withDuplicateKey,
} from './support.js';

/** The contract as served at GET /openapi.yaml (the file itself). */
const CONTRACT_TEXT = fs.readFileSync(openApiPath(), 'utf8');

const RUNS_PER_OPERATION = 200;
const PROBLEM_CODE = /^[A-Z][A-Z0-9_]*$/;

type Json = Record<string, unknown>;
type Auth = 'admin' | 'shopper' | 'none' | 'garbage';

interface FuzzRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: string | undefined;
  readonly auth: Auth;
}

interface Seeded {
  readonly shopperRef: string;
  readonly cardToken: string;
  readonly tokens: Readonly<Record<Auth, string | undefined>>;
}

/** Path segments that no encoder would produce: bad percent-escapes, traversal, NUL. */
const RAW_SEGMENTS = ['%ZZ', '%', '%E0%A4%A', '..%2F..%2Fetc%2Fpasswd', '%2e%2e', '%00', 'a%2Fb', '%C0%AE'] as const;

const EXTRA_QUERY = [
  '__proto__=1',
  '__proto__[admin]=1',
  'constructor[prototype][admin]=1',
  `pan=${FUZZ_PANS[0]}`,
  `${FUZZ_PANS[1]}=1`,
  'limit=1&limit=2',
  'cursor=a&cursor=b',
  '&&=&',
  'a[b][c]=d',
] as const;

/** `arbitrary` with weight `present`, null with weight `absent`. */
function sometimes<T>(arbitrary: fc.Arbitrary<T>, present: number, absent: number): fc.Arbitrary<T | null> {
  return fc.oneof({ weight: present, arbitrary }, { weight: absent, arbitrary: fc.constant(null) });
}

function pathParamArbitrary(document: Json, param: Json, seeded: Seeded): fc.Arbitrary<string> {
  const name = String(param['name']);
  const known: fc.Arbitrary<string> =
    name === 'shopperReference'
      ? fc.constant(seeded.shopperRef)
      : name === 'token'
        ? fc.constant(seeded.cardToken)
        : prefixedId(name === 'eventId' ? 'evt' : name === 'redemptionId' ? 'red' : 'xyz');
  const value = fc.oneof(
    { weight: 4, arbitrary: known },
    { weight: 2, arbitrary: fromSchema(document, (param['schema'] ?? {}) as Json).map(String) },
    { weight: 2, arbitrary: hostileString },
  );
  return fc.oneof(
    { weight: 6, arbitrary: value.map(percentEncode) },
    { weight: 1, arbitrary: fc.constantFrom(...RAW_SEGMENTS) },
  );
}

function queryArbitrary(document: Json, params: readonly Json[]): fc.Arbitrary<string> {
  const parts = params.map((param) =>
    sometimes(
      fc.oneof(
        { weight: 3, arbitrary: fromSchema(document, (param['schema'] ?? {}) as Json).map(String) },
        { weight: 1, arbitrary: hostileString },
      ),
      1,
      1,
    ).map((value) => (value === null ? undefined : `${percentEncode(String(param['name']))}=${percentEncode(value)}`)),
  );
  const extra = sometimes(fc.constantFrom(...EXTRA_QUERY), 1, 4);
  return fc.tuple(fc.tuple(...parts), extra).map(([values, more]) => {
    const all = [...values.filter((v): v is string => v !== undefined), ...(more === null ? [] : [more])];
    return all.length === 0 ? '' : `?${all.join('&')}`;
  });
}

function headerArbitrary(document: Json, params: readonly Json[], op: Operation): fc.Arbitrary<Record<string, string>> {
  const now = String(Math.floor(Date.now() / 1000));
  const named = params.map((param) => {
    const name = String(param['name']).toLowerCase();
    const value = fc.oneof(
      { weight: 3, arbitrary: fromSchema(document, (param['schema'] ?? {}) as Json).map(String) },
      { weight: 1, arbitrary: hostileString },
      // A current timestamp gets an unsigned platform delivery past the tolerance check to the HMAC.
      { weight: name === 'webhook-timestamp' ? 2 : 0, arbitrary: fc.constant(now) },
    );
    return sometimes(value, 4, 1).map((v) => (v === null ? [] : [[name, v] as const]));
  });
  const webhookGuesses = isWebhook(op)
    ? fc.option(
        fc.constantFrom(
          ['stripe-signature', `t=${now},v1=${'0'.repeat(64)}`],
          ['stripe-signature', `t=${now}`],
          ['stripe-signature', `t=1,v1=${'a'.repeat(64)},v1=zz`],
          ['webhook-signature', `v1,${Buffer.from('forged').toString('base64')}`],
          ['webhook-signature', `v1a,${FUZZ_PANS[0]}`],
          ['authorization', `Basic ${Buffer.from(`${FUZZ_PANS[0]}:x`).toString('base64')}`],
        ),
      )
    : fc.constant(null);
  return fc
    .tuple(
      fc.tuple(...named),
      webhookGuesses,
      fc.option(hostileString),
      fc.option(fc.constantFrom('application/json', 'text/html', '*/*', 'application/problem+json', '')),
    )
    .map(([pairs, guess, requestId, accept]) => {
      const headers: Record<string, string> = Object.fromEntries(pairs.flat());
      if (guess !== null) headers[guess[0]] = guess[1];
      if (requestId !== null) headers['x-request-id'] = requestId;
      if (accept !== null) headers['accept'] = accept;
      return headers;
    });
}

function bodyArbitrary(document: Json, op: Operation): fc.Arbitrary<string | undefined> {
  const schema = requestBodySchema(document, op);
  if (schema === undefined) {
    // An operation without a body still gets one now and then (GET with a body included).
    return fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: hostileRawBody });
  }
  const shaped = fromSchema(document, schema);
  return fc.oneof(
    { weight: 4, arbitrary: shaped.map((v) => JSON.stringify(v)) },
    { weight: 4, arbitrary: mutated(shaped).map((v) => JSON.stringify(v) ?? 'null') },
    { weight: 1, arbitrary: shaped.map(withDuplicateKey) },
    { weight: 2, arbitrary: hostileRawBody },
    { weight: 1, arbitrary: fc.constant(undefined) },
  );
}

function requestArbitrary(document: Json, op: Operation, seeded: Seeded): fc.Arbitrary<FuzzRequest> {
  const params = parametersOf(document, op);
  const segments = op.pathTemplate.split(/(\{[^}]+\})/).map((piece) => {
    const name = /^\{([^}]+)\}$/.exec(piece)?.[1];
    if (name === undefined) return fc.constant(piece);
    const param = params.find((p) => p['in'] === 'path' && p['name'] === name);
    if (param === undefined) throw new Error(`${op.operationId}: path parameter ${name} is not declared`);
    return pathParamArbitrary(document, param, seeded);
  });
  const auths: fc.Arbitrary<Auth> = isBearer(op)
    ? fc.oneof(
        { weight: 6, arbitrary: fc.constant<Auth>('admin') },
        { weight: 3, arbitrary: fc.constant<Auth>('shopper') },
        { weight: 1, arbitrary: fc.constantFrom<Auth>('none', 'garbage') },
      )
    : fc.constant<Auth>('none');
  return fc
    .record({
      path: fc.tuple(...segments).map((pieces) => pieces.join('')),
      query: queryArbitrary(
        document,
        params.filter((p) => p['in'] === 'query'),
      ),
      headers: headerArbitrary(
        document,
        params.filter((p) => p['in'] === 'header'),
        op,
      ),
      contentType,
      body: bodyArbitrary(document, op),
      auth: auths,
    })
    .map(({ path, query, headers, contentType: type, body, auth }) => {
      const all: Record<string, string> = { ...headers };
      const token = seeded.tokens[auth];
      if (token !== undefined) all['authorization'] = `Bearer ${token}`;
      if (type !== undefined && body !== undefined) all['content-type'] = type;
      return { method: op.method.toUpperCase(), path: `${path}${query}`, headers: all, body, auth };
    });
}

describe('Abuse: OpenAPI-driven fuzzing of every operation', function () {
  this.timeout(180_000);
  // The operations are read at load time so that each gets its own test; the first test checks they
  // are exactly the running service's, so none is skipped.
  const operations = loadApiSpec().operations;
  let svc: TestService;
  let seeded: Seeded;

  before(async () => {
    svc = await startTestService({
      env: await testEnv({ DETOKENISE_ENABLED: 'true', DETOKENISE_RATE_LIMIT_PER_MINUTE: '10000' }),
    });
    const scopes = allScopes(svc.service.spec.operations);
    const admin = await signToken({ scope: scopes, expiresIn: 3600 });
    const pan = generatePans(4).find((p) => !(FUZZ_PANS as readonly string[]).includes(p)) as string;
    const card = await svc.request('POST', '/v1/tokens', { token: admin, json: { pan } });
    expect(card.status, card.text).to.equal(201);
    const shopperRef = card.body.shopperReference as string;
    // Points to spend, so that redemptions reach the ledger rather than stop at INSUFFICIENT_POINTS.
    const purchase = payment(
      { shopperRef, cardToken: card.body.token as string, pan },
      { amount: 1_000_000, channel: 'in_store' },
    );
    await purchase.send(svc, { type: 'authorised' });
    await purchase.send(svc, { type: 'captured' });
    seeded = {
      shopperRef,
      cardToken: card.body.token as string,
      tokens: {
        admin,
        shopper: await signToken({ scope: scopes, shopperRef, subject: 'loyalty-app', expiresIn: 3600 }),
        none: undefined,
        garbage: `${FUZZ_PANS[0]}.${FUZZ_PANS[1]}.x`,
      },
    };
  });
  after(() => svc?.close());

  it('when the suite starts, then it fuzzes exactly the operations the service serves', () => {
    expect(operations.map((o) => o.operationId)).to.have.members(svc.service.spec.operations.map((o) => o.operationId));
  });

  for (const op of operations) {
    const kind = isWebhook(op) ? 'unsigned webhook deliveries get a 4xx problem' : 'never 5xx';
    it(`${op.operationId} (${op.method.toUpperCase()} ${op.pathTemplate}): ${RUNS_PER_OPERATION} generated requests, ${kind}, no PAN echoed`, async () => {
      const document = svc.service.spec.document as Json;
      let sent = 0;
      await fc.assert(
        fc.asyncProperty(requestArbitrary(document, op, seeded), async (req) => {
          const res = await send(svc.url, req);
          sent++;
          const where = `${req.method} ${req.path} [${req.auth}] headers=${JSON.stringify(req.headers)} body=${(req.body ?? '').slice(0, 200)} → ${res.status} ${res.text.slice(0, 400)}`;
          // 503 included: nothing here is a dependency outage, so a 503 would be a mislabelled crash.
          expect(res.status, where).to.be.within(200, 499);
          if (res.status >= 400) {
            expect(res.headers['content-type'], where).to.match(/^application\/problem\+json/);
            const problem = JSON.parse(res.text) as { code?: unknown; status?: unknown };
            expect(problem.code, where).to.be.a('string').and.match(PROBLEM_CODE);
            expect(problem.status, where).to.equal(res.status);
          }
          if (isWebhook(op)) expect(res.status, where).to.be.within(400, 499);
          // The contract is a static document: its examples carry the schemes' test numbers, only in
          // `pan` fields (test/docs/openapi-examples.test.ts). What it must never echo is the request.
          if (op.operationId === 'getOpenApiDocument' && res.status === 200) {
            expect(res.text, where).to.equal(CONTRACT_TEXT);
          } else {
            expect(echoedPans(res.text), where).to.deep.equal([]);
          }
          expect(echoedPans(JSON.stringify(res.headers)), where).to.deep.equal([]);
        }),
        { numRuns: RUNS_PER_OPERATION },
      );
      expect(sent).to.be.at.least(RUNS_PER_OPERATION);
    });
  }

  describe('regressions the fuzzer found', () => {
    const withPathParameter = operations.filter((o) => o.pathTemplate.includes('{'));
    const withNumericQuery = operations.filter((o) =>
      parametersOf(loadApiSpec().document as Json, o).some(
        (p) => p['in'] === 'query' && ['integer', 'number'].includes(String((p['schema'] as Json)['type'])),
      ),
    );

    it('when a path segment is not valid percent-encoding, then every operation answers 400 VALIDATION_FAILED, not 500', async () => {
      expect(withPathParameter).not.to.be.empty;
      for (const op of withPathParameter) {
        for (const segment of ['%ZZ', '%E0%A4%A', '%C0%AE', `${FUZZ_PANS[0]}%`]) {
          for (const auth of ['admin', 'none'] as const) {
            const path = op.pathTemplate.replace(/\{[^}]+\}/g, segment);
            const token = seeded.tokens[auth];
            const res = await send(svc.url, {
              method: op.method.toUpperCase(),
              path,
              headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
              body: undefined,
            });
            expect(res.status, `${op.operationId} ${path}: ${res.text}`).to.equal(400);
            expect(JSON.parse(res.text)).to.include({ code: 'VALIDATION_FAILED' });
            expect(echoedPans(res.text)).to.deep.equal([]);
          }
        }
      }
      expect(svc.logs()).not.to.contain('Failed to decode param');
    });

    it('when a numeric query parameter is Infinity, then 400 VALIDATION_FAILED, not an unbounded page', async () => {
      expect(withNumericQuery.map((o) => o.operationId)).to.include('listWebhookInbox');
      for (const op of withNumericQuery) {
        for (const value of ['Infinity', '-Infinity', '1e400']) {
          // Each path parameter gets a well-formed value, so that only the limit is wrong.
          const path = `${op.pathTemplate.replace(/\{([^}]+)\}/g, (_m, name: string) =>
            name === 'subscriptionId' ? 'sub_aaaaaaaaaaaaaaaaaaaaaaaaaa' : seeded.shopperRef,
          )}?limit=${value}`;
          const res = await send(svc.url, {
            method: op.method.toUpperCase(),
            path,
            headers: { authorization: `Bearer ${seeded.tokens.admin}` },
            body: undefined,
          });
          expect(res.status, `${op.operationId} ${path}: ${res.text}`).to.equal(400);
          const problem = JSON.parse(res.text) as { code: string; errors: { pointer: string }[] };
          expect(problem.code).to.equal('VALIDATION_FAILED');
          expect(problem.errors.map((e) => e.pointer)).to.deep.equal(['/query/limit']);
        }
      }
    });

    // Found by this suite: the audit trail refused rules printing a Luhn-valid digit run (a 500), and
    // free-text loyalty fields stored and echoed PANs. Each case stays as a regression test.
    it('when programme rules hold a number written with a Luhn-valid digit run (8/9), then they are published, not a 500', async () => {
      const res = await send(svc.url, {
        method: 'PUT',
        path: '/v1/programme',
        headers: { authorization: `Bearer ${seeded.tokens.admin}`, 'content-type': 'application/json' },
        body: JSON.stringify({ pointsPerUnit: 8 / 9 }),
      });
      expect(res.status, res.text).to.equal(201);
    });

    const echoCases: [string, string, string, Json, Record<string, string>][] = [
      ['enrolShopper', 'POST', 'enrolment', { externalMemberId: FUZZ_PANS[0] }, {}],
      [
        'redeemPoints',
        'POST',
        'redemptions',
        { points: 1, reference: FUZZ_PANS[1] },
        { 'idempotency-key': 'abuse-echo-1' },
      ],
    ];
    for (const [operationId, method, tail, body, headers] of echoCases) {
      it(`when ${operationId} is sent a PAN as ${Object.keys(body).pop()}, then it is refused and never echoed`, async () => {
        const res = await send(svc.url, {
          method,
          path: `/v1/shoppers/${seeded.shopperRef}/${tail}`,
          headers: { authorization: `Bearer ${seeded.tokens.admin}`, 'content-type': 'application/json', ...headers },
          body: JSON.stringify(body),
        });
        expect(echoedPans(res.text), res.text).to.deep.equal([]);
        expect(res.status, res.text).to.equal(422);
        expect((JSON.parse(res.text) as { code: string }).code).to.equal('CARD_NUMBER_NOT_ALLOWED');
      });
    }
  });
});
