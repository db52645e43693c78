/**
 * The receiver of docs/guides/loyalty-app.md (docs/examples/crm-receiver.ts) against real deliveries
 * over loopback: no nock interception here, the dispatcher's own node:http request reaches a real
 * server, with the development settings the guide names (http and private targets allowed).
 */
import { expect } from 'chai';
import { EventDispatcher } from '../../src/events/dispatcher.js';
import { startReceiver, type LoyaltyEvent } from '../../docs/examples/crm-receiver.js';
import { signToken } from '../support/auth.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { newShopper, payment } from '../loyalty/support.js';
import { TEST_DISPATCH } from './support.js';

describe('outbound events: the loyalty-app guide receiver', function () {
  this.timeout(120_000);
  let svc: TestService;

  before(async () => {
    // The guide's development setup: NODE_ENV=development (http allowed) and private targets allowed.
    svc = await startTestService({
      env: await testEnv({ NODE_ENV: 'development', EVENTS_ALLOW_PRIVATE_TARGETS: 'true' }),
    });
  });
  after(async () => svc.close());

  it('when a CRM subscribes its local receiver in development, then it verifies, dedupes and gets the events in order', async () => {
    const events: LoyaltyEvent[] = [];
    // A free port for the receiver, whose secret is known only once it is subscribed.
    const probe = await startReceiver({ secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', onEvent: () => undefined });
    const url = probe.url;
    await probe.close();
    const created = await svc.request('POST', '/v1/admin/subscriptions', {
      token: await signToken({ scope: 'loyalty:admin' }),
      json: { url, eventTypes: ['shopper.created', 'points.available'] },
    });
    expect(created.status, created.text).to.equal(201);
    const sub = { secret: created.body.secret as string };
    expect(sub.secret).to.match(/^whsec_/);
    const port = Number(new URL(url).port);
    const receiver = await startReceiver({ secret: sub.secret, port, onEvent: (e) => events.push(e) });
    try {
      const dispatcher = new EventDispatcher({
        knex: svc.db.knex,
        keyRing: svc.service.keyRing,
        targets: { resolver: () => Promise.resolve([]), allowHttp: true, allowPrivate: true },
        options: TEST_DISPATCH,
      });
      const s = await newShopper(svc, '6011111111111117');
      await payment(s, { amount: 2_500, channel: 'in_store' }).send(svc, { type: 'authorised' });
      const first = await dispatcher.runOnce();
      const second = await dispatcher.runOnce();
      expect([...first, ...second].map((r) => r.outcome)).to.deep.equal(['delivered', 'delivered']);
      expect(events.map((e) => e.type)).to.deep.equal(['shopper.created', 'points.available']);
      expect(events[1]?.data).to.include({ shopperReference: s.shopperRef });
      expect(JSON.stringify(events)).to.not.contain('6011111111111117');
      // A delivery signed with another secret is refused by the receiver (401), so never recorded.
      const forged = await fetch(url, {
        method: 'POST',
        headers: {
          'webhook-id': 'msg_x',
          'webhook-timestamp': String(Math.floor(Date.now() / 1000)),
          'webhook-signature': 'v1,AAAA',
        },
        body: '{}',
      });
      expect(forged.status).to.equal(401);
    } finally {
      await receiver.close();
    }
  });
});
