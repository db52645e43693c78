/**
 * Fault: one of two service instances is killed (SIGKILL) in the middle of a storm of signed
 * webhooks. A gateway balancing over both redelivers every delivery it did not see acknowledged;
 * afterwards every payment and every ledger must be exactly as in a run without the crash, and every
 * delivery acknowledged before the crash must still be there.
 *
 * Runs the real entry point (src/main.ts) as child processes on PostgreSQL (DATABASE_URL).
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { ChildServer } from '../../bench/lib/child-server.js';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { createTestDatabase, usingPostgres, type TestDatabase } from '../support/database.js';
import {
  buildDeliveries,
  expectEveryAcknowledgementDurable,
  ledgerOf,
  paymentsOf,
  redeliverUntilAcknowledged,
  scratchDirs,
  startService,
  storm,
} from './storm.js';

const PAYMENTS = 150;

describe('fault: SIGKILL of one of two instances during a webhook storm', function () {
  this.timeout(300_000);
  const scratch = scratchDirs();
  const dbs: TestDatabase[] = [];
  const servers: ChildServer[] = [];

  before(function () {
    if (!usingPostgres) this.skip();
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.stop().catch(() => undefined)));
    await Promise.all(dbs.map((db) => db.close()));
    scratch.cleanup();
  });

  async function instance(db: TestDatabase, masterKey: string, dir: string, name: string): Promise<ChildServer> {
    const server = await startService({ databaseUrl: db.url as string, masterKey, dir, name });
    servers.push(server);
    return server;
  }

  it('when redelivered after the crash, then every payment and every ledger equals a crash-free run and no acknowledged event is lost', async () => {
    const deliveries = buildDeliveries(PAYMENTS);
    const masterKey = randomBytes(32).toString('base64');

    // The crash run: instances a and b on one database; a is killed once 40% are acknowledged.
    const crashDb = await createTestDatabase();
    dbs.push(crashDb);
    const dir = scratch.make();
    const a = await instance(crashDb, masterKey, dir, 'a');
    const b = await instance(crashDb, masterKey, dir, 'b');
    const acked = new Map<string, string>();
    const ackedBy = { a: 0, b: 0 };
    let killed = false;
    await storm([a.url, b.url], deliveries, (d, outcome, url) => {
      if (outcome.kind !== 'acknowledged') return;
      acked.set(d.id, outcome.eventId);
      ackedBy[url === a.url ? 'a' : 'b'] += 1;
      if (!killed && acked.size >= deliveries.length * 0.4) {
        killed = true;
        a.kill();
      }
    });
    expect(killed, 'instance a was killed mid-storm').to.equal(true);
    expect(ackedBy.a, 'a acknowledged some before the crash').to.be.greaterThan(0);
    expect(ackedBy.b, 'b went on acknowledging after the crash').to.be.greaterThan(ackedBy.a);
    expect(acked.size).to.be.below(deliveries.length);

    // a comes back; the gateway redelivers what it did not see acknowledged, over both, until all are.
    const a2 = await instance(crashDb, masterKey, dir, 'a2');
    await redeliverUntilAcknowledged([a2.url, b.url], deliveries, acked);
    expect(acked.size).to.equal(deliveries.length);

    // Everything acknowledged is durable: redelivered, it is a duplicate of itself.
    await expectEveryAcknowledgementDurable([a2.url, b.url], deliveries, acked, crashDb.knex);

    // The reference run: the same deliveries, one instance, no crash.
    const cleanDb = await createTestDatabase();
    dbs.push(cleanDb);
    const clean = await instance(cleanDb, masterKey, scratch.make(), 'clean');
    await storm([clean.url], deliveries, () => undefined);

    const crashed = await paymentsOf(crashDb.knex);
    expect(crashed).to.have.length(PAYMENTS);
    expect(crashed).to.deep.equal(await paymentsOf(cleanDb.knex));
    // And the points: every lot and every balance as in the crash-free run, the invariants intact.
    expect(await ledgerOf(crashDb.knex)).to.deep.equal(await ledgerOf(cleanDb.knex));
    expect((await checkLedger(crashDb.knex)).violations).to.deep.equal([]);
  });
});
