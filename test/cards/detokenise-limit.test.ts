/**
 * The detokenisation limit counts every attempt (issue 16): each attempt is counted in a statement of
 * its own, committed before the card is looked up, on the database's clock, over a sliding minute
 * shared by every instance. Before, the count rolled back with the request, so only reveals counted
 * and a client could probe unknown tokens without end.
 */
import { expect } from 'chai';
import { createDatabase } from '../../src/db/database.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, testDbConfig, usingPostgres, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { TEST_PANS } from '../support/pans.js';

const LIMIT = 10;
const UNKNOWN = (i: number): string => `tok_${'a'.repeat(25)}${'abcdefghijklmnopqrstuvwxyz'[i % 26]}`;

async function detokenise(svc: TestService, bearer: string, token: string) {
  return svc.request('POST', `/v1/tokens/${token}/detokenise`, { token: bearer, json: { reason: 'refund check' } });
}

async function auditedOutcomes(svc: TestService, actor: string): Promise<Record<string, number>> {
  const rows = (await svc.db
    .knex('audit_events')
    .where({ actor, action: 'card.detokenise' })
    .select('outcome')
    .count({ n: '*' })
    .groupBy('outcome')) as { outcome: string; n: unknown }[];
  return Object.fromEntries(rows.map((r) => [r.outcome, Number(r.n)]));
}

