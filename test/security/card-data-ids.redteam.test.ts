/**
 * Red team, issue 16 (ids): a card number sent as an identifier — the platform's `payment.id`,
 * `refund.id`, `chargeback.id`, the Standard Webhooks `webhook-id`, Stripe's event and object ids.
 * Ids are stored and served as sent (masking would merge two of them), so a delivery whose id holds a
 * card number is refused (422 CARD_NUMBER_NOT_ALLOWED, problem+json, nothing stored) and a
 * `webhook-id` of another shape is refused (400 WEBHOOK_ID_INVALID). Through the real HTTP API and the
 * gateways' own signing libraries (`standardwebhooks`, Stripe's signature); then every row of every
 * table (and pg_dump on PostgreSQL), every response body, the debug log and the outbox are scanned for
 * every PAN sent.
 */
import { expect } from 'chai';
import { signToken } from '../support/auth.js';
import { startTestService, testEnv, type TestResponse, type TestService } from '../support/harness.js';
import {
  adyenItem,
  paymentId,
  platformEvent,
  postAdyen,
  postPlatform,
  postStripe,
  stripeChargeEvent,
} from '../support/webhooks.js';
import { luhnValid } from '../../src/card-data/card-data-guard.js';
import { generatePans } from '../support/pans.js';
import { balance, newShopper, payment } from '../loyalty/support.js';
import {
  RED_TEAM_PANS,
  dumpEveryRow,
  keyForms,
  panForms,
  panHits,
  pgDump,
  storedKeysHoldingCardData,
} from './card-data-support.js';

/**
 * UUIDs crafted around a scheme test PAN (the first groups read as the dashed number, Luhn-valid): the
 * edge lets UUID ids through, so they must be stored as their keyed digest (src/keys/reference-digests.ts).
 * The scan looks for the PAN-carrying groups in any case.
 */
const CRAFTED_UUIDS = {
  webhookId: '41111111-1111-1111-abcd-ef0123456789', // 4111111111111111
  otherWebhookId: 'msg_55555555-5555-4444-abcd-ef0123456789', // 5555555555554444
  idempotencyKey: '51051051-0510-5100-abcd-ef0123456789', // 5105105105105100
} as const;
const CRAFTED_PAN_GROUPS = ['41111111-1111-1111', '55555555-5555-4444', '51051051-0510-5100'];
const craftedHits = (haystack: string): string[] =>
  CRAFTED_PAN_GROUPS.filter((groups) => haystack.toLowerCase().includes(groups));
const DIGEST = /^~[A-Za-z0-9_-]{43}$/;

