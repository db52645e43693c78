/**
 * Outbound delivery isolated per subscriber (issue 24): a receiver that accepts connections and never
 * answers next to a healthy one, both real local HTTP servers (the dispatcher's own sender, routed
 * to them). The healthy one's events must not wait for the stalled one's timeouts; the stalled one
 * holds no more than its in-flight cap; its circuit breaker opens, probes and closes.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { expect } from 'chai';
import { EventDispatcher, type DeliveryRecord, type DispatcherOptions } from '../../src/events/dispatcher.js';
import { postWebhook, type WebhookSender } from '../../src/events/http-sender.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { newShopper } from '../loyalty/support.js';
import { fakeResolver, HOSTS, subscribe, TEST_DISPATCH, TestClock } from './support.js';

interface LocalReceiver {
  readonly port: number;
  /** Requests received (a stalled receiver's are never answered). */
  readonly requests: string[];
  /** Stalled: accept and read, never answer; otherwise 204. */
  stalled: boolean;
  close(): Promise<void>;
}

async function localReceiver(stalled: boolean): Promise<LocalReceiver> {
  const sockets = new Set<Socket>();
  const state = {
    requests: [] as string[],
    stalled,
  };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      state.requests.push(String(req.headers['webhook-id']));
      if (!state.stalled) res.writeHead(204).end();
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    get requests() {
      return state.requests;
    },
    get stalled() {
      return state.stalled;
    },
    set stalled(v: boolean) {
      state.stalled = v;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('outbound delivery isolated per subscriber', function () {
  this.timeout(180_000);
  let svc: TestService;
  let admin: string;
  let stalled: LocalReceiver;
  let healthy: LocalReceiver;
  let stalledSub: { id: string; secret: string };
  let healthySub: { id: string; secret: string };
  const pans = generatePans(80, '455555');

  before(async () => {
    svc = await startTestService({ eventResolver: fakeResolver });
    admin = await signToken({ scope: 'loyalty:admin' });
    HOSTS['stalled.example.com'] = [{ address: '151.101.2.69', family: 4 }];
    HOSTS['healthy.example.com'] = [{ address: '151.101.3.69', family: 4 }];
  });
  after(async () => {
    await svc.close();
  });
  beforeEach(async () => {
    stalled = await localReceiver(true);
    healthy = await localReceiver(false);
    stalledSub = await subscribe(svc, 'https://stalled.example.com/hook', ['shopper.created']);
    healthySub = await subscribe(svc, 'https://healthy.example.com/hook', ['shopper.created']);
    // 40 shoppers: 40 events, each the head of its own queue, for each subscriber.
    for (const pan of pans.splice(0, 40)) await newShopper(svc, pan);
  });
  afterEach(async () => {
    await stalled.close();
    await healthy.close();
    for (const sub of [stalledSub, healthySub]) {
      await svc.request('DELETE', `/v1/admin/subscriptions/${sub.id}`, { token: admin });
    }
  });

  /** The real sender, its connection routed to the local receiver of the subscription's host. */
  const routed: WebhookSender = (request) => {
    const target = request.url.hostname === 'stalled.example.com' ? stalled : healthy;
    return postWebhook({
      ...request,
      url: new URL(`http://127.0.0.1:${target.port}${request.url.pathname}`),
      address: { address: '127.0.0.1', family: 4 },
    });
  };

  const dispatcher = (clock: TestClock, options: Partial<DispatcherOptions>, extra = {}): EventDispatcher =>
    new EventDispatcher({
      knex: svc.db.knex,
      keyRing: svc.service.keyRing,
      targets: { resolver: fakeResolver, allowHttp: false, allowPrivate: false },
      options: { ...TEST_DISPATCH, ...options },
      now: clock.now,
      clockOffsetMs: clock.offsetMs,
      random: () => 0.5,
      send: routed,
      ...extra,
    });

  const attemptsOf = async (subscriptionId: string): Promise<number> =>
    Number(
      (
        (await svc.db
          .knex('outbound_delivery_attempts')
          .where({ subscription_id: subscriptionId })
          .count('* as n')) as {
          n: string;
        }[]
      )[0]?.n,
    );

  it('when one receiver stalls, then a healthy one gets its 40 events while the stalled ones are still in flight, and the stalled one holds no more than its cap', async () => {
    const due = 40;
    const clock = new TestClock();
    // Long timeout: the stalled deliveries cannot end while the healthy ones are delivered.
    const d = dispatcher(clock, { batchSize: 6, maxInFlightPerSubscription: 2, timeoutMs: 60_000 });
    d.start();
    try {
      // Bounded wait (a guard against a hang, not a timing assertion).
      for (let i = 0; i < 600 && healthy.requests.length < due; i++) await sleep(50);
      expect(healthy.requests).to.have.length(due);
      expect(new Set(healthy.requests).size).to.equal(due);
      // The stalled subscriber's deliveries are still in flight: none has ended, none is recorded,
      // and exactly its cap of them hold slots (leased), the rest wait unclaimed.
      expect(await attemptsOf(stalledSub.id)).to.equal(0);
      expect(stalled.requests).to.have.length(2);
      const leased = await svc.db
        .knex('outbound_deliveries')
        .where({ subscription_id: stalledSub.id, state: 'pending' })
        .whereNotNull('lease_token');
      expect(leased).to.have.length(2);
      // Recorded too (the record follows the answer), with the stalled two still holding their slots.
      for (let i = 0; i < 600 && (await attemptsOf(healthySub.id)) < due; i++) await sleep(20);
      expect(await attemptsOf(healthySub.id)).to.equal(due);
      expect(await attemptsOf(stalledSub.id)).to.equal(0);
      expect(d.busySlots).to.equal(2);
    } finally {
      // Cut the stalled connections so the test need not wait for their timeout.
      await stalled.close();
      await d.stop();
    }
    expect(
      await svc.db
        .knex('outbound_deliveries')
        .where({ subscription_id: healthySub.id })
        .whereNot({ state: 'delivered' }),
    ).to.have.length(0);
  });

  const ofStalled = (records: readonly DeliveryRecord[]): string[] =>
    records.filter((r) => r.subscriptionId === stalledSub.id).map((r) => r.outcome);

  it('when a receiver keeps timing out, then its breaker opens (nothing claimed, no attempt used), lets one probe through when half-open, opens again on a timeout and closes on an answer', async () => {
    const clock = new TestClock();
    const changes: string[] = [];
    const d = dispatcher(
      clock,
      { maxInFlightPerSubscription: 2, breakerThreshold: 2, breakerCooldownMs: 60_000, timeoutMs: 300 },
      { onBreaker: (change: string, id: string) => changes.push(`${change}:${id === stalledSub.id}`) },
    );
    const view = async (): Promise<Record<string, unknown> | undefined> => {
      const res = await svc.request('GET', `/v1/admin/subscriptions/${stalledSub.id}`, { token: admin });
      expect(res.status, res.text).to.equal(200);
      return res.body.breaker as Record<string, unknown> | undefined;
    };
    expect(await view()).to.equal(undefined);

    // Round 1: two stalled deliveries (its cap) time out, the healthy subscriber's all go through.
    const first = await d.runOnce();
    expect(ofStalled(first)).to.deep.equal(['timeout', 'timeout']);
    expect(stalled.requests).to.have.length(2);
    expect(changes).to.deep.equal(['opened:true']);
    expect(await view()).to.deep.include({ state: 'open', consecutiveTimeouts: 2 });

    // Open: its retries are due, but nothing of it is claimed, and no attempt is used up.
    clock.advance(5_000);
    expect(ofStalled(await d.runOnce())).to.deep.equal([]);
    expect(stalled.requests).to.have.length(2);
    expect(await attemptsOf(stalledSub.id)).to.equal(2);

    // Half-open: one probe, which times out: open again.
    clock.advance(60_000);
    const probe = await d.runOnce();
    expect(ofStalled(probe)).to.deep.equal(['timeout']);
    expect(stalled.requests).to.have.length(3);
    expect(changes).to.deep.equal(['opened:true', 'opened:true']);
    clock.advance(5_000);
    expect(ofStalled(await d.runOnce())).to.deep.equal([]);

    // The receiver recovers: the next probe's answer closes the breaker; then its cap applies again.
    stalled.stalled = false;
    clock.advance(60_000);
    const recovered = await d.runOnce();
    expect(ofStalled(recovered)).to.deep.equal(['delivered']);
    expect(changes).to.deep.equal(['opened:true', 'opened:true', 'closed:true']);
    expect(await view()).to.equal(undefined);
    const next = await d.runOnce();
    expect(ofStalled(next)).to.deep.equal(['delivered', 'delivered']);
    for (let i = 0; i < 20 && (await d.runOnce()).length > 0; i++);
    expect(
      await svc.db
        .knex('outbound_deliveries')
        .where({ subscription_id: healthySub.id })
        .whereNot({ state: 'delivered' }),
    ).to.have.length(0);
  });
});
