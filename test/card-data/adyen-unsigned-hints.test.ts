/**
 * Adyen's `additionalData` is not covered by its HMAC (docs/card-data.md, "Adyen: what the unsigned
 * additionalData may decide"; README): its alias, PAR and shopperInteraction may name the card and set
 * the channel of a payment the first time it is seen, and never move the payment (or its points) to
 * another shopper nor change its channel afterwards.
 */
import { expect } from 'chai';
import { startTestService, type TestService } from '../support/harness.js';
import { adyenItem, postAdyen } from '../support/webhooks.js';

const ALIAS_OWNER = 'ALIASOWNERAAAAAA';
const ALIAS_OTHER = 'ALIASOTHERBBBBBB';
const PAR_OTHER = 'PARVQZOTHERSHOPPERCARDXYZAB';

describe('Adyen: unsigned additionalData after the first sighting', function () {
  this.timeout(120_000);
  let svc: TestService;
  before(async () => {
    svc = await startTestService();
  });
  after(async () => svc.close());

  const paymentOf = (ref: string) => svc.db.knex('payments').where({ provider: 'adyen', external_id: ref }).first();
  const accepted = async (item: Record<string, unknown>) => {
    const res = await postAdyen(svc, [item]);
    expect(res.status).to.equal(200);
    expect(res.text).to.equal('[accepted]');
  };

  it('when later deliveries for a payment carry another alias, PAR or shopperInteraction, then its shopper, card, channel and points stay where the first sighting put them', async () => {
    // Another shopper, known by alias: the card a forger would like the payment moved to.
    await accepted(
      adyenItem({
        eventCode: 'AUTHORISATION',
        pspReference: 'HINTOTHERPAYMENT',
        additionalData: { alias: ALIAS_OTHER, shopperInteraction: 'Ecommerce' },
      }),
    );
    const other = await paymentOf('HINTOTHERPAYMENT');
    expect(other.shopper_ref).to.be.a('string');

    // First sighting: online, the owner's card.
    const authorisation = adyenItem({
      eventCode: 'AUTHORISATION',
      pspReference: 'HINTPAYMENTAAAAA',
      additionalData: { alias: ALIAS_OWNER, shopperInteraction: 'Ecommerce' },
    });
    await accepted(authorisation);
    const first = await paymentOf('HINTPAYMENTAAAAA');
    expect(first).to.include({ state: 'authorised', channel: 'online' });
    expect(first.shopper_ref).to.be.a('string').and.not.equal(other.shopper_ref);

    // The same signed authorisation redelivered with other unsigned hints (POS would auto-capture).
    const signature = (authorisation['additionalData'] as Record<string, string>)['hmacSignature'];
    await accepted({
      ...authorisation,
      additionalData: {
        alias: ALIAS_OTHER,
        PaymentAccountReference: PAR_OTHER,
        shopperInteraction: 'POS',
        hmacSignature: signature,
      },
    });
    // Later modifications of the payment, each signed, each with the other shopper's identifiers.
    for (const [eventCode, pspReference] of [
      ['CAPTURE', 'HINTCAPTUREBBBBB'],
      ['REFUND', 'HINTREFUNDCCCCCC'],
    ]) {
      await accepted(
        adyenItem({
          eventCode: eventCode as string,
          pspReference: pspReference as string,
          originalReference: 'HINTPAYMENTAAAAA',
          amount: { value: eventCode === 'REFUND' ? 1_000 : 10_000, currency: 'EUR' },
          additionalData: { alias: ALIAS_OTHER, PaymentAccountReference: PAR_OTHER, shopperInteraction: 'POS' },
        }),
      );
    }

    const after = await paymentOf('HINTPAYMENTAAAAA');
    expect(after).to.include({
      shopper_ref: first.shopper_ref,
      card_token: first.card_token,
      channel: 'online',
      state: 'partially_refunded',
    });
    // Every point the payment moved is on its first shopper's account, none on the other's.
    const entries = await svc.db.knex('loyalty_entries').where({ payment_id: after.id }).select('shopper_ref');
    expect(entries.length).to.be.greaterThan(0);
    expect(new Set(entries.map((e: { shopper_ref: string }) => e.shopper_ref))).to.deep.equal(
      new Set([first.shopper_ref]),
    );
    // The other shopper's card stays the other shopper's; no payment of the other shopper changed.
    expect(await svc.db.knex('payments').where({ shopper_ref: other.shopper_ref }).pluck('external_id')).to.deep.equal([
      'HINTOTHERPAYMENT',
    ]);
  });
});
