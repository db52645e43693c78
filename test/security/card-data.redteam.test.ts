/**
 * Red team, issue 16: card data sent where nobody expects it, through the real HTTP API and the
 * gateways' own signing libraries (`standardwebhooks`, `@adyen/api-library`, `stripe`). Every test
 * PAN goes in every written form (plain, spaces, dashes, dots, slashes, underscores, mixed, one digit
 * per group; 12- to 19-digit numbers; track 1 and 2; security codes) into every free-text and unknown
 * field of the three gateways and of the client API; then the database (every row of every table, and
 * pg_dump on PostgreSQL), the debug log, every response body of the run (every shopper's purchase history
 * and every page of the admin inbox included) and the outbox are scanned
 * for every PAN, in every form sent and as bare digits. Zero hits. Also: the Adyen re-split forgery
 * creates no payment and earns nothing.
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
import {
  RED_TEAM_PANS,
  dumpEveryRow,
  keyForms,
  panForms,
  panHits,
  pgDump,
  storedKeysHoldingCardData,
  track1,
  track2,
} from './card-data-support.js';

let pspSequence = 0;
const psp = (): string =>
  `RT${Date.now().toString(36).toUpperCase()}${String(++pspSequence).padStart(6, '0')}`.slice(0, 16);

describe('red team: card data never at rest outside the vault (issue 16)', function () {
  this.timeout(300_000);
  let svc: TestService;
  const responses: string[] = [];
  let admin: string;
  let shopperRef: string;

  const record = (res: TestResponse): TestResponse => {
    responses.push(`${res.status} ${res.text} ${JSON.stringify(Object.fromEntries(res.headers.entries()))}`);
    return res;
  };
  const forms = RED_TEAM_PANS.flatMap((pan) =>
    Object.entries(panForms(pan)).map(([name, text]) => ({ pan, name, text })),
  );

  before(async () => {
    svc = await startTestService({
      // Every attempt counts against the detokenise limit (issue 16): this suite sends many on purpose.
      env: await testEnv({ DETOKENISE_ENABLED: 'true', DETOKENISE_RATE_LIMIT_PER_MINUTE: '1000' }),
    });
    admin = await signToken({ scope: 'loyalty:admin tokens:write tokens:read tokens:detokenise' });
    // A shopper of our own, by a legitimate platform payment with a card.
    const id = paymentId('rt-seed');
    const seeded = record(
      await postPlatform(svc, platformEvent({ paymentId: id, card: { pan: '4242424242424242' }, channel: 'online' })),
    );
    expect(seeded.status).to.equal(200);
    shopperRef = (await svc.db.knex('payments').where({ external_id: id }).first()).shopper_ref as string;
  });
  after(async () => svc.close());

  describe('gateways: card data in free text is masked, the delivery acknowledged and applied', () => {
    it('when the platform gateway puts PANs in merchantReference, storeId and terminalId, then 200 applied and masked', async () => {
      for (const [i, { text }] of forms.entries()) {
        const id = paymentId('rt-platform');
        const event = platformEvent({ paymentId: id, channel: 'in_store', storeId: 'S' });
        const payment = event['payment'] as Record<string, unknown>;
        const field = ['merchantReference', 'storeId', 'terminalId'][i % 3] as string;
        payment['merchantReference'] = 'order-rt';
        payment[field] = field === 'merchantReference' ? `order ${text}` : text.slice(0, 64);
        const res = record(await postPlatform(svc, event));
        expect(res.status, `${field} ${text}`).to.equal(200);
        expect(res.body.state).to.equal('applied');
        const inbox = await svc.db.knex('webhook_inbox').where({ id: res.body.eventId }).first();
        expect(inbox.masked, text).to.deep.equal([`/payment/${field}`]);
      }
    });

    it('when Adyen sends PANs, track data and a cvc in every free-text and unknown field, then [accepted], applied, masked', async () => {
      for (const [i, { text, pan }] of forms.entries()) {
        const ref = psp();
        const item = adyenItem({
          eventCode: 'AUTHORISATION',
          pspReference: ref,
          merchantReference: `order ${text}`,
          paymentMethod: `visa ${text}`,
          unknownTopLevel: text,
          additionalData: {
            alias: `A${String(i).padStart(15, '0')}`,
            shopperInteraction: 'Ecommerce',
            store: text,
            terminalId: text,
            cardHolderName: text,
            cardBin: pan.slice(0, 6),
            cardSummary: pan.slice(-4),
            track1: track1(pan),
            track2: track2(pan),
            cvc: '737',
            'Card-CVV2': '123',
            pinBlock: 'ABCDEF0123456789',
            shopperStatement: `${track2(pan)} ${text}`,
            [`note${i}`]: text,
          },
        });
        const res = record(await postAdyen(svc, [item]));
        expect(res.status, text).to.equal(200);
        expect(res.text).to.equal('[accepted]');
        const row = await svc.db.knex('payments').where({ provider: 'adyen', external_id: ref }).first();
        expect(row, text).to.include({ state: 'authorised', card_last4: pan.slice(-4) });
        const inbox = await svc.db
          .knex('webhook_inbox')
          .where({ event_key: `${ref}:AUTHORISATION:true` })
          .first();
        expect(inbox.masked).to.include.members(['/merchantReference', '/paymentMethod', '/additionalData/store']);
        expect(JSON.stringify(inbox.payload)).not.to.match(
          /cvc|cardBin|cardHolderName|track|pinBlock|unknownTopLevel/i,
        );
      }
    });

    it('when Stripe sends PANs in description, metadata, billing details and unknown card fields, then 200, applied, masked', async () => {
      for (const { text, pan } of forms) {
        const event = stripeChargeEvent('charge.succeeded', { id: `ch_RT${psp()}` });
        const object = (event['data'] as { object: Record<string, unknown> }).object;
        object['description'] = `order ${text}`;
        object['metadata'] = { order_id: text, store_id: text, terminal_id: text, free: text };
        object['billing_details'] = { name: text, address: { line1: track1(pan) } };
        object['receipt_email'] = `${pan}@example.com`;
        const details = object['payment_method_details'] as { card: Record<string, unknown> };
        details.card = { ...details.card, number: pan, cvc: '123', iin: pan.slice(0, 6), track2: track2(pan) };
        const res = record(await postStripe(svc, event));
        expect(res.status, text).to.equal(200);
        expect(res.body.state).to.equal('applied');
        const inbox = await svc.db.knex('webhook_inbox').where({ id: res.body.eventId }).first();
        expect(inbox.masked).to.include.members(['/data/object/description', '/data/object/metadata/order_id']);
      }
    });

    it('when masked deliveries are listed in the admin inbox, then each shows what was masked, and the metric counts them', async () => {
      const res = record(await svc.request('GET', '/v1/admin/webhooks/inbox?limit=100', { token: admin }));
      expect(res.status).to.equal(200);
      expect(res.body.items.some((e: { masked: string[] }) => e.masked.length > 0)).to.equal(true);
      const metrics = record(
        await svc.request('GET', '/metrics', { token: await signToken({ scope: 'metrics:read' }) }),
      );
      const line = metrics.text
        .split('\n')
        .find((l) => l.startsWith('webhook_card_data_masked_total{provider="adyen"}'));
      expect(Number(line?.split(' ').pop())).to.be.greaterThan(forms.length);
    });
  });

  describe('client API: card data is refused with 422 and stored nowhere', () => {
    it('when a redemption reference or description holds a PAN in any form, then 422 CARD_NUMBER_NOT_ALLOWED', async () => {
      for (const [i, { text }] of forms.entries()) {
        const body =
          i % 2 === 0 ? { points: 1, reference: text.slice(0, 100) } : { points: 1, reference: 'r', description: text };
        const res = record(
          await svc.request('POST', `/v1/shoppers/${shopperRef}/redemptions`, {
            token: admin,
            json: body,
            headers: { 'idempotency-key': `rt-redeem-${i}` },
          }),
        );
        expect(res.status, text).to.equal(422);
        expect(res.body.code).to.equal('CARD_NUMBER_NOT_ALLOWED');
      }
    });

    it('when an Idempotency-Key is shaped like a PAN, then 422 CARD_NUMBER_NOT_ALLOWED at /headers/idempotency-key', async () => {
      for (const pan of RED_TEAM_PANS) {
        for (const key of keyForms(pan)) {
          const res = record(
            await svc.request('POST', `/v1/shoppers/${shopperRef}/redemptions`, {
              token: admin,
              json: { points: 1, reference: 'r' },
              headers: { 'idempotency-key': key },
            }),
          );
          expect(res.status, key).to.equal(422);
          expect(res.body.code).to.equal('CARD_NUMBER_NOT_ALLOWED');
          expect(res.body.errors[0].pointer).to.equal('/headers/idempotency-key');
        }
      }
    });

    it('when an Idempotency-Key is a canonical UUID whose middle groups read as a card number, then it is accepted and replays', async () => {
      // About one random UUID in 180 has 4-4-4 middle groups forming a Luhn-valid dashed number; a
      // client following the advice to send UUIDs must not be refused for it (docs/card-data.md).
      const key = '0a1b2c3d-4111-1111-1111-1111abcdef00';
      const send = () =>
        svc.request('POST', `/v1/shoppers/${shopperRef}/redemptions`, {
          token: admin,
          json: { points: 1, reference: 'uuid-key' },
          headers: { 'idempotency-key': key },
        });
      const first = await send();
      const again = await send();
      // Past the edge check: the redemption itself decides (this shopper has no points: 409).
      expect(first.body.code, JSON.stringify(first.body)).to.equal('INSUFFICIENT_POINTS');
      expect(again.status).to.equal(first.status);
      expect(again.body.code).to.equal(first.body.code);
    });

    it('when an Idempotency-Key holds a UUID-shaped card number beside other text, then 422: only a bare UUID is accepted as sent', async () => {
      // Setting UUIDs aside inside longer keys was tried and refused in review: a PAN laid out in a
      // UUID's groups (zero-padded, or in the last twelve digits) would then be stored as sent.
      const keys = [
        'order-0a1b2c3d-4111-1111-1111-1111abcdef00',
        'order-41111111-1111-1111-aaaa-aaaaaaaaaaaa',
        'order-00000000-0000-0000-4111-111111111111',
        'pay:51051051-0510-5100-abcd-abcdefabcdef',
        'k_abcdefab-cdef-abcd-abcd-100000000008',
      ];
      for (const key of keys) {
        const res = record(
          await svc.request('POST', `/v1/shoppers/${shopperRef}/redemptions`, {
            token: admin,
            json: { points: 1, reference: 'uuid-key' },
            headers: { 'idempotency-key': key },
          }),
        );
        expect(res.body.code, key).to.equal('CARD_NUMBER_NOT_ALLOWED');
        expect(res.body.errors[0].pointer).to.equal('/headers/idempotency-key');
      }
    });

    it('when a detokenise reason holds a PAN, then 422 REASON_INVALID', async () => {
      const created = record(
        await svc.request('POST', '/v1/tokens', { token: admin, json: { pan: '5105105105105100' } }),
      );
      for (const { text } of forms) {
        const res = record(
          await svc.request('POST', `/v1/tokens/${created.body.token as string}/detokenise`, {
            token: admin,
            json: { reason: `ticket ${text}` },
          }),
        );
        expect(res.status, text).to.equal(422);
        expect(res.body.code).to.equal('REASON_INVALID');
      }
    });

    it('when enrolment fields or a subscription description hold a PAN, then 422 CARD_NUMBER_NOT_ALLOWED', async () => {
      for (const pan of RED_TEAM_PANS) {
        for (const key of keyForms(pan)) {
          const res = record(
            await svc.request('POST', `/v1/shoppers/${shopperRef}/enrolment`, {
              token: admin,
              json: { externalMemberId: key },
            }),
          );
          expect(res.status, `${key} ${res.text}`).to.equal(422);
          expect(res.body.code).to.equal('CARD_NUMBER_NOT_ALLOWED');
        }
      }
      for (const { text } of forms) {
        const res = record(
          await svc.request('POST', '/v1/admin/subscriptions', {
            token: admin,
            json: { url: 'https://crm.example.com/hook', eventTypes: ['points.available'], description: text },
          }),
        );
        expect(res.status, text).to.equal(422);
        expect(res.body.code).to.equal('CARD_NUMBER_NOT_ALLOWED');
      }
    });
  });

  describe('Adyen re-split forgery', () => {
    it('when a captured item whose merchantReference holds a colon is re-split into a new pspReference, then nothing is created or earned', async () => {
      const original = adyenItem({
        eventCode: 'AUTHORISATION',
        pspReference: psp(),
        merchantAccountCode: 'TestMerchant',
        merchantReference: 'order:7',
        additionalData: { alias: 'A999999999999991', shopperInteraction: 'POS' },
      });
      const ref = original['pspReference'] as string;
      // The same eight fields re-split at other colons: `${ref}:` becomes a new pspReference.
      const forged = {
        ...original,
        pspReference: `${ref}:`,
        originalReference: 'TestMerchant',
        merchantAccountCode: 'order',
        merchantReference: '7',
      };
      const entriesBefore = Number((await svc.db.knex('loyalty_entries').count({ n: '*' }))[0]?.n);
      const paymentsBefore = Number((await svc.db.knex('payments').count({ n: '*' }))[0]?.n);
      // Forged first (the forger wins the race), then the original, then the forgery again.
      for (const item of [forged, original, forged]) {
        const res = record(await postAdyen(svc, [item]));
        expect(res.status).to.equal(200);
        expect(res.text).to.equal('[accepted]');
      }
      expect(Number((await svc.db.knex('payments').count({ n: '*' }))[0]?.n)).to.equal(paymentsBefore);
      expect(
        await svc.db
          .knex('payments')
          .where({ provider: 'adyen' })
          .whereIn('external_id', [ref, `${ref}:`]),
      ).to.deep.equal([]);
      expect(Number((await svc.db.knex('loyalty_entries').count({ n: '*' }))[0]?.n)).to.equal(entriesBefore);
      // One inbox row for the signature (a redelivery of it, in any split, is a duplicate), rejected.
      const listed = record(
        await svc.request('GET', '/v1/admin/webhooks/inbox?state=rejected&provider=adyen', { token: admin }),
      );
      expect(listed.body.items.map((e: { errorCode: string }) => e.errorCode)).to.include('ADYEN_REFERENCE_INVALID');
      const replay = record(
        await svc.request('POST', `/v1/admin/webhooks/inbox/${listed.body.items[0].id as string}/replay`, {
          token: admin,
        }),
      );
      expect(replay.body.code).to.equal('INBOX_EVENT_NOT_REPLAYABLE');
    });

    it('when a signed item holds a colon in any signed text field, then it is rejected with ADYEN_SIGNED_FIELD_SEPARATOR', async () => {
      const ref = psp();
      const res = record(
        await postAdyen(svc, [adyenItem({ eventCode: 'AUTHORISATION', pspReference: ref, merchantReference: 'a:b' })]),
      );
      expect(res.text).to.equal('[accepted]');
      expect(await svc.db.knex('payments').where({ provider: 'adyen', external_id: ref }).first()).to.equal(undefined);
      const row = await svc.db
        .knex('webhook_inbox')
        .where({ provider: 'adyen', state: 'rejected' })
        .orderBy('received_at', 'desc')
        .first();
      expect(row.error_code).to.equal('ADYEN_SIGNED_FIELD_SEPARATOR');
    });
  });

  describe('the scan: every PAN, in every form sent and as digits only', () => {
    const counts: Record<string, number> = { hits: 0 };
    const hits = (found: string[]): string[] => {
      counts['hits'] = (counts['hits'] ?? 0) + found.length;
      return found;
    };
    after(() => {
      // eslint-disable-next-line no-console -- the scan counts are part of the evidence (issue 16 closing note)
      console.log(`      red-team scan sizes: ${JSON.stringify(counts)}`);
    });

    /** Every page of a keyset-paged list, each response recorded for the scan. */
    const everyPage = async (path: string): Promise<{ pages: number; items: Record<string, unknown>[] }> => {
      const items: Record<string, unknown>[] = [];
      let pages = 0;
      for (let cursor: string | undefined; ;) {
        const sep = path.includes('?') ? '&' : '?';
        const res = record(
          await svc.request('GET', `${path}${sep}limit=20${cursor === undefined ? '' : `&cursor=${cursor}`}`, {
            token: admin,
          }),
        );
        expect(res.status, res.text).to.equal(200);
        pages += 1;
        items.push(...(res.body.items as Record<string, unknown>[]));
        cursor = res.body.nextCursor as string | undefined;
        if (cursor === undefined || cursor === null) break;
      }
      return { pages, items };
    };

    it('when every shopper purchase history and every admin inbox page are read, then they are recorded for the scan', async () => {
      const shoppers = (await svc.db
        .knex('payments')
        .whereNotNull('shopper_ref')
        .distinct('shopper_ref')
        .pluck('shopper_ref')) as string[];
      expect(shoppers.length).to.be.greaterThan(0);
      let purchases = 0;
      let purchasePages = 0;
      for (const ref of shoppers) {
        const read = await everyPage(`/v1/shoppers/${ref}/purchases`);
        purchases += read.items.length;
        purchasePages += read.pages;
      }
      const paid = Number((await svc.db.knex('payments').whereNotNull('shopper_ref').count({ n: '*' }))[0]?.n);
      expect(purchases).to.equal(paid);
      const inbox = await everyPage('/v1/admin/webhooks/inbox');
      expect(inbox.items.length).to.equal(Number((await svc.db.knex('webhook_inbox').count({ n: '*' }))[0]?.n));
      expect(inbox.pages).to.be.greaterThan(1);
      // What the gateways sent in free text is served back, masked: the scan below has something to find.
      expect(JSON.stringify(inbox.items)).to.contain('[PAN …');
      counts['purchases'] = purchases;
      counts['purchasePages'] = purchasePages;
      counts['inboxEvents'] = inbox.items.length;
      counts['inboxPages'] = inbox.pages;
    });

    it('when every row of every table is dumped, then no PAN appears in it', async () => {
      const dump = await dumpEveryRow(svc);
      counts['tables'] = dump.tables;
      counts['rows'] = dump.rows;
      counts['dumpChars'] = dump.text.length;
      expect(dump.rows).to.be.greaterThan(200);
      expect(dump.text).to.contain('[PAN …');
      expect(hits(panHits(dump.text, RED_TEAM_PANS))).to.deep.equal([]);
    });

    it('when every stored event key, payment external id and fact key is asked of the detector, then none holds card data', async () => {
      expect(await storedKeysHoldingCardData(svc)).to.deep.equal([]);
    });

    it('when the PostgreSQL database is dumped with pg_dump, then no PAN appears in it', function () {
      const dump = pgDump(svc);
      if (dump === undefined) this.skip();
      counts['pgDumpChars'] = dump.length;
      expect(hits(panHits(dump, RED_TEAM_PANS))).to.deep.equal([]);
    });

    it('when the debug log is scanned, then no PAN appears in it', () => {
      const logs = svc.logs();
      counts['logLines'] = logs.split('\n').length;
      expect(svc.config.logLevel).to.equal('debug');
      expect(hits(panHits(logs, RED_TEAM_PANS))).to.deep.equal([]);
    });

    it('when every response body of the run is scanned, then no PAN appears in it', () => {
      counts['responses'] = responses.length;
      expect(responses.length).to.be.greaterThan(forms.length * 4);
      expect(hits(panHits(responses.join('\n'), RED_TEAM_PANS))).to.deep.equal([]);
    });

    it('when the outbox is scanned, then no PAN appears in it', async () => {
      const rows = (await svc.db.knex('outbound_events').select('body')) as { body: string }[];
      counts['outboxEvents'] = rows.length;
      expect(rows.length).to.be.greaterThan(0);
      expect(hits(panHits(rows.map((r) => r.body).join('\n'), RED_TEAM_PANS))).to.deep.equal([]);
    });
  });
});
