/**
 * Fault: the service is killed (SIGKILL) in the middle of a storm of signed webhooks. A gateway
 * redelivers every delivery it did not see acknowledged; afterwards every payment must be exactly as
 * in a run without the crash, and every delivery acknowledged before the crash must still be there.
 *
 * Runs the real entry point (src/main.ts) as a child process on PostgreSQL (DATABASE_URL).
 */
import { randomBytes, randomInt } from 'node:crypto';
import path from 'node:path';
import { expect } from 'chai';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { startChildServer, type ChildServer } from '../../bench/lib/child-server.js';
import { projectRoot } from '../../src/config/project-root.js';
import { createTestDatabase, usingPostgres, type TestDatabase } from '../support/database.js';
import { TEST_PANS } from '../support/pans.js';
import { platformEvent, platformHeaders, webhookEnv } from '../support/webhooks.js';
import os from 'node:os';
import fs from 'node:fs';

interface Delivery {
  readonly id: string;
  readonly body: string;
}

const PAYMENTS = 150;
const CONCURRENCY = 16;

/** Authorise, capture, two partial refunds and, for some, a chargeback: shuffled across payments. */
function buildDeliveries(): Delivery[] {
  const pans = [...TEST_PANS.visa, ...TEST_PANS.mastercard];
  const out: Delivery[] = [];
  for (let p = 0; p < PAYMENTS; p++) {
    const paymentId = `storm-${p}-${randomBytes(3).toString('hex')}`;
    const events = [
      platformEvent({ paymentId, amount: 10_000 + p, card: { pan: pans[p % pans.length] as string } }),
      platformEvent({ type: 'payment.captured', paymentId, amount: 10_000 + p }),
      platformEvent({ type: 'payment.refunded', paymentId, refund: { id: `${paymentId}-r1`, amount: 1_000 } }),
      platformEvent({ type: 'payment.refunded', paymentId, refund: { id: `${paymentId}-r2`, amount: 2_000 } }),
    ];
    if (p % 5 === 0) {
      events.push(
        platformEvent({ type: 'payment.chargeback', paymentId, chargeback: { id: `${paymentId}-cb`, amount: 3_000 } }),
      );
    }
    events.forEach((event, i) => out.push({ id: `msg_${paymentId}_${i}`, body: JSON.stringify(event) }));
  }
  for (let i = out.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    [out[i], out[j]] = [out[j] as Delivery, out[i] as Delivery];
  }
  return out;
}

async function startService(db: TestDatabase, masterKey: string, dir: string): Promise<ChildServer> {
  return startChildServer({
    name: 'service',
    args: ['--import', 'tsx', path.join(projectRoot(), 'src', 'main.ts')],
    cwd: projectRoot(),
    env: {
      NODE_ENV: 'test',
      DATABASE_URL: db.url as string,
      MASTER_KEY: masterKey,
      DATA_DIR: path.join(dir, 'data'),
      LOG_LEVEL: 'warn',
      ...webhookEnv(),
    },
    logFile: path.join(dir, `service-${Date.now()}.log`),
  });
}

/** Sends one delivery; resolves with the stored event id if acknowledged, undefined otherwise. */
async function deliver(url: string, delivery: Delivery): Promise<{ eventId: string; duplicate: boolean } | undefined> {
  try {
    const res = await fetch(`${url}/v1/webhooks/platform`, {
      method: 'POST',
      headers: platformHeaders(delivery.body, { id: delivery.id }),
      body: delivery.body,
      signal: AbortSignal.timeout(10_000),
    });
    if (res.status !== 200) return undefined;
    return (await res.json()) as { eventId: string; duplicate: boolean };
  } catch {
    return undefined; // connection refused or reset: not acknowledged
  }
}

/** Sends every delivery with bounded concurrency; `onAck` sees each acknowledgement as it comes. */
async function storm(
  url: string,
  deliveries: readonly Delivery[],
  onAck: (d: Delivery, eventId: string, duplicate: boolean) => void,
): Promise<void> {
  const queue = [...deliveries];
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let d = queue.shift(); d !== undefined; d = queue.shift()) {
        const ack = await deliver(url, d);
        if (ack !== undefined) onAck(d, ack.eventId, ack.duplicate);
      }
    }),
  );
}

