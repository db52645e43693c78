/**
 * Membership probing (issue 16): `POST /v1/tokens` answers 201 for a new card and 200 for a known one.
 * Each "new" answer is a first sighting and spends a per-client budget lower than the card rate; once
 * it is spent the client gets 429 `FIRST_SIGHTING_RATE_LIMITED` for every tokenisation, known card or
 * not, and nothing is created.
 */
import { expect } from 'chai';
import { TokenBuckets } from '../../src/ratelimit/token-bucket.js';
import { signToken } from '../support/auth.js';
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
});
