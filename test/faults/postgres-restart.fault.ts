/**
 * Fault: PostgreSQL crashes (immediate stop: every backend killed, no checkpoint) and comes back
 * while two service instances take a storm of signed webhooks.
 *
 * Meanwhile every request must get an answer in time (no crash, no hang): an acknowledgement, or
 * `503` problem+json with a database code. Both instances must report not-ready on /readyz while the
 * database is away and ready again after, by themselves (no restart). The gateway then redelivers
 * what was not acknowledged; nothing acknowledged may be lost (crash recovery replays the WAL), and
 * every payment and ledger must equal a crash-free run.
 *
 * The server restarted is one of the test's own (test/support/private-postgres.ts), never the
 * machine's. PostgreSQL mode only, like the rest of the fault suite.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import knexFactory, { type Knex } from 'knex';
import type { ChildServer } from '../../bench/lib/child-server.js';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { usingPostgres } from '../support/database.js';
import { privatePostgresUnavailable, startPrivatePostgres, type PrivatePostgres } from '../support/private-postgres.js';
import {
  buildDeliveries,
  expectEveryAcknowledgementDurable,
  ledgerOf,
  paymentsOf,
  redeliverUntilAcknowledged,
  scratchDirs,
  startService,
  storm,
  type Outcome,
} from './storm.js';

const PAYMENTS = 120;
/** A request unanswered after this long counts as a hang. */
const ANSWER_WITHIN_MS = 15_000;
const DATABASE_CODES = ['DATABASE_UNAVAILABLE', 'DATABASE_TIMEOUT'];

interface ReadinessSample {
  readonly instance: string;
  readonly at: number;
  readonly status: number | 'no-answer';
}

