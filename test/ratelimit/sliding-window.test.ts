/**
 * The two-bucket sliding window (src/ratelimit/rate-limiter.ts): the decision as a pure function, and
 * the statement on the database, whose clock and row lock make it one window for every instance.
 */
import { expect } from 'chai';
import { consumeRateLimit, decide } from '../../src/ratelimit/rate-limiter.js';
import { createDatabase } from '../../src/db/database.js';
import { createTestDatabase, testDbConfig, usingPostgres, type TestDatabase } from '../support/database.js';

const W = 60_000;

describe('sliding-window rate limit', function () {
  this.timeout(60_000);

  describe('the decision', () => {
    const cases: [string, [number, number, number], boolean, number][] = [
      ['the tenth attempt of a quiet client', [10, 0, 5_000], true, 0],
      ['the eleventh, early in the window', [11, 0, 5_000], false, 66],
      ['the eleventh, at the end of the window', [11, 0, 59_000], false, 12],
      ['the first, right after a full previous window', [1, 10, 0], false, 12],
      ['the first, half-way after a full previous window', [1, 10, 30_000], true, 0],
      ['the sixth, half-way after a full previous window', [6, 10, 30_000], false, 12],
      ['the first, after a previous window 10,000 over', [1, 10_000, 0], false, 60],
    ];
    for (const [name, [current, previous, elapsed], allowed, retry] of cases) {
      it(`when ${name}, then ${allowed ? 'allowed' : `refused, retry after ${retry} s`}`, () => {
        const d = decide(current, previous, elapsed, 10, W);
        expect(d).to.deep.equal({ allowed, retryAfterSeconds: retry });
      });
    }

    it('when a refused client waits its Retry-After, then its next attempt is allowed, and not a second earlier', () => {
      for (const [current, previous, elapsed] of [
        [11, 0, 5_000],
        [6, 10, 30_000],
        [1, 10, 0],
        [30, 25, 12_345],
      ] as const) {
        const { retryAfterSeconds } = decide(current, previous, elapsed, 10, W);
        const later = (ms: number): boolean => {
          const t = elapsed + ms;
          return t < W
            ? decide(current + 1, previous, t, 10, W).allowed
            : decide(1, t < 2 * W ? current : 0, t - W, 10, W).allowed;
        };
        expect(later(retryAfterSeconds * 1000), `${current}/${previous}/${elapsed}`).to.equal(true);
        expect(later(retryAfterSeconds * 1000 - 1000), `${current}/${previous}/${elapsed}`).to.equal(false);
      }
    });
  });

  describe('on the database', () => {
    let db: TestDatabase;
    before(async () => {
      db = await createTestDatabase({ migrated: true });
    });
    after(async () => db.close());

    it('when attempts race on two connection pools, then exactly the limit is allowed and every one is counted', async () => {
      const second = usingPostgres ? createDatabase(testDbConfig(db.url as string)) : undefined;
      try {
        const pools = [db.knex, (second ?? db).knex];
        const decisions = await Promise.all(
          Array.from({ length: 50 }, (_, i) => consumeRateLimit(pools[i % 2]!, 'race', 10, 60)),
        );
        // A window rollover during the run would split the count; the test allows for it.
        const allowed = decisions.filter((d) => d.allowed).length;
        const rows = (await db.knex('rate_limit_windows').where({ bucket: 'race' }).select('count')) as {
          count: number;
        }[];
        expect(rows.reduce((sum, r) => sum + r.count, 0)).to.equal(50);
        if (rows.length === 1) expect(allowed).to.equal(10);
        else expect(allowed).to.be.within(10, 20);
      } finally {
        await second?.close();
      }
    });

    it("when the window starts, then it is the database clock's, not this process's", async () => {
      await consumeRateLimit(db.knex, 'clock', 10, 60);
      const [row] = (
        await db.knex.raw(
          `select extract(epoch from (clock_timestamp() - window_start)) as age from rate_limit_windows where bucket = 'clock'`,
        )
      ).rows as { age: number | string }[];
      expect(Number(row?.age)).to.be.within(0, 61);
    });
  });
});
