/**
 * Issue 16, third attacker review: a 15-digit (Amex) or 14-digit (Diners) card number glued to one or
 * two junk digits fills a 15- or 16-digit run that is not Luhn-valid as a whole. The detector finds it
 * through windows anchored at either end of the run that start with the scheme's IIN and pass Luhn
 * (src/card-data/card-data-guard.ts `gluedCardNumberIn`), so it is refused at every client edge and
 * in the platform's payment id. Numbers are the schemes' test PANs (Amex 378282246310005, Diners
 * 30569309025904) and the junk digits are chosen so the whole run fails Luhn.
 */
import { expect } from 'chai';
import { containsCardData, luhnValid, maskCardData } from '../../src/card-data/card-data-guard.js';
import { signToken } from '../support/auth.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { paymentId, platformEvent, postPlatform } from '../support/webhooks.js';

const AMEX = '378282246310005';
const DINERS = '30569309025904';

/** `pan` with junk digits before and/or after, the first combination whose whole run fails Luhn. */
function glued(pan: string, before: number, after: number): string {
  for (let n = 0; n < 10 ** (before + after); n++) {
    const junk = String(n).padStart(before + after, '0');
    // A leading junk digit of 0 would read as another IIN-less run; keep it non-zero.
    if (before > 0 && junk[0] === '0') continue;
    const run = junk.slice(0, before) + pan + junk.slice(before);
    if (!luhnValid(run)) return run;
  }
  throw new Error('no junk found');
}

const GLUED = [
  ['a junk digit then the Amex number (16 digits)', glued(AMEX, 1, 0)],
  ['the Amex number then a junk digit (16 digits)', glued(AMEX, 0, 1)],
  ['a junk digit then the Diners number (15 digits)', glued(DINERS, 1, 0)],
  ['the Diners number then a junk digit (15 digits)', glued(DINERS, 0, 1)],
  ['two junk digits then the Diners number (16 digits)', glued(DINERS, 2, 0)],
  ['the Diners number then two junk digits (16 digits)', glued(DINERS, 0, 2)],
  ['the Amex number dashed, then a junk digit', `${glued(AMEX, 0, 1).slice(0, 4)}-${glued(AMEX, 0, 1).slice(4)}`],
] as const;

describe('card-data guard: Amex and Diners numbers glued into 15- and 16-digit runs (issue 16, third review)', function () {
  this.timeout(120_000);

  describe('the detector', () => {
    for (const [name, text] of GLUED) {
      it(`when text holds ${name}, then it is card data and masked whole`, () => {
        expect(containsCardData(`pay-${text}`), text).to.equal(true);
        expect(maskCardData(`id ${text} end`)).to.equal('id [REDACTED] end');
      });
    }

    it('when a 15- or 16-digit run has a Luhn-valid window without the scheme IIN, or is a timestamp, then it is not flagged (the IIN condition)', () => {
      // 16 digits, not Luhn-valid whole; the last 15 are Luhn-valid but start with 41 (not Amex).
      const body = '41111111111111';
      const window = body + [...'0123456789'].find((d) => luhnValid(body + d))!;
      const visaLike = ['1', '2', '9'].map((junk) => junk + window).find((run) => !luhnValid(run))!;
      expect(luhnValid(visaLike.slice(1))).to.equal(true);
      expect(luhnValid(visaLike)).to.equal(false);
      for (const text of [visaLike, 'at 1796601600000', '202612100000002']) {
        expect(containsCardData(text), text).to.equal(false);
      }
    });
  });

  describe('the edges', () => {
    let svc: TestService;
    let admin: string;
    let shopperRef: string;

    before(async () => {
      svc = await startTestService({
        env: await testEnv({ DETOKENISE_ENABLED: 'true', DETOKENISE_RATE_LIMIT_PER_MINUTE: '1000' }),
      });
      admin = await signToken({ scope: 'loyalty:admin tokens:write tokens:read tokens:detokenise' });
      const id = paymentId('glued-seed');
      const seeded = await postPlatform(
        svc,
        platformEvent({ paymentId: id, card: { pan: '4242424242424242' }, channel: 'online' }),
      );
      expect(seeded.status, seeded.text).to.equal(200);
      shopperRef = (await svc.db.knex('payments').where({ external_id: id }).first()).shopper_ref as string;
    });
    after(async () => svc.close());

    it('when the platform sends a glued Amex or Diners number as payment.id, then 422 CARD_NUMBER_NOT_ALLOWED and no payment', async () => {
      for (const [, text] of GLUED) {
        for (const id of [text, `pay_${text}`]) {
          const res = await postPlatform(svc, platformEvent({ paymentId: id }));
          expect(res.status, `${id}: ${res.text}`).to.equal(422);
          expect(res.body.code).to.equal('CARD_NUMBER_NOT_ALLOWED');
          expect(res.body.errors).to.deep.equal([
            { pointer: '/body/payment/id', message: 'must not hold a card number' },
          ]);
        }
      }
      const digits = GLUED.map(([, text]) => text.replace(/\D/g, ''));
      const stored = (await svc.db.knex('payments').select('external_id')).map((r) => String(r.external_id));
      expect(stored.filter((id) => digits.some((d) => id.replace(/\D/g, '').includes(d)))).to.deep.equal([]);
    });

    it('when an Idempotency-Key, a redemption reference or a detokenise reason holds one, then 422 and nothing stored', async () => {
      const created = await svc.request('POST', '/v1/tokens', { token: admin, json: { pan: '5105105105105100' } });
      expect(created.status).to.be.oneOf([200, 201]);
      for (const [i, [, text]] of GLUED.entries()) {
        const byKey = await svc.request('POST', `/v1/shoppers/${shopperRef}/redemptions`, {
          token: admin,
          json: { points: 1, reference: 'glued-key' },
          headers: { 'idempotency-key': `order-${text}` },
        });
        expect(byKey.status, byKey.text).to.equal(422);
        expect(byKey.body.code).to.equal('CARD_NUMBER_NOT_ALLOWED');
        expect(byKey.body.errors[0].pointer).to.equal('/headers/idempotency-key');

        const byReference = await svc.request('POST', `/v1/shoppers/${shopperRef}/redemptions`, {
          token: admin,
          json: { points: 1, reference: `order ${text}` },
          headers: { 'idempotency-key': `glued-ref-${'abcdefgh'[i]}` },
        });
        expect(byReference.status, byReference.text).to.equal(422);
        expect(byReference.body.code).to.equal('CARD_NUMBER_NOT_ALLOWED');
        expect(byReference.body.errors[0].pointer).to.equal('/body/reference');

        const byReason = await svc.request('POST', `/v1/tokens/${created.body.token as string}/detokenise`, {
          token: admin,
          json: { reason: `ticket ${text}` },
        });
        expect(byReason.status, byReason.text).to.equal(422);
        expect(byReason.body.code).to.equal('REASON_INVALID');
      }
      const digits = GLUED.map(([, text]) => text.replace(/\D/g, ''));
      for (const [table, column] of [
        ['idempotency_keys', 'key'],
        ['audit_events', 'details'],
      ] as const) {
        const rows = (await svc.db.knex(table).select(column)).map((r) => JSON.stringify(r[column]).replace(/\D/g, ''));
        expect(
          rows.filter((r) => digits.some((d) => r.includes(d))),
          table,
        ).to.deep.equal([]);
      }
    });
  });
});