describe('red team: card numbers as identifiers are refused, never stored (issue 16)', function () {
  this.timeout(300_000);
  let svc: TestService;
  const responses: string[] = [];
  const record = (res: TestResponse): TestResponse => {
    responses.push(`${res.status} ${res.text}`);
    return res;
  };
  // The platform id schema allows printable ASCII without spaces.
  const idForms = RED_TEAM_PANS.flatMap((pan) => Object.values(panForms(pan)).filter((text) => !text.includes(' ')));
  const expectRefused = (res: TestResponse, pointer: string): void => {
    expect(res.status, res.text).to.equal(422);
    expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
    expect(res.body.code).to.equal('CARD_NUMBER_NOT_ALLOWED');
    expect(res.body.errors).to.deep.equal([{ pointer, message: 'must not hold a card number' }]);
  };
  const storedCounts = async (): Promise<number[]> =>
    Promise.all(
      ['payments', 'webhook_inbox', 'payment_facts'].map(async (table) =>
        Number((await svc.db.knex(table).count({ n: '*' }).first())?.n),
      ),
    );

  before(async () => {
    svc = await startTestService({ env: await testEnv() });
  });
  after(async () => svc.close());

  it('when the platform sends a PAN in any form as payment.id, then 422 CARD_NUMBER_NOT_ALLOWED and nothing stored', async () => {
    const before = await storedCounts();
    for (const text of [...idForms, `pay-${RED_TEAM_PANS[0]}`]) {
      const res = record(await postPlatform(svc, platformEvent({ paymentId: text })));
      expectRefused(res, '/body/payment/id');
    }
    expect(await storedCounts()).to.deep.equal(before);
  });

  it('when the platform sends a PAN as refund.id or chargeback.id, then 422 at that id and nothing stored', async () => {
    const id = paymentId('rt-ids');
    expect(record(await postPlatform(svc, platformEvent({ paymentId: id }))).status).to.equal(200);
    const before = await storedCounts();
    const refund = platformEvent({
      paymentId: id,
      type: 'payment.refunded',
      refund: { id: '5555-5555-5555-4444', amount: 100 },
    });
    expectRefused(record(await postPlatform(svc, refund)), '/body/refund/id');
    const chargeback = platformEvent({
      paymentId: id,
      type: 'payment.chargeback',
      chargeback: { id: 'cb_378282246310005', amount: 100 },
    });
    expectRefused(record(await postPlatform(svc, chargeback)), '/body/chargeback/id');
    expect(await storedCounts()).to.deep.equal(before);
  });

  it('when webhook-id holds a PAN in a key-shaped form, then 422 CARD_NUMBER_NOT_ALLOWED at /headers/webhook-id', async () => {
    const before = await storedCounts();
    for (const id of [...RED_TEAM_PANS.flatMap(keyForms), `msg_${RED_TEAM_PANS[0]}`]) {
      const res = record(await postPlatform(svc, platformEvent({ paymentId: paymentId('rt-wid') }), { id }));
      expectRefused(res, '/headers/webhook-id');
    }
    expect(await storedCounts()).to.deep.equal(before);
  });

  it('when webhook-id is not of the message-id shape (spaces, slashes, too long), then 400 WEBHOOK_ID_INVALID', async () => {
    const before = await storedCounts();
    for (const id of ['5555 5555 5555 4444', '4111/1111/1111/1111', 'msg id', 'm'.repeat(129), 'msg_é']) {
      const res = record(await postPlatform(svc, platformEvent({ paymentId: paymentId('rt-wid') }), { id }));
      expect(res.status, id).to.equal(400);
      expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
      expect(res.body.code).to.equal('WEBHOOK_ID_INVALID');
    }
    expect(await storedCounts()).to.deep.equal(before);
  });

  it('when webhook-id is a standardwebhooks/Svix message id (msg_ + KSUID), a UUID or a ULID, then 200 applied', async () => {
    for (const id of [
      'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W',
      'msg_0f8fad5b-d9cb-469f-a165-70867728950e',
      '01ARZ3NDEKTSV4RRFFQ69G5FAV',
      // randomUUID() values whose groups chain into a Luhn-valid 12-digit run (7-4598-9933-056): one
      // in 180 random UUIDs does; they are ids, accepted as sent.
      'msg_6a5f1cfa-72d7-4598-9933-056ea0e51f27',
      '6a5f1cfa-72d7-4598-9933-056ea0e51f28',
    ]) {
      const res = record(await postPlatform(svc, platformEvent({ paymentId: paymentId('rt-wid') }), { id }));
      expect(res.status, res.text).to.equal(200);
      expect(res.body.state).to.equal('applied');
    }
  });

  it('when a Stripe event id or object id holds a Luhn-valid run, then 422 CARD_NUMBER_NOT_ALLOWED (not masked, nothing stored)', async () => {
    const before = await storedCounts();
    const byEventId = stripeChargeEvent('charge.succeeded', { id: 'ch_rtids0001' });
    byEventId['id'] = `evt_${RED_TEAM_PANS[0]}`;
    expectRefused(record(await postStripe(svc, byEventId)), '/body/id');
    const byChargeId = stripeChargeEvent('charge.succeeded', { id: `ch_${RED_TEAM_PANS[1]}` });
    expectRefused(record(await postStripe(svc, byChargeId)), '/body/data/object/id');
    expect(await storedCounts()).to.deep.equal(before);
    // A real-shaped Stripe id passes.
    const ok = record(
      await postStripe(svc, stripeChargeEvent('charge.succeeded', { id: 'ch_3MtwBwLkdIwHu7ix28a3tqPa' })),
    );
    expect(ok.status, ok.text).to.equal(200);
  });

  describe('Adyen references that are card numbers (HIGH 2)', () => {
    const rejectedRow = async (): Promise<Record<string, unknown>> =>
      svc.db
        .knex('webhook_inbox')
        .where({ provider: 'adyen', state: 'rejected' })
        .orderBy('received_at', 'desc')
        .first();

    before(async () => {
      // Two cards of this vault: their PANs are now "known".
      for (const pan of ['5105105105105100', '5555555555554444']) {
        const seeded = record(
          await postPlatform(svc, platformEvent({ paymentId: paymentId('rt-known'), card: { pan } })),
        );
        expect(seeded.status, seeded.text).to.equal(200);
      }
    });

    it('when a pspReference is the PAN of a known card, then [accepted], rejected ADYEN_REFERENCE_IS_CARD_NUMBER, not applied, stored masked', async () => {
      const res = record(
        await postAdyen(svc, [adyenItem({ eventCode: 'AUTHORISATION', pspReference: '5105105105105100' })]),
      );
      expect(res.text).to.equal('[accepted]');
      expect(
        await svc.db.knex('payments').where({ provider: 'adyen', external_id: '5105105105105100' }).first(),
      ).to.equal(undefined);
      const row = await rejectedRow();
      expect(row['error_code']).to.equal('ADYEN_REFERENCE_IS_CARD_NUMBER');
      expect(JSON.stringify(row['payload'])).to.contain('[PAN …5100]');
    });

    it('when an originalReference is the PAN of a known card, then the item is rejected ADYEN_REFERENCE_IS_CARD_NUMBER', async () => {
      const item = adyenItem({
        eventCode: 'REFUND',
        pspReference: 'RTREFUND00000001',
        originalReference: '5555555555554444',
        amount: { value: 100, currency: 'EUR' },
      });
      expect(record(await postAdyen(svc, [item])).text).to.equal('[accepted]');
      expect((await rejectedRow())['error_code']).to.equal('ADYEN_REFERENCE_IS_CARD_NUMBER');
    });

    it('when an all-digit Luhn-valid pspReference is no known card (a real Adyen reference), then it is applied and kept as sent', async () => {
      let reference = `88${String(Date.now()).slice(-13)}`;
      reference += [...'0123456789'].find((d) => luhnValid(reference + d));
      const res = record(await postAdyen(svc, [adyenItem({ eventCode: 'AUTHORISATION', pspReference: reference })]));
      expect(res.text).to.equal('[accepted]');
      const payment = await svc.db.knex('payments').where({ provider: 'adyen', external_id: reference }).first();
      expect(payment, reference).to.not.equal(undefined);
    });
  });

  describe('UUID ids crafted around a card number are stored as their keyed digest (HIGH)', () => {
    it('when a signed platform payment.authorisation_failed carries a UUID webhook-id holding a PAN, then 200 applied, the inbox and the fact keyed by its digest; a redelivery is a duplicate; another such id is another row; the admin inbox shows the digest', async () => {
      const event = platformEvent({ paymentId: paymentId('rt-uuid'), type: 'payment.authorisation_failed' });
      const first = record(await postPlatform(svc, event, { id: CRAFTED_UUIDS.webhookId }));
      expect(first.status, first.text).to.equal(200);
      expect(first.body.duplicate).to.equal(false);
      const row = await svc.db.knex('webhook_inbox').where({ id: first.body.eventId }).first();
      expect(row.event_key).to.match(DIGEST);
      const facts = await svc.db.knex('payment_facts').where({ kind: 'authorisation_failed', fact_key: row.event_key });
      expect(facts).to.have.length(1);

      const counts = await storedCounts();
      const again = record(await postPlatform(svc, event, { id: CRAFTED_UUIDS.webhookId }));
      expect(again.status, again.text).to.equal(200);
      expect(again.body).to.include({ duplicate: true, eventId: first.body.eventId });
      expect(await storedCounts()).to.deep.equal(counts);

      const other = platformEvent({ paymentId: paymentId('rt-uuid'), type: 'payment.authorisation_failed' });
      const second = record(await postPlatform(svc, other, { id: CRAFTED_UUIDS.otherWebhookId }));
      expect(second.status, second.text).to.equal(200);
      expect(second.body.duplicate).to.equal(false);
      const secondRow = await svc.db.knex('webhook_inbox').where({ id: second.body.eventId }).first();
      expect(secondRow.event_key).to.match(DIGEST);
      expect(secondRow.event_key).to.not.equal(row.event_key);

      const inbox = record(
        await svc.request('GET', '/v1/admin/webhooks/inbox?provider=platform&limit=200', {
          token: await signToken({ scope: 'loyalty:admin' }),
        }),
      );
      expect(inbox.status, inbox.text).to.equal(200);
      const keys = (inbox.body.items as { eventKey: string }[]).map((item) => item.eventKey);
      expect(keys.filter((key) => key.endsWith(row.event_key as string))).to.have.length(1);
      expect(keys.filter((key) => key.endsWith(secondRow.event_key as string))).to.have.length(1);
    });

    it('when a redemption carries a UUID Idempotency-Key holding a PAN, then one redemption, the retry replays the same result, and the key is stored as its digest', async () => {
      const shopper = await newShopper(svc, generatePans(1, '400000')[0] as string);
      const earned = payment(shopper, { amount: 1_000 });
      await earned.send(svc, { type: 'authorised' });
      await earned.send(svc, { type: 'captured' });
      const token = await signToken({ scope: 'loyalty:redeem', shopperRef: shopper.shopperRef });
      const redeem = async (): Promise<TestResponse> =>
        record(
          await svc.request('POST', `/v1/shoppers/${shopper.shopperRef}/redemptions`, {
            token,
            headers: { 'idempotency-key': CRAFTED_UUIDS.idempotencyKey },
            json: { points: 4, reference: 'order-rt-uuid-key' },
          }),
        );
      const first = await redeem();
      expect(first.status, first.text).to.equal(201);
      const again = await redeem();
      expect(again.status, again.text).to.equal(201);
      expect(again.headers.get('idempotent-replayed')).to.equal('true');
      expect(again.body).to.deep.equal(first.body);
      expect((await balance(svc, shopper.shopperRef)).available).to.equal(6);
      const stored = await svc.db.knex('idempotency_keys').where({ scope: `redemption:${shopper.shopperRef}` });
      expect(stored).to.have.length(1);
      expect(stored[0].key).to.match(DIGEST);
    });
  });

  describe('Adyen event codes that are card numbers (H1)', () => {
    it('when a signed eventCode holds a card number, then [accepted], rejected ADYEN_EVENT_CODE_INVALID, not applied, its key and the inbox free of it', async () => {
      const admin = await signToken({ scope: 'loyalty:admin' });
      for (const eventCode of ['4111 1111 1111 1111', '4111111111111111', 'AUTH-4111-1111-1111-1111']) {
        const res = record(await postAdyen(svc, [adyenItem({ eventCode, pspReference: 'ABCDEFGHIJKLMNOP' })]));
        expect(res.status, res.text).to.equal(200);
        expect(res.text).to.equal('[accepted]');
        const row = await svc.db
          .knex('webhook_inbox')
          .where({ provider: 'adyen', state: 'rejected' })
          .orderBy('received_at', 'desc')
          .first();
        expect(row.error_code, eventCode).to.equal('ADYEN_EVENT_CODE_INVALID');
        expect(row.event_key).to.match(/^rejected:/);
        expect(panHits(`${row.event_key as string} ${row.event_type as string}`, RED_TEAM_PANS)).to.deep.equal([]);
      }
      expect(await svc.db.knex('payments').where({ provider: 'adyen', external_id: 'ABCDEFGHIJKLMNOP' })).to.deep.equal(
        [],
      );
      const listed = record(
        await svc.request('GET', '/v1/admin/webhooks/inbox?state=rejected&provider=adyen', { token: admin }),
      );
      expect(listed.status, listed.text).to.equal(200);
      expect(listed.body.items.map((e: { errorCode: string }) => e.errorCode)).to.include('ADYEN_EVENT_CODE_INVALID');
      expect(panHits(listed.text, RED_TEAM_PANS)).to.deep.equal([]);
    });

    it("when a signed eventCode is one of Adyen's codes (upper case and underscores), then it is not rejected for it", async () => {
      const res = record(
        await postAdyen(svc, [adyenItem({ eventCode: 'REPORT_AVAILABLE', pspReference: 'RTREPORTAVAILABL' })]),
      );
      expect(res.text).to.equal('[accepted]');
      const row = await svc.db
        .knex('webhook_inbox')
        .where({ event_key: 'RTREPORTAVAILABL:REPORT_AVAILABLE:true' })
        .first();
      expect(row?.state).to.not.equal('rejected');
    });
  });

  // Last: mocha runs a describe's own tests before its nested describes.
  describe('the scan', () => {
    const counts: Record<string, number> = { hits: 0 };
    const hits = (found: string[]): string[] => {
      counts['hits'] = (counts['hits'] ?? 0) + found.length;
      return found;
    };
    after(() => {
      // eslint-disable-next-line no-console -- the scan counts are part of the evidence (issue 16 closing note)
      console.log(`      red-team (ids) scan sizes: ${JSON.stringify(counts)}`);
    });

    it('when every row of every table and every response body are scanned, then no PAN sent appears', async () => {
      const dump = await dumpEveryRow(svc);
      counts['tables'] = dump.tables;
      counts['rows'] = dump.rows;
      counts['dumpChars'] = dump.text.length;
      counts['responses'] = responses.length;
      expect(dump.rows).to.be.greaterThan(0);
      expect(hits(panHits(dump.text, RED_TEAM_PANS))).to.deep.equal([]);
      expect(hits(panHits(responses.join('\n'), RED_TEAM_PANS))).to.deep.equal([]);
      expect(hits(craftedHits(dump.text)), 'a crafted UUID id in a row').to.deep.equal([]);
      expect(hits(craftedHits(responses.join('\n'))), 'a crafted UUID id in a response').to.deep.equal([]);
    });

    it('when every stored event key, payment external id and fact key is asked of the detector, then none holds card data', async () => {
      expect(await storedKeysHoldingCardData(svc)).to.deep.equal([]);
    });

    it('when the PostgreSQL database is dumped with pg_dump, then no PAN sent appears in it', function () {
      const dump = pgDump(svc);
      if (dump === undefined) this.skip();
      counts['pgDumpChars'] = dump.length;
      expect(hits(panHits(dump, RED_TEAM_PANS))).to.deep.equal([]);
      expect(hits(craftedHits(dump))).to.deep.equal([]);
    });

    it('when the debug log is scanned, then no PAN sent appears in it', () => {
      const logs = svc.logs();
      counts['logLines'] = logs.split('\n').length;
      expect(svc.config.logLevel).to.equal('debug');
      // The refused requests were logged (route and status; never the body): the scan reads those lines.
      expect(logs).to.contain('"status":422');
      expect(hits(panHits(logs, RED_TEAM_PANS))).to.deep.equal([]);
      expect(hits(craftedHits(logs))).to.deep.equal([]);
    });

    it('when the outbox is scanned, then no PAN sent appears in it', async () => {
      const rows = (await svc.db.knex('outbound_events').select('body')) as { body: unknown }[];
      counts['outboxEvents'] = rows.length;
      expect(rows.length).to.be.greaterThan(0);
      const text = rows.map((r) => (typeof r.body === 'string' ? r.body : JSON.stringify(r.body))).join('\n');
      expect(hits(panHits(text, RED_TEAM_PANS))).to.deep.equal([]);
      expect(hits(craftedHits(text))).to.deep.equal([]);
    });
  });
});
