/**
 * Membership probing (issue 16): `POST /v1/tokens` answers 201 for a new card and 200 for a known one.
 * Each "new" answer is a first sighting and spends a per-client budget lower than the card rate; once
 * it is spent the client gets 429 `FIRST_SIGHTING_RATE_LIMITED` for every tokenisation, known card or
 * not, and nothing is created. The budget is the database's sliding window, so every instance (and
 * worker) on one database shares it; attaching an identifier spends it too.
 */
import { expect } from 'chai';
import { createDatabase } from '../../src/db/database.js';
import { TokenBuckets } from '../../src/ratelimit/token-bucket.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, testDbConfig, usingPostgres, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';

describe('first sightings: a per-client budget of new cards', function () {
  this.timeout(60_000);

  describe('peek, on a frozen clock', () => {
    it('when a bucket is peeked, then nothing is taken, and an empty bucket says how long to wait', () => {
      let now = 5_000;
      const b = new TokenBuckets({ ratePerSecond: 1, burst: 2, nowMs: () => now });
      expect(b.peek('gw').allowed).to.equal(true);
      expect(b.peek('gw').allowed).to.equal(true);
      b.take('gw');
      b.take('gw');
      expect(b.peek('gw')).to.deep.equal({ allowed: false, retryAfterSeconds: 1 });
      now += 1_000;
      expect(b.peek('gw').allowed).to.equal(true);
      expect(b.take('gw').allowed).to.equal(true);
      expect(b.peek('gw').allowed).to.equal(false);
    });
  });

  describe('over HTTP', () => {
    let svc: TestService;
    before(async () => {
      svc = await startTestService({
        env: await testEnv({ CARD_FIRST_SIGHTINGS_PER_MINUTE: '1', CARD_FIRST_SIGHTINGS_BURST: '3' }),
      });
    });
    after(async () => svc.close());

    const count = async (table: string): Promise<number> =>
      Number(((await svc.db.knex(table).count({ n: '*' })) as { n: unknown }[])[0]?.n);

    it('when a client creates more new cards than its budget, then 429 FIRST_SIGHTING_RATE_LIMITED and nothing is created', async () => {
      const bearer = await signToken({ scope: 'tokens:write', subject: 'gateway-probe' });
      const pans = generatePans(6, '431940');
      const statuses: number[] = [];
      for (const pan of pans.slice(0, 3)) {
        statuses.push((await svc.request('POST', '/v1/tokens', { token: bearer, json: { pan } })).status);
      }
      expect(statuses).to.deep.equal([201, 201, 201]);
      const [cards, shoppers, outbox] = [await count('cards'), await count('shoppers'), await count('outbound_events')];

      const refused = await svc.request('POST', '/v1/tokens', { token: bearer, json: { pan: pans[3] } });
      expect(refused.status).to.equal(429);
      expect(refused.headers.get('content-type')).to.match(/^application\/problem\+json/);
      expect(refused.body.code).to.equal('FIRST_SIGHTING_RATE_LIMITED');
      expect(Number(refused.headers.get('retry-after'))).to.be.at.least(1);
      expect(refused.text).not.to.contain(pans[3]);
      expect([await count('cards'), await count('shoppers'), await count('outbound_events')]).to.deep.equal([
        cards,
        shoppers,
        outbox,
      ]);

      // The refusal answers nothing: a card this client already knows is refused the same way.
      const known = await svc.request('POST', '/v1/tokens', { token: bearer, json: { pan: pans[0] } });
      expect(known.status).to.equal(429);
      expect(known.body.code).to.equal('FIRST_SIGHTING_RATE_LIMITED');

      // Another client's budget is its own; reading a card is not a first sighting.
      const other = await signToken({ scope: 'tokens:write tokens:read', subject: 'checkout' });
      expect((await svc.request('POST', '/v1/tokens', { token: other, json: { pan: pans[4] } })).status).to.equal(201);
      expect((await svc.request('POST', '/v1/tokens', { token: other, json: { pan: pans[0] } })).status).to.equal(200);
    });

    it('when a client attaches identifiers, then each attach spends the budget, and once spent every attach is 429 and nothing is attached', async () => {
      const writer = await signToken({ scope: 'tokens:write', subject: 'attach-seeder' });
      const [own] = generatePans(1, '431941');
      const card = await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: own } });
      const path = `/v1/tokens/${card.body.token as string}/identifiers`;
      const bearer = await signToken({ scope: 'tokens:write', subject: 'gateway-attach' });
      const par = (i: number): string => 'V003' + 'C'.repeat(13) + String(Date.now() + i).slice(-12);
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) {
        statuses.push((await svc.request('POST', path, { token: bearer, json: { par: par(i) } })).status);
      }
      expect(statuses).to.deep.equal([201, 201, 201]);
      const identifiers = await count('card_identifiers');
      const refused = await svc.request('POST', path, { token: bearer, json: { par: par(9) } });
      expect([refused.status, refused.body.code]).to.deep.equal([429, 'FIRST_SIGHTING_RATE_LIMITED']);
      const ownPan = await svc.request('POST', path, { token: bearer, json: { pan: own } });
      expect([ownPan.status, ownPan.body.code]).to.deep.equal([429, 'FIRST_SIGHTING_RATE_LIMITED']);
      expect(await count('card_identifiers')).to.equal(identifiers);
      // Attach and tokenise spend one budget.
      const [fresh] = generatePans(1, '431942');
      const tokenised = await svc.request('POST', '/v1/tokens', { token: bearer, json: { pan: fresh } });
      expect(tokenised.body.code).to.equal('FIRST_SIGHTING_RATE_LIMITED');
    });

    it('when known cards are tokenised again and again, then the budget is not spent', async () => {
      const bearer = await signToken({ scope: 'tokens:write', subject: 'till-repeat' });
      const [pan] = generatePans(1, '455673');
      expect((await svc.request('POST', '/v1/tokens', { token: bearer, json: { pan } })).status).to.equal(201);
      for (let i = 0; i < 10; i++) {
        expect((await svc.request('POST', '/v1/tokens', { token: bearer, json: { pan } })).status).to.equal(200);
      }
      const [fresh] = generatePans(1, '455674');
      expect((await svc.request('POST', '/v1/tokens', { token: bearer, json: { pan: fresh } })).status).to.equal(201);
    });
  });

  describe('two instances on one database', () => {
    let db: TestDatabase;
    let a: TestService;
    let b: TestService;
    let second: ReturnType<typeof createDatabase> | undefined;
    before(async () => {
      db = await createTestDatabase();
      const env = await testEnv({ CARD_FIRST_SIGHTINGS_PER_MINUTE: '1', CARD_FIRST_SIGHTINGS_BURST: '4' });
      // PostgreSQL: each instance has its own pool; PGlite: both apps on the one embedded store.
      second = usingPostgres ? createDatabase(testDbConfig(db.url as string)) : undefined;
      a = await startTestService({ env, db });
      b = await startTestService({
        env: { ...env, DATA_DIR: (await testEnv())['DATA_DIR'] },
        db: second === undefined ? db : { ...second, url: db.url },
      });
    });
    after(async () => {
      await a.close();
      await b.close();
      await second?.close();
      await db.close();
    });

    it('when a client alternates between two instances, then they share one budget: the fifth new card is refused on both', async () => {
      const bearer = await signToken({ scope: 'tokens:write', subject: 'gateway-two-instances' });
      const pans = generatePans(6, '455675');
      const statuses: number[] = [];
      for (const [i, pan] of pans.entries()) {
        statuses.push(
          (await (i % 2 === 0 ? a : b).request('POST', '/v1/tokens', { token: bearer, json: { pan } })).status,
        );
      }
      expect(statuses).to.deep.equal([201, 201, 201, 201, 429, 429]);
      // Known cards too, on either instance: the refusal answers nothing.
      for (const svc of [a, b]) {
        const known = await svc.request('POST', '/v1/tokens', { token: bearer, json: { pan: pans[0] } });
        expect([known.status, known.body.code]).to.deep.equal([429, 'FIRST_SIGHTING_RATE_LIMITED']);
      }
    });
  });
});