describe('detokenisation limit: every attempt counts', function () {
  this.timeout(120_000);
  const env = (): ReturnType<typeof testEnv> =>
    testEnv({ DETOKENISE_ENABLED: 'true', DETOKENISE_RATE_LIMIT_PER_MINUTE: String(LIMIT) });

  describe('one instance', () => {
    let svc: TestService;
    before(async () => {
      svc = await startTestService({ env: await env() });
    });
    after(async () => svc.close());

    it('when a client asks for eleven unknown tokens, then the first ten are 404 and the eleventh 429, all audited', async () => {
      const bearer = await signToken({ scope: 'tokens:detokenise', subject: 'prober-404' });
      const statuses: number[] = [];
      let last;
      for (let i = 0; i <= LIMIT; i++) {
        last = await detokenise(svc, bearer, UNKNOWN(i));
        statuses.push(last.status);
      }
      expect(statuses).to.deep.equal([...Array<number>(LIMIT).fill(404), 429]);
      expect(last!.body.code).to.equal('TOO_MANY_REQUESTS');
      expect(Number(last!.headers.get('retry-after'))).to.be.within(1, 120);
      expect(await auditedOutcomes(svc, 'prober-404')).to.deep.equal({ failure: LIMIT, denied: 1 });
    });

    it('when the attempts are refused as CARD_HAS_NO_PAN, then they count too, and so does each 429', async () => {
      const writer = await signToken({ scope: 'tokens:write' });
      const parOnly = await svc.request('POST', '/v1/tokens', {
        token: writer,
        json: { par: 'V0010013816180398947592732140' },
      });
      const bearer = await signToken({ scope: 'tokens:detokenise', subject: 'prober-no-pan' });
      const statuses: number[] = [];
      for (let i = 0; i < LIMIT + 3; i++) {
        statuses.push((await detokenise(svc, bearer, parOnly.body.token as string)).status);
      }
      expect(statuses).to.deep.equal([...Array<number>(LIMIT).fill(409), 429, 429, 429]);
      const [row] = (await svc.db
        .knex('rate_limit_windows')
        .where({ bucket: 'detokenise:jwt:prober-no-pan' })
        .sum({ n: 'count' })) as { n: unknown }[];
      expect(Number(row?.n)).to.equal(LIMIT + 3);
    });

    it('when a client keeps trying past its limit, then one denied entry per minute is audited, not one per attempt', async () => {
      const bearer = await signToken({ scope: 'tokens:detokenise', subject: 'prober-flood' });
      for (let i = 0; i < LIMIT; i++) expect((await detokenise(svc, bearer, UNKNOWN(i))).status).to.equal(404);
      const refused: number[] = [];
      for (let i = 0; i < 15; i++) refused.push((await detokenise(svc, bearer, UNKNOWN(i))).status);
      expect(refused).to.deep.equal(Array<number>(15).fill(429));
      // Each 429 is a refusal counted in the limiter's table, not an audit write on the chain head.
      const outcomes = await auditedOutcomes(svc, 'prober-flood');
      expect(outcomes['failure']).to.equal(LIMIT);
      expect(outcomes['denied']).to.be.within(1, 2); // one per fixed minute; the loop may straddle two
      const [row] = (await svc.db
        .knex('rate_limit_windows')
        .where({ bucket: 'detokenise-refused:jwt:prober-flood' })
        .sum({ n: 'count' })) as { n: unknown }[];
      expect(Number(row?.n)).to.equal(15);
    });

    it('when the reason is invalid, then the attempt counts and is audited without the reason', async () => {
      const bearer = await signToken({ scope: 'tokens:detokenise', subject: 'prober-reason' });
      const pan = TEST_PANS.visa[0]!;
      const statuses: number[] = [];
      for (let i = 0; i < LIMIT + 1; i++) {
        const res = await svc.request('POST', `/v1/tokens/${UNKNOWN(i)}/detokenise`, {
          token: bearer,
          // Both pass the contract (3 to 500 characters) and reach the service: blanks, and a card number.
          json: { reason: i % 2 === 0 ? '     ' : `card ${pan}` },
        });
        statuses.push(res.status);
        expect(res.text).not.to.contain(pan);
        if (res.status === 422) expect(res.body.code).to.equal('REASON_INVALID');
      }
      expect(statuses).to.deep.equal([...Array<number>(LIMIT).fill(422), 429]);
      const rows = (await svc.db
        .knex('audit_events')
        .where({ actor: 'prober-reason', action: 'card.detokenise', outcome: 'failure' })
        .select('details')) as { details: unknown }[];
      expect(rows).to.have.length(LIMIT);
      for (const row of rows) {
        const text = typeof row.details === 'string' ? row.details : JSON.stringify(row.details);
        expect(text).to.contain('REASON_INVALID');
        expect(text).not.to.contain('card ');
        expect(text).not.to.contain(pan.slice(-4));
      }
    });

    it('when a client is over its limit, then a card it could read is refused as well (the limit is per client, not per outcome)', async () => {
      const writer = await signToken({ scope: 'tokens:write' });
      const card = await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: TEST_PANS.visa[0] } });
      const bearer = await signToken({ scope: 'tokens:detokenise', subject: 'prober-then-real' });
      for (let i = 0; i < LIMIT; i++) expect((await detokenise(svc, bearer, UNKNOWN(i))).status).to.equal(404);
      const real = await detokenise(svc, bearer, card.body.token as string);
      expect(real.status).to.equal(429);
      expect(real.text).not.to.contain(TEST_PANS.visa[0]);
      // Another client is untouched.
      const other = await signToken({ scope: 'tokens:detokenise', subject: 'honest-client' });
      expect((await detokenise(svc, other, card.body.token as string)).status).to.equal(200);
    });

    it('when the previous minute of the database clock was busy, then it still weighs (sliding, not fixed)', async () => {
      // A full previous window far over the limit: its weight stays above the limit for the whole
      // current window (100,000 × the part still overlapping).
      await svc.db.knex.raw(
        `insert into rate_limit_windows (bucket, window_start, count)
         values ('detokenise:jwt:prober-slide',
                 to_timestamp(floor(extract(epoch from clock_timestamp()) / 60) * 60) - interval '60 seconds', 100000)`,
      );
      const bearer = await signToken({ scope: 'tokens:detokenise', subject: 'prober-slide' });
      expect((await detokenise(svc, bearer, UNKNOWN(0))).status).to.equal(429);
    });

    it('when a client comes back, then its windows older than the previous one are pruned in the same statement', async () => {
      await svc.db.knex.raw(
        `insert into rate_limit_windows (bucket, window_start, count)
         values ('detokenise:jwt:prober-prune', clock_timestamp() - interval '1 hour', 5)`,
      );
      const bearer = await signToken({ scope: 'tokens:detokenise', subject: 'prober-prune' });
      expect((await detokenise(svc, bearer, UNKNOWN(0))).status).to.equal(404);
      const rows = (await svc.db
        .knex('rate_limit_windows')
        .where({ bucket: 'detokenise:jwt:prober-prune' })
        .select('count')) as { count: number }[];
      expect(rows.map((r) => r.count)).to.deep.equal([1]);
    });
  });

  describe('two instances on one database', () => {
    let db: TestDatabase;
    let shared: Awaited<ReturnType<typeof testEnv>>; // one master key for the database
    before(async () => {
      db = await createTestDatabase();
      shared = await env();
    });
    after(async () => db.close());

    it('when a client alternates between two instances, then they share one window: the eleventh attempt is 429', async () => {
      // PostgreSQL: each instance has its own pool; PGlite: both apps on the one embedded store.
      const second = usingPostgres ? createDatabase(testDbConfig(db.url as string)) : undefined;
      const a = await startTestService({ env: shared, db });
      const b = await startTestService({
        env: { ...shared, DATA_DIR: (await testEnv())['DATA_DIR'] },
        db: second === undefined ? db : { ...second, url: db.url },
      });
      try {
        const bearer = await signToken({ scope: 'tokens:detokenise', subject: 'prober-two-instances' });
        const statuses: number[] = [];
        for (let i = 0; i <= LIMIT; i++) {
          statuses.push((await detokenise(i % 2 === 0 ? a : b, bearer, UNKNOWN(i))).status);
        }
        expect(statuses).to.deep.equal([...Array<number>(LIMIT).fill(404), 429]);
        // And concurrently, across both: of 20 more, none is allowed.
        const more = await Promise.all(
          Array.from({ length: 20 }, (_, i) => detokenise(i % 2 === 0 ? a : b, bearer, UNKNOWN(i))),
        );
        expect(more.map((r) => r.status)).to.deep.equal(Array<number>(20).fill(429));
      } finally {
        await a.close();
        await b.close();
        await second?.close();
      }
    });

    it('when many attempts race across two instances, then exactly the limit get past the counter', async () => {
      const second = usingPostgres ? createDatabase(testDbConfig(db.url as string)) : undefined;
      const a = await startTestService({ env: shared, db });
      const b = await startTestService({
        env: { ...shared, DATA_DIR: (await testEnv())['DATA_DIR'] },
        db: second === undefined ? db : { ...second, url: db.url },
      });
      try {
        const bearer = await signToken({ scope: 'tokens:detokenise', subject: 'prober-race' });
        const results = await Promise.all(
          Array.from({ length: 40 }, (_, i) => detokenise(i % 2 === 0 ? a : b, bearer, UNKNOWN(i))),
        );
        const statuses = results.map((r) => r.status);
        expect(statuses.filter((s) => s === 404)).to.have.length(LIMIT);
        expect(statuses.filter((s) => s === 429)).to.have.length(40 - LIMIT);
      } finally {
        await a.close();
        await b.close();
        await second?.close();
      }
    });
  });
});