describe('fault: PostgreSQL crashes and restarts under load on two instances', function () {
  this.timeout(300_000);
  const scratch = scratchDirs();
  const servers: ChildServer[] = [];
  const knexes: Knex[] = [];
  let pg: PrivatePostgres | undefined;

  before(function () {
    if (!usingPostgres) this.skip();
    const reason = privatePostgresUnavailable();
    if (reason !== undefined) {
      // eslint-disable-next-line no-console
      console.log(`      skipped: ${reason}`);
      this.skip();
    }
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.stop().catch(() => undefined)));
    await Promise.all(knexes.map((k) => k.destroy()));
    pg?.destroy();
    scratch.cleanup();
  });

  function connect(url: string): Knex {
    const knex = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 2 } });
    knexes.push(knex);
    return knex;
  }

  it('when the database is away, then every request gets 503 problem+json in time, /readyz says so, both recover by themselves, and nothing acknowledged is lost', async () => {
    pg = await startPrivatePostgres();
    const server = pg;
    const admin = connect(server.url);
    await admin.raw('create database crash');
    await admin.raw('create database reference');
    const crashUrl = server.url.replace(/\/postgres$/, '/crash');
    const referenceUrl = server.url.replace(/\/postgres$/, '/reference');

    const deliveries = buildDeliveries(PAYMENTS);
    const masterKey = randomBytes(32).toString('base64');
    const dir = scratch.make();
    const start = async (name: string, databaseUrl: string): Promise<ChildServer> => {
      const s = await startService({
        databaseUrl,
        masterKey,
        dir,
        name,
        // A dead server is noticed in a second or two, not after the 5 s defaults.
        env: { DB_CONNECT_TIMEOUT_MS: '2000', DB_STATEMENT_TIMEOUT_MS: '5000' },
      });
      servers.push(s);
      return s;
    };
    const a = await start('a', crashUrl);
    const b = await start('b', crashUrl);
    const instances = [
      { name: 'a', url: a.url },
      { name: 'b', url: b.url },
    ];

    // /readyz of both, every 200 ms, for the whole scenario.
    const readiness: ReadinessSample[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        await Promise.all(
          instances.map(async ({ name, url }) => {
            const status = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(ANSWER_WITHIN_MS) }).then(
              (res) => res.status,
              () => 'no-answer' as const,
            );
            readiness.push({ instance: name, at: Date.now(), status });
          }),
        );
        await sleep(200);
      }
    })();
    const readyzOf = (name: string, since: number): (number | 'no-answer')[] =>
      readiness.filter((s) => s.instance === name && s.at >= since).map((s) => s.status);
    const until = async (what: string, test: () => boolean, timeoutMs: number): Promise<number> => {
      const deadline = Date.now() + timeoutMs;
      while (!test()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
        await sleep(100);
      }
      return Date.now();
    };

    // The storm; once 30% are acknowledged the database crashes, stays down until both instances
    // say they are not ready (and two more seconds), then comes back.
    const acked = new Map<string, string>();
    const outcomes: Outcome[] = [];
    let outage: Promise<{ down: number; up: number; ready: number }> | undefined;
    const crashAndRecover = async (): Promise<{ down: number; up: number; ready: number }> => {
      server.crash();
      const down = Date.now();
      await until(
        'both instances report not ready',
        () => ['a', 'b'].every((n) => readyzOf(n, down).includes(503)),
        30_000,
      );
      await sleep(2_000);
      server.start();
      const up = Date.now();
      const ready = await until(
        'both instances report ready again',
        () => ['a', 'b'].every((n) => readyzOf(n, up).includes(200)),
        60_000,
      );
      return { down, up, ready };
    };
    await storm([a.url, b.url], deliveries, (d, outcome) => {
      outcomes.push(outcome);
      if (outcome.kind === 'acknowledged') acked.set(d.id, outcome.eventId);
      if (outage === undefined && acked.size >= deliveries.length * 0.3) outage = crashAndRecover();
    });
    expect(outage, 'the database crashed mid-storm').to.not.equal(undefined);
    const { down, up, ready } = await (outage as Promise<{ down: number; up: number; ready: number }>);
    watching = false;
    await watcher;

    // During the outage: answers, all of them; refusals are 503 problem+json with a database code.
    const noAnswer = outcomes.filter((o) => o.kind === 'no-answer');
    expect(noAnswer, 'requests without an answer (crash or hang)').to.deep.equal([]);
    const refused = outcomes.filter((o) => o.kind === 'refused');
    expect(refused.length, 'the outage was seen by requests').to.be.greaterThan(0);
    for (const r of refused) {
      expect(
        { status: r.status, type: r.contentType.split(';')[0], known: DATABASE_CODES.includes(r.code ?? '') },
        JSON.stringify(r),
      ).to.deep.equal({
        status: 503,
        type: 'application/problem+json',
        known: true,
      });
    }
    // /readyz: ready before, not ready (503, still answering) while down, ready again after.
    for (const name of ['a', 'b']) {
      const before = readiness.filter((s) => s.instance === name && s.at < down).map((s) => s.status);
      expect(before, `${name} before`).to.include(200);
      expect(
        readyzOf(name, down).filter((s) => s === 'no-answer'),
        `${name}: /readyz answered`,
      ).to.deep.equal([]);
      expect(readiness.filter((s) => s.instance === name && s.at >= down && s.at < up).map((s) => s.status)).to.include(
        503,
      );
    }
    // eslint-disable-next-line no-console
    console.log(
      `      outage ${((up - down) / 1000).toFixed(1)} s; ready again ${((ready - up) / 1000).toFixed(1)} s after restart; ` +
        `${refused.length} refusals (503), ${acked.size} acknowledged of ${deliveries.length} in the storm`,
    );

    // The same processes, recovered by themselves: the gateway redelivers what was not acknowledged.
    await redeliverUntilAcknowledged([a.url, b.url], deliveries, acked);
    expect(acked.size).to.equal(deliveries.length);
    const crashDb = connect(crashUrl);
    await expectEveryAcknowledgementDurable([a.url, b.url], deliveries, acked, crashDb);

    // The reference: the same deliveries into another database, no crash.
    const clean = await start('reference', referenceUrl);
    await storm([clean.url], deliveries, () => undefined);
    const referenceDb = connect(referenceUrl);
    const payments = await paymentsOf(crashDb);
    expect(payments).to.have.length(PAYMENTS);
    expect(payments).to.deep.equal(await paymentsOf(referenceDb));
    expect(await ledgerOf(crashDb)).to.deep.equal(await ledgerOf(referenceDb));
    expect((await checkLedger(crashDb)).violations).to.deep.equal([]);
  });
});
