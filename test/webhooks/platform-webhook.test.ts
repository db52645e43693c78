import { expect } from 'chai';
import { signToken } from '../support/auth.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { TEST_PANS } from '../support/pans.js';
import {
  WEBHOOK_SECRETS,
  paymentId,
  platformEvent,
  platformHeaders,
  postPlatform,
  webhookEnv,
} from '../support/webhooks.js';

const VISA = TEST_PANS.visa[0];

describe('platform webhook (Standard Webhooks)', function () {
  let svc: TestService;
  let admin: string;

  before(async () => {
    // Both platform secrets live, as during a rotation; the first is the old one.
    svc = await startTestService({ env: await testEnv(webhookEnv('both')) });
    admin = await signToken({ scope: 'loyalty:admin' });
  });
  after(async () => svc.close());

  const inboxCount = async (): Promise<number> => Number((await svc.db.knex('webhook_inbox').count({ n: '*' }))[0]?.n);
  const authorised = () =>
    platformEvent({ paymentId: paymentId(), card: { pan: VISA, expiryMonth: 12, expiryYear: 2031 } });

  describe('verification', () => {
    it('when the delivery is signed with a live secret, then 200 with the stored event and state applied', async () => {
      const res = await postPlatform(svc, authorised());
      expect(res.status).to.equal(200);
      expect(res.body).to.include({ state: 'applied', duplicate: false });
      expect(res.body.eventId).to.match(/^evt_/);
    });

    it('when the body is changed after signing, then 401 WEBHOOK_SIGNATURE_INVALID and nothing is stored', async () => {
      const before = await inboxCount();
      const body = JSON.stringify(authorised());
      const headers = platformHeaders(body);
      const tampered = body.replace('10000', '10001');
      const res = await svc.request('POST', '/v1/webhooks/platform', { body: tampered, headers });
      expect(res.status).to.equal(401);
      expect(res.body.code).to.equal('WEBHOOK_SIGNATURE_INVALID');
      expect(await inboxCount()).to.equal(before);
    });

    it('when the body is re-serialised (same JSON, other bytes), then 401: the raw bytes are what is verified', async () => {
      const event = authorised();
      const body = JSON.stringify(event);
      const res = await svc.request('POST', '/v1/webhooks/platform', {
        body: JSON.stringify(event, null, 2),
        headers: platformHeaders(body),
      });
      expect(res.status).to.equal(401);
    });

    it('when signed with a secret the service does not know, then 401 WEBHOOK_SIGNATURE_INVALID', async () => {
      const res = await postPlatform(svc, authorised(), {
        secrets: [`whsec_${Buffer.alloc(32, 7).toString('base64')}`],
      });
      expect(res.status).to.equal(401);
      expect(res.body.code).to.equal('WEBHOOK_SIGNATURE_INVALID');
    });

    it('when signed with the new secret during a rotation, then 200 and the inbox records which secret matched', async () => {
      const res = await postPlatform(svc, authorised(), { secrets: [WEBHOOK_SECRETS.platform[1]] });
      expect(res.status).to.equal(200);
      const row = await svc.db.knex('webhook_inbox').where({ id: res.body.eventId }).first('secret_index');
      expect(row.secret_index).to.equal(1);
    });

    it('when several signatures are sent (an unknown one first), then any one matching is enough', async () => {
      const unknown = `whsec_${Buffer.alloc(32, 9).toString('base64')}`;
      const res = await postPlatform(svc, authorised(), { secrets: [unknown, WEBHOOK_SECRETS.platform[1]] });
      expect(res.status).to.equal(200);
    });

    for (const [label, offsetSeconds] of [
      ['too old', -301],
      ['too new', 301],
    ] as const) {
      it(`when the timestamp is ${label} (${offsetSeconds} s), then 401 WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE`, async () => {
        const res = await postPlatform(svc, authorised(), { timestamp: new Date(Date.now() + offsetSeconds * 1000) });
        expect(res.status).to.equal(401);
        expect(res.body.code).to.equal('WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE');
      });
    }

    it('when the timestamp is just inside the tolerance, then 200', async () => {
      const res = await postPlatform(svc, authorised(), { timestamp: new Date(Date.now() - 290_000) });
      expect(res.status).to.equal(200);
    });

    for (const header of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      it(`when ${header} is missing, then 401 WEBHOOK_SIGNATURE_MISSING`, async () => {
        const body = JSON.stringify(authorised());
        const headers = platformHeaders(body);
        delete headers[header];
        const res = await svc.request('POST', '/v1/webhooks/platform', { body, headers });
        expect(res.status).to.equal(401);
        expect(res.body.code).to.equal('WEBHOOK_SIGNATURE_MISSING');
      });
    }

    it('when a correctly signed body is not JSON, then 400 MALFORMED_JSON without echoing it', async () => {
      const body = `{"card": {"pan": "${VISA}"`;
      const res = await svc.request('POST', '/v1/webhooks/platform', { body, headers: platformHeaders(body) });
      expect(res.status).to.equal(400);
      expect(res.body.code).to.equal('MALFORMED_JSON');
      expect(res.text).not.to.contain(VISA);
    });

    it('when the body is over the size limit, then 413 PAYLOAD_TOO_LARGE', async () => {
      const body = JSON.stringify({ ...authorised(), padding: 'x'.repeat(70 * 1024) });
      const res = await svc.request('POST', '/v1/webhooks/platform', { body, headers: platformHeaders(body) });
      expect(res.status).to.equal(413);
      expect(res.body.code).to.equal('PAYLOAD_TOO_LARGE');
    });

    it('when the event type is unknown, then 400 VALIDATION_FAILED pointing at /body/type and nothing is stored', async () => {
      const before = await inboxCount();
      const res = await postPlatform(svc, { ...authorised(), type: 'payment.teleported' });
      expect(res.status).to.equal(400);
      expect(res.body.code).to.equal('VALIDATION_FAILED');
      expect(res.body.errors.map((e: { pointer: string }) => e.pointer)).to.include('/body/type');
      expect(await inboxCount()).to.equal(before);
    });

    it('when a refund event has no refund, then 400 VALIDATION_FAILED', async () => {
      const res = await postPlatform(svc, { ...authorised(), type: 'payment.refunded' });
      expect(res.status).to.equal(400);
    });

    it("when a refund, chargeback or payment id starts with `~` (the stored digests' prefix), then 400 VALIDATION_FAILED at that id and nothing is stored", async () => {
      // A chargeback without its own id is keyed by its delivery; a card-shaped UUID webhook-id makes
      // that fact key a keyed digest (`~…`). An id the sender chose must never be able to equal one.
      const id = paymentId('tilde');
      expect((await postPlatform(svc, platformEvent({ paymentId: id }))).status).to.equal(200);
      const first = await postPlatform(svc, platformEvent({ paymentId: id, type: 'payment.chargeback' }), {
        id: '41111111-1111-1111-abcd-ef0123456789',
      });
      expect(first.status, first.text).to.equal(200);
      const payment = await svc.db.knex('payments').where({ external_id: id }).first('id');
      const digest = (await svc.db.knex('payment_facts').where({ payment_id: payment.id, kind: 'chargeback' }).first())
        .fact_key as string;
      expect(digest).to.match(/^~[A-Za-z0-9_-]{43}$/);
      const before = await inboxCount();
      for (const [event, pointer] of [
        [
          platformEvent({ paymentId: id, type: 'payment.chargeback', chargeback: { id: digest, amount: 1 } }),
          '/body/chargeback/id',
        ],
        [
          platformEvent({ paymentId: id, type: 'payment.refunded', refund: { id: '~r1', amount: 1 } }),
          '/body/refund/id',
        ],
        [platformEvent({ paymentId: `~${id}` }), '/body/payment/id'],
      ] as const) {
        const res = await postPlatform(svc, event);
        expect(res.status, res.text).to.equal(400);
        expect(res.body.code).to.equal('VALIDATION_FAILED');
        expect(res.body.errors.map((e: { pointer: string }) => e.pointer)).to.include(pointer);
      }
      expect(await inboxCount()).to.equal(before);
      expect(await svc.db.knex('payment_facts').where({ payment_id: payment.id, kind: 'chargeback' })).to.have.length(
        1,
      );
      // A `~` elsewhere in an id is still printable ASCII: accepted.
      const later = await postPlatform(
        svc,
        platformEvent({ paymentId: id, type: 'payment.refunded', refund: { id: 'r~1', amount: 1 } }),
      );
      expect(later.status, later.text).to.equal(200);
    });

    it('when a signed event carries a CVV, then 422 SENSITIVE_AUTHENTICATION_DATA and nothing is stored', async () => {
      const before = await inboxCount();
      const event = platformEvent({ paymentId: paymentId(), card: { pan: VISA, cvv: '123' } });
      const res = await postPlatform(svc, event);
      expect(res.status).to.equal(422);
      expect(res.body.code).to.equal('SENSITIVE_AUTHENTICATION_DATA');
      expect(await inboxCount()).to.equal(before);
    });

    it('when a signed event has a Luhn-invalid PAN, then 422 PAN_INVALID without echoing it', async () => {
      const event = platformEvent({ paymentId: paymentId(), card: { pan: '4111111111111112' } });
      const res = await postPlatform(svc, event);
      expect(res.status).to.equal(422);
      expect(res.body.code).to.equal('PAN_INVALID');
      expect(res.text).not.to.contain('4111111111111112');
    });

    it('when a signed event names an unknown card token, then 422 CARD_TOKEN_UNKNOWN', async () => {
      const event = platformEvent({ paymentId: paymentId(), card: { token: `tok_${'a'.repeat(26)}` } });
      const res = await postPlatform(svc, event);
      expect(res.status).to.equal(422);
      expect(res.body.code).to.equal('CARD_TOKEN_UNKNOWN');
    });

    it('when deliveries are refused, then the refusals are counted by provider and outcome', async () => {
      await postPlatform(svc, authorised(), { secrets: [`whsec_${Buffer.alloc(32, 3).toString('base64')}`] });
      const metrics = await svc.request('GET', '/metrics', { token: await signToken({ scope: 'metrics:read' }) });
      expect(metrics.status).to.equal(200);
      expect(metrics.text).to.match(
        /webhook_deliveries_total\{outcome="WEBHOOK_SIGNATURE_INVALID",provider="platform"\} [1-9]/,
      );
      expect(metrics.text).to.match(/webhook_deliveries_total\{outcome="applied",provider="platform"\} [1-9]/);
    });

    it('when the metrics are asked for without metrics:read, then 403', async () => {
      const res = await svc.request('GET', '/metrics', { token: admin });
      expect(res.status).to.equal(403);
    });
  });

  describe('redelivery', () => {
    it('when the same delivery arrives ten times at once, then one event, one payment, ten acknowledgements', async () => {
      const event = authorised();
      const body = JSON.stringify(event);
      const headers = platformHeaders(body);
      const responses = await Promise.all(
        Array.from({ length: 10 }, () => svc.request('POST', '/v1/webhooks/platform', { body, headers })),
      );
      expect(responses.map((r) => r.status)).to.deep.equal(Array(10).fill(200));
      expect(responses.filter((r) => r.body.duplicate === false)).to.have.length(1);
      expect(new Set(responses.map((r) => r.body.eventId)).size).to.equal(1);
      const payment = (event['payment'] as { id: string }).id;
      expect(await svc.db.knex('payments').where({ external_id: payment }).count({ n: '*' })).to.deep.equal([{ n: 1 }]);
      const facts = await svc.db
        .knex('payment_facts')
        .join('payments', 'payments.id', 'payment_facts.payment_id')
        .where({ external_id: payment });
      expect(facts).to.have.length(1);
    });
  });
});