async function paymentsOf(db: TestDatabase): Promise<Record<string, unknown>[]> {
  const rows = (await db
    .knex('payments')
    .select(
      'external_id',
      'state',
      'currency',
      'authorised_amount',
      'captured_amount',
      'refunded_amount',
      'charged_back_amount',
      'card_last4',
      'shopper_ref',
    )
    .orderBy('external_id')) as Record<string, unknown>[];
  // Shopper references are random per database: compare who shares a shopper, not the references.
  const firstByShopper = new Map<unknown, unknown>();
  return rows.map(({ shopper_ref: shopper, ...row }) => {
    if (!firstByShopper.has(shopper)) firstByShopper.set(shopper, row['external_id']);
    return { ...row, shopperGroup: firstByShopper.get(shopper) };
  });
}

/** Each payment's points (its lot) and each shopper group's balance: what the ledger booked. */
async function ledgerOf(db: TestDatabase): Promise<Record<string, unknown>[]> {
  const rows = (await db
    .knex('payments as p')
    .leftJoin('loyalty_lots as l', 'l.payment_id', 'p.id')
    .leftJoin('loyalty_accounts as a', 'a.shopper_ref', 'p.shopper_ref')
    .select(
      'p.external_id',
      'l.pending',
      'l.earn_target',
      'l.reversal_target',
      'l.remaining',
      'l.written_off',
      'a.available',
      'a.pending as account_pending',
      'a.lifetime_earned',
    )
    .orderBy('p.external_id')) as Record<string, unknown>[];
  return rows;
}

describe('fault: SIGKILL during a webhook storm', function () {
  this.timeout(300_000);
  const dirs: string[] = [];
  const dbs: TestDatabase[] = [];
  const servers: ChildServer[] = [];

  before(function () {
    if (!usingPostgres) this.skip();
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.stop().catch(() => undefined)));
    await Promise.all(dbs.map((db) => db.close()));
    dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
  });

  const scratch = () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-fault-'));
    dirs.push(dir);
    return dir;
  };

  it('when redelivered after the crash, then every payment and every ledger equals a crash-free run and no acknowledged event is lost', async () => {
    const deliveries = buildDeliveries();
    const masterKey = randomBytes(32).toString('base64');

    // The crash run.
    const crashDb = await createTestDatabase();
    dbs.push(crashDb);
    const dir = scratch();
    const first = await startService(crashDb, masterKey, dir);
    servers.push(first);
    const acked = new Map<string, string>();
    let killed = false;
    await storm(first.url, deliveries, (d, eventId) => {
      acked.set(d.id, eventId);
      if (!killed && acked.size >= deliveries.length * 0.4) {
        killed = true;
        first.kill();
      }
    });
    expect(killed, 'the service was killed mid-storm').to.equal(true);
    expect(acked.size).to.be.below(deliveries.length);

    // Restart; the gateway redelivers what it did not see acknowledged, until everything is.
    const second = await startService(crashDb, masterKey, dir);
    servers.push(second);
    for (let round = 0; round < 5 && acked.size < deliveries.length; round++) {
      await storm(
        second.url,
        deliveries.filter((d) => !acked.has(d.id)),
        (d, eventId) => acked.set(d.id, eventId),
      );
    }
    expect(acked.size).to.equal(deliveries.length);

    // Everything acknowledged before the crash is durable: redelivered, it is a duplicate of itself.
    const replays = new Map<string, { eventId: string; duplicate: boolean }>();
    await storm(second.url, deliveries, (d, eventId, duplicate) => replays.set(d.id, { eventId, duplicate }));
    for (const d of deliveries) {
      expect(replays.get(d.id), d.id).to.deep.equal({ eventId: acked.get(d.id), duplicate: true });
    }
    const inbox = await crashDb.knex('webhook_inbox').count({ n: '*' });
    expect(Number(inbox[0]?.n)).to.equal(deliveries.length);

    // The reference run: the same deliveries, no crash.
    const cleanDb = await createTestDatabase();
    dbs.push(cleanDb);
    const clean = await startService(cleanDb, masterKey, scratch());
    servers.push(clean);
    await storm(clean.url, deliveries, () => undefined);

    const crashed = await paymentsOf(crashDb);
    expect(crashed).to.have.length(PAYMENTS);
    expect(crashed).to.deep.equal(await paymentsOf(cleanDb));
    // And the points: every lot and every balance as in the crash-free run, the invariants intact.
    expect(await ledgerOf(crashDb)).to.deep.equal(await ledgerOf(cleanDb));
    expect((await checkLedger(crashDb.knex)).violations).to.deep.equal([]);
  });
});
