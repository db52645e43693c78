import { expect } from 'chai';
import { TokenBuckets } from '../../src/ratelimit/token-bucket.js';
import { signToken } from '../support/auth.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';

describe('card endpoint rate limits (token buckets per client)', function () {
  this.timeout(60_000);

  describe('the bucket, on a frozen clock', () => {
    let now = 0;
    const buckets = (ratePerSecond: number, burst: number, maxClients?: number) =>
      new TokenBuckets({ ratePerSecond, burst, nowMs: () => now, ...(maxClients === undefined ? {} : { maxClients }) });

    beforeEach(() => {
      now = 1_000_000;
    });

    it('when a client spends its burst, then the next request waits for the refill and is told how long', () => {
      const b = buckets(2, 3);
      expect([1, 2, 3].map(() => b.take('pos-1').allowed)).to.deep.equal([true, true, true]);
      expect(b.take('pos-1')).to.deep.equal({ allowed: false, retryAfterSeconds: 1 });
      now += 499;
      expect(b.take('pos-1').allowed).to.equal(false);
      now += 2;
      expect(b.take('pos-1').allowed).to.equal(true);
    });

    it('when one client is limited, then another is not', () => {
      const b = buckets(1, 1);
      expect(b.take('flood').allowed).to.equal(true);
      expect(b.take('flood').allowed).to.equal(false);
      expect(b.take('checkout').allowed).to.equal(true);
    });

    it('when the rate is 0, then nothing is limited', () => {
      const b = buckets(0, 1);
      for (let i = 0; i < 100; i++) expect(b.take('any').allowed).to.equal(true);
    });

    it('when more clients than remembered are seen, then the least recently seen is forgotten, not the active one', () => {
      const b = buckets(1, 1, 2);
      b.take('a');
      b.take('b');
      b.take('a'); // a is the most recent now (and empty)
      b.take('c'); // forgets b
      expect(b.take('a').allowed).to.equal(false);
      expect(b.take('b').allowed).to.equal(true);
    });
  });

  describe('over HTTP', () => {
    let svc: TestService;
    before(async () => {
      svc = await startTestService({
        env: await testEnv({ CARD_RATE_LIMIT_PER_SECOND: '1', CARD_RATE_LIMIT_BURST: '3' }),
      });
    });
    after(async () => svc.close());

    it('when a client tokenises past its burst, then 429 TOO_MANY_REQUESTS with Retry-After, and another client still gets through', async () => {
      const token = await signToken({ scope: 'tokens:write tokens:read', subject: 'pos-flood' });
      const pans = generatePans(5, '488888');
      const statuses: number[] = [];
      let limited;
      for (const pan of pans) {
        const res = await svc.request('POST', '/v1/tokens', { token, json: { pan } });
        statuses.push(res.status);
        if (res.status === 429) limited = res;
      }
      expect(statuses.slice(0, 3)).to.deep.equal([201, 201, 201]);
      expect(statuses[3]).to.equal(429);
      expect(limited?.headers.get('content-type')).to.match(/^application\/problem\+json/);
      expect(limited?.body.code).to.equal('TOO_MANY_REQUESTS');
      expect(Number(limited?.headers.get('retry-after'))).to.be.at.least(1);
      expect(limited?.text).not.to.contain(pans[3]);
      const other = await signToken({ scope: 'tokens:write', subject: 'checkout' });
      expect((await svc.request('POST', '/v1/tokens', { token: other, json: { pan: pans[4] } })).status).to.equal(201);
    });
  });
});
