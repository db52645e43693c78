/**
 * Issue 22: one shopper across wallets, reissued cards and providers. Every delivery is signed with the
 * gateway's own library (standardwebhooks, @adyen/api-library, stripe); each scenario ends on one
 * shopper with one history, and no card number of these payloads is left in any table.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { TEST_PANS } from '../support/pans.js';
import { exportAllTables, findPans } from '../cards/leak.test.js';
import {
  adyenItem,
  lettersOnly,
  paymentId,
  platformEvent,
  postAdyen,
  postPlatform,
  postStripe,
  stripeChargeEvent,
} from '../support/webhooks.js';

/** EMVCo PARs: 29 upper-case alphanumerics, letters only here (no digit run to flag). */
const par = (): string => `PARX${lettersOnly(randomBytes(16).toString('hex')).toUpperCase()}`.slice(0, 29);
let sequence = 0;
/** An Adyen PSP reference: 16 alphanumerics. */
const psp = (): string =>
  `WL${lettersOnly(randomBytes(6).toString('hex')).toUpperCase()}${++sequence}`.padEnd(16, 'Q').slice(0, 16);
const fingerprint = (): string => `fp${lettersOnly(randomBytes(7).toString('hex'))}`;
const chargeId = (): string => `ch_${lettersOnly(randomBytes(10).toString('hex'))}`;
const stripeEventId = (): string => `evt_${lettersOnly(randomBytes(12).toString('hex'))}`;
const USED_PANS = [
  TEST_PANS.visa[0],
  TEST_PANS.visa[2],
  TEST_PANS.mastercard[0],
  TEST_PANS.mastercard[1],
  TEST_PANS.amex[0],
];

describe('wallets, reissued cards and identifiers of another shopper (issue 22)', function () {
  this.timeout(120_000);
  let svc: TestService;
  let tokensWriter: string;
  let admin: string;

  before(async () => {
    svc = await startTestService();
    tokensWriter = await signToken({ scope: 'tokens:write' });
    admin = await signToken({ scope: 'loyalty:admin loyalty:read' });
  });
  after(async () => svc.close());

  const knex = () => svc.db.knex;
  const payment = (provider: string, externalId: string) =>
    knex()('payments').where({ provider, external_id: externalId }).first();
  const card = (token: string) => knex()('cards').where({ token }).first();
  const cardCount = async (): Promise<number> => Number((await knex()('cards').count({ n: '*' }))[0]?.n);
  const tokenise = async (json: unknown) => {
    const res = await svc.request('POST', '/v1/tokens', { token: tokensWriter, json });
    expect(res.status, res.text).to.be.oneOf([200, 201]);
    return res.body as { token: string; shopperReference: string };
  };
  const attach = (token: string, json: unknown, bearer = tokensWriter) =>
    svc.request('POST', `/v1/tokens/${token}/identifiers`, { token: bearer, json });
  const audits = async (action: string, resource: string): Promise<number> =>
    Number((await knex()('audit_events').where({ action, resource }).count({ n: '*' }))[0]?.n);
  const purchases = async (shopper: string) => {
    const res = await svc.request('GET', `/v1/shoppers/${shopper}/purchases`, { token: admin });
    expect(res.status, res.text).to.equal(200);
    return res.body.items as { gatewayReference: string; cardToken?: string; wallet?: unknown; last4?: string }[];
  };
  const balance = async (shopper: string) => {
    const res = await svc.request('GET', `/v1/shoppers/${shopper}/balance`, { token: admin });
    expect(res.status, res.text).to.equal(200);
    return res.body as { available: number; pending: number; lifetimeEarned: number };
  };

  describe('wallets and network tokens', () => {
    it('when an Adyen Apple Pay payment carries the PAR of a plastic card, then it lands on that card and shopper, with the wallet and token last 4 on the payment and no card for the device token', async () => {
      const pan = TEST_PANS.visa[0];
      const plastic = await tokenise({ pan });
      const cardPar = par();
      expect((await attach(plastic.token, { par: cardPar })).status).to.equal(201);
      const online = paymentId('plastic');
      await postPlatform(svc, platformEvent({ paymentId: online, card: { pan }, amount: 2_000 }));
      const cardsBefore = await cardCount();
      const ref = psp();
      const res = await postAdyen(svc, [
        adyenItem({
          eventCode: 'AUTHORISATION',
          pspReference: ref,
          additionalData: {
            paymentAccountReference: cardPar,
            paymentMethodVariant: 'visa_applepay',
            alias: 'DEVICETOKENALIASQ',
            cardSummary: '9876',
            shopperInteraction: 'POS',
          },
        }),
      ]);
      expect(res.text).to.equal('[accepted]');
      expect(await payment('adyen', ref)).to.include({
        card_token: plastic.token,
        shopper_ref: plastic.shopperReference,
        card_last4: pan.slice(-4),
        wallet_type: 'apple_pay',
        token_last4: '9876',
      });
      expect(await cardCount(), 'no card for the device token').to.equal(cardsBefore);
      const unknownAlias = await svc.request('POST', '/v1/tokens', {
        token: tokensWriter,
        json: { alias: { namespace: 'adyen.alias', value: 'DEVICETOKENALIASQ' } },
      });
      expect(unknownAlias.status, 'the device alias was never attached to a card').to.equal(201);
      const items = await purchases(plastic.shopperReference);
      expect(items.map((p) => p.gatewayReference)).to.include.members([online, ref]);
      expect(items.find((p) => p.gatewayReference === ref)).to.deep.include({
        cardToken: plastic.token,
        last4: pan.slice(-4),
        wallet: { type: 'apple_pay', tokenLast4: '9876' },
      });
    });

    it('when the platform sends a Google Pay payment by PAR, then it lands on the plastic card; with the device number as a PAN it is refused', async () => {
      const plastic = await tokenise({ pan: TEST_PANS.mastercard[0] });
      const cardPar = par();
      await attach(plastic.token, { par: cardPar });
      const id = paymentId('gpay');
      const event = platformEvent({ paymentId: id, channel: 'in_store', card: { par: cardPar } });
      const wallet = { type: 'google_pay', tokenLast4: '3210' };
      const res = await postPlatform(svc, { ...event, payment: { ...(event['payment'] as object), wallet } });
      expect(res.status, res.text).to.equal(200);
      expect(await payment('platform', id)).to.include({
        shopper_ref: plastic.shopperReference,
        card_token: plastic.token,
        wallet_type: 'google_pay',
        token_last4: '3210',
      });
      const withPan = platformEvent({ paymentId: paymentId('gpay-pan'), card: { pan: TEST_PANS.visa[2] } });
      const refused = await postPlatform(svc, { ...withPan, payment: { ...(withPan['payment'] as object), wallet } });
      expect(refused.status).to.equal(422);
      expect(refused.body.code).to.equal('WALLET_PAYMENT_NEEDS_PAR');
    });

    it('when a Stripe charge was paid with Apple Pay, then the card is the fingerprint’s and the wallet and dynamic last 4 are on the payment', async () => {
      const fp = fingerprint();
      const first = chargeId();
      await postStripe(svc, stripeChargeEvent('charge.succeeded', { id: first, fingerprint: fp }));
      const owner = (await payment('stripe', first)) as { shopper_ref: string; card_token: string };
      const walletCharge = chargeId();
      const event = stripeChargeEvent('charge.succeeded', { id: walletCharge, fingerprint: fp });
      const object = (event['data'] as { object: Record<string, unknown> }).object;
      object['payment_method_details'] = {
        type: 'card',
        card: {
          brand: 'visa',
          last4: '4242',
          fingerprint: fp,
          wallet: { type: 'apple_pay', dynamic_last4: '0005', apple_pay: {} },
        },
      };
      expect((await postStripe(svc, event)).status).to.equal(200);
      expect(await payment('stripe', walletCharge)).to.include({
        shopper_ref: owner.shopper_ref,
        card_token: owner.card_token,
        card_last4: '4242',
        wallet_type: 'apple_pay',
        token_last4: '0005',
      });
    });

    it('when an Adyen PAR is not a well-formed PAR (unsigned additionalData), then it names no card', async () => {
      const cardsBefore = await cardCount();
      const ref = psp();
      await postAdyen(svc, [
        adyenItem({
          eventCode: 'AUTHORISATION',
          pspReference: ref,
          additionalData: { paymentAccountReference: 'not a par', paymentMethodVariant: 'mc_googlepay' },
        }),
      ]);
      const row = await payment('adyen', ref);
      expect(row).to.include({ card_token: null, shopper_ref: null, wallet_type: 'google_pay' });
      expect(await cardCount()).to.equal(cardsBefore);
    });
  });

  describe('reissued and updated cards', () => {
    it('when the platform reports a reissued card, then the new card joins the old card’s shopper, the old one is marked replaced once (audited), and redeliveries change nothing', async () => {
      const oldPan = TEST_PANS.visa[2];
      const newPan = TEST_PANS.mastercard[1];
      const before = paymentId('before-reissue');
      await postPlatform(svc, platformEvent({ paymentId: before, card: { pan: oldPan }, amount: 3_000 }));
      const old = (await payment('platform', before)) as { card_token: string; shopper_ref: string };
      const update = {
        type: 'card.updated',
        occurredAt: new Date().toISOString(),
        reason: 'reissued',
        previous: { token: old.card_token },
        card: { pan: newPan, expiryMonth: 11, expiryYear: 2031 },
      };
      const webhookId = `msg_${lettersOnly(randomBytes(12).toString('hex'))}`;
      const first = await postPlatform(svc, update, { id: webhookId });
      expect(first.status, first.text).to.equal(200);
      expect(first.body).to.include({ state: 'applied', duplicate: false });
      const replaced = await card(old.card_token);
      expect(replaced.replaced_by).to.be.a('string');
      const fresh = await card(replaced.replaced_by);
      expect(fresh).to.include({
        shopper_ref: old.shopper_ref,
        last4: newPan.slice(-4),
        expiry_month: 11,
        expiry_year: 2031,
      });
      expect(await audits('card.replaced', old.card_token)).to.equal(1);
      // The same delivery again, and the same update under a new webhook-id: nothing more.
      expect((await postPlatform(svc, update, { id: webhookId })).body).to.include({ duplicate: true });
      expect((await postPlatform(svc, update)).body).to.include({ state: 'applied', duplicate: false });
      expect(await audits('card.replaced', old.card_token)).to.equal(1);
      expect((await card(old.card_token)).replaced_by).to.equal(fresh.token);
      // The new card's next payment is the same shopper's: one history.
      const after = paymentId('after-reissue');
      await postPlatform(svc, platformEvent({ paymentId: after, card: { pan: newPan }, amount: 1_000 }));
      expect(await payment('platform', after)).to.include({ shopper_ref: old.shopper_ref, card_token: fresh.token });
      const refs = (await purchases(old.shopper_ref)).map((p) => p.gatewayReference);
      expect(refs).to.include.members([before, after]);
      const stored = await knex()('webhook_inbox').where({ provider: 'platform', event_key: webhookId }).first();
      expect(JSON.stringify(stored.payload)).not.to.contain(newPan);
      expect(stored.payload.card).to.deep.equal({ token: fresh.token });
    });

    it('when only the expiry changes, then no card is forked: the same token, the same fingerprints, a later expiry (fingerprints ignore expiry)', async () => {
      const pan = TEST_PANS.amex[0];
      const first = await tokenise({ pan, expiryMonth: 3, expiryYear: 2030 });
      const fingerprints = async () =>
        (await knex()('identifier_fingerprints').where({ token: first.token }).select('fingerprint')).map((r) =>
          Buffer.from(r.fingerprint).toString('base64'),
        );
      const prints = await fingerprints();
      const cardsBefore = await cardCount();
      // Tokenised again with another expiry: the same card.
      const again = await tokenise({ pan, expiryMonth: 4, expiryYear: 2031 });
      expect(again.token).to.equal(first.token);
      const res = await postPlatform(svc, {
        type: 'card.updated',
        occurredAt: new Date().toISOString(),
        reason: 'expiry_changed',
        previous: { pan, expiryMonth: 4, expiryYear: 2031 },
        card: { pan, expiryMonth: 9, expiryYear: 2033 },
      });
      expect(res.body).to.include({ state: 'applied' });
      expect(await cardCount()).to.equal(cardsBefore);
      expect(await fingerprints()).to.deep.equal(prints);
      expect(await card(first.token)).to.include({ expiry_month: 9, expiry_year: 2033, replaced_by: null });
      expect(await audits('card.replaced', first.token)).to.equal(0);
    });

    it('when Stripe automatically updates a payment method to a new card, then the new fingerprint is a card of the same shopper, and an expiry-only update forks nothing', async () => {
      const oldFp = fingerprint();
      const newFp = fingerprint();
      const before = chargeId();
      await postStripe(svc, stripeChargeEvent('charge.succeeded', { id: before, fingerprint: oldFp }));
      const old = (await payment('stripe', before)) as { card_token: string; shopper_ref: string };
      const pm = `pm_${lettersOnly(randomBytes(10).toString('hex'))}`;
      const updated = (id: string, cardFp: string, previous: Record<string, unknown>) => ({
        id,
        object: 'event',
        type: 'payment_method.automatically_updated',
        created: Math.floor(Date.now() / 1000),
        data: {
          object: {
            id: pm,
            object: 'payment_method',
            type: 'card',
            card: { brand: 'visa', last4: '1881', exp_month: 8, exp_year: 2032, fingerprint: cardFp },
          },
          previous_attributes: { card: previous },
        },
      });
      const event = updated(stripeEventId(), newFp, {
        fingerprint: oldFp,
        last4: '4242',
        exp_month: 1,
        exp_year: 2027,
      });
      const res = await postStripe(svc, event);
      expect(res.body, res.text).to.include({ state: 'applied', duplicate: false });
      const replaced = await card(old.card_token);
      expect(replaced.replaced_by).to.be.a('string');
      expect(await card(replaced.replaced_by)).to.include({
        shopper_ref: old.shopper_ref,
        expiry_month: 8,
        expiry_year: 2032,
      });
      expect((await postStripe(svc, event)).body).to.include({ duplicate: true });
      expect(await audits('card.replaced', old.card_token)).to.equal(1);
      const after = chargeId();
      await postStripe(svc, stripeChargeEvent('charge.succeeded', { id: after, fingerprint: newFp }));
      expect(await payment('stripe', after)).to.include({
        shopper_ref: old.shopper_ref,
        card_token: replaced.replaced_by,
      });
      const stored = await knex()('webhook_inbox').where({ provider: 'stripe', event_key: event.id }).first();
      expect(JSON.stringify(stored.payload)).not.to.contain(newFp).and.not.to.contain(oldFp);
      // Expiry only: the fingerprint did not change.
      const cardsBefore = await cardCount();
      const expiry = updated(stripeEventId(), newFp, { exp_month: 8, exp_year: 2032 });
      (expiry.data.object.card as Record<string, unknown>)['exp_year'] = 2035;
      expect((await postStripe(svc, expiry)).body).to.include({ state: 'applied' });
      expect(await cardCount()).to.equal(cardsBefore);
      expect(await card(replaced.replaced_by)).to.include({ expiry_year: 2035, replaced_by: null });
    });

    it('when Adyen’s Real Time Account Updater reports a changed card behind a stored token, then the new alias is a card of the same shopper, the old one replaced once, and the payment lands on the new card', async () => {
      const recurring = psp();
      const oldAlias = `OLD${lettersOnly(randomBytes(6).toString('hex')).toUpperCase()}`;
      const newAlias = `NEW${lettersOnly(randomBytes(6).toString('hex')).toUpperCase()}`;
      const before = psp();
      await postAdyen(svc, [
        adyenItem({
          eventCode: 'AUTHORISATION',
          pspReference: before,
          additionalData: {
            alias: oldAlias,
            'recurring.recurringDetailReference': recurring,
            shopperInteraction: 'ContAuth',
          },
        }),
      ]);
      const old = (await payment('adyen', before)) as { card_token: string; shopper_ref: string };
      const updated = psp();
      const item = adyenItem({
        eventCode: 'AUTHORISATION',
        pspReference: updated,
        additionalData: {
          alias: newAlias,
          'recurring.recurringDetailReference': recurring,
          realtimeAccountUpdaterStatus: 'CardChanged',
          expiryDate: '8/2032',
          shopperInteraction: 'ContAuth',
        },
      });
      expect((await postAdyen(svc, [item])).text).to.equal('[accepted]');
      const replaced = await card(old.card_token);
      expect(replaced.replaced_by).to.be.a('string');
      expect(await card(replaced.replaced_by)).to.include({
        shopper_ref: old.shopper_ref,
        expiry_month: 8,
        expiry_year: 2032,
      });
      expect(await payment('adyen', updated)).to.include({
        shopper_ref: old.shopper_ref,
        card_token: replaced.replaced_by,
      });
      await postAdyen(svc, [item]);
      expect(await audits('card.replaced', old.card_token)).to.equal(1);
      const refs = (await purchases(old.shopper_ref)).map((p) => p.gatewayReference);
      expect(refs).to.include.members([before, updated]);
    });

    it('when an update names an unknown card, then it is ignored; when the new card is another shopper’s, then it fails for an explicit merge and nothing moves', async () => {
      const unknown = await postPlatform(svc, {
        type: 'card.updated',
        occurredAt: new Date().toISOString(),
        previous: { par: par() },
        card: { par: par() },
      });
      expect(unknown.body).to.include({ state: 'ignored' });
      const a = await tokenise({ par: par() });
      const b = await tokenise({ par: par() });
      const other = await postPlatform(svc, {
        type: 'card.updated',
        occurredAt: new Date().toISOString(),
        previous: { token: a.token },
        card: { token: b.token },
      });
      expect(other.body).to.include({ state: 'failed' });
      const row = await knex()('webhook_inbox').where({ id: other.body.eventId }).first();
      expect(row.error_code).to.equal('CARD_UPDATE_OTHER_SHOPPER');
      expect(await card(a.token)).to.include({ replaced_by: null, shopper_ref: a.shopperReference });
      expect(await card(b.token)).to.include({ shopper_ref: b.shopperReference });
    });
  });

  describe('an identifier that belongs to another shopper', () => {
    it('when a Stripe fingerprint first seen in store is linked online, then 409 names the other card and the merge, and the merge by identifier joins both histories and points exactly once', async () => {
      const onlineFp = fingerprint();
      const storeFp = fingerprint();
      const online = chargeId();
      const inStore = chargeId();
      await postStripe(
        svc,
        stripeChargeEvent('charge.succeeded', { id: online, fingerprint: onlineFp, amount: 4_000 }),
      );
      await postStripe(
        svc,
        stripeChargeEvent('charge.succeeded', { id: inStore, fingerprint: storeFp, present: true, amount: 6_000 }),
      );
      const web = (await payment('stripe', online)) as { card_token: string; shopper_ref: string };
      const till = (await payment('stripe', inStore)) as { card_token: string; shopper_ref: string };
      expect(till.shopper_ref, 'first seen in store: a shopper of its own').not.to.equal(web.shopper_ref);
      const [webBefore, tillBefore] = [await balance(web.shopper_ref), await balance(till.shopper_ref)];
      expect(tillBefore.lifetimeEarned).to.be.greaterThan(0);

      const alias = { alias: { namespace: 'stripe.fingerprint', value: storeFp } };
      const conflict = await attach(web.card_token, alias);
      expect(conflict.status).to.equal(409);
      expect(conflict.headers.get('content-type')).to.contain('application/problem+json');
      expect(conflict.body).to.deep.include({
        code: 'IDENTIFIER_ALREADY_LINKED',
        cardToken: till.card_token,
        merge: { method: 'POST', href: `/v1/shoppers/${web.shopper_ref}/cards`, body: { token: till.card_token } },
      });
      expect(conflict.text).not.to.contain(till.shopper_ref);

      const merged = await svc.request('POST', `/v1/shoppers/${web.shopper_ref}/cards`, { token: admin, json: alias });
      expect(merged.status, merged.text).to.equal(200);
      expect(merged.body).to.include({
        shopperReference: web.shopper_ref,
        cardToken: till.card_token,
        mergedShopperReference: till.shopper_ref,
        alreadyLinked: false,
      });
      const again = await svc.request('POST', `/v1/shoppers/${web.shopper_ref}/cards`, { token: admin, json: alias });
      expect(again.body).to.include({ alreadyLinked: true });
      const combined = await balance(web.shopper_ref);
      expect(combined.lifetimeEarned).to.equal(webBefore.lifetimeEarned + tillBefore.lifetimeEarned);
      expect(combined.available + combined.pending).to.equal(
        webBefore.available + webBefore.pending + tillBefore.available + tillBefore.pending,
      );
      expect((await purchases(web.shopper_ref)).map((p) => p.gatewayReference)).to.include.members([online, inStore]);
      expect(await audits('shopper.merged', web.shopper_ref)).to.equal(1);
      // The fingerprint's next in-store payment is the survivor's.
      const next = chargeId();
      await postStripe(svc, stripeChargeEvent('charge.succeeded', { id: next, fingerprint: storeFp, present: true }));
      expect(await payment('stripe', next)).to.include({ shopper_ref: web.shopper_ref });
    });

    it('when a shopper token tries to link by identifier or attach one, then it is refused before any lookup and learns no token (BOLA)', async () => {
      const victimFp = fingerprint();
      const victimCharge = chargeId();
      await postStripe(svc, stripeChargeEvent('charge.succeeded', { id: victimCharge, fingerprint: victimFp }));
      const victim = (await payment('stripe', victimCharge)) as { card_token: string; shopper_ref: string };
      const mine = await tokenise({ par: par() });
      const me = await signToken({ scope: 'loyalty:write loyalty:read', shopperRef: mine.shopperReference });
      const alias = { alias: { namespace: 'stripe.fingerprint', value: victimFp } };
      const byIdentifier = await svc.request('POST', `/v1/shoppers/${mine.shopperReference}/cards`, {
        token: me,
        json: alias,
      });
      expect(byIdentifier.status).to.equal(403);
      expect(byIdentifier.body.code).to.equal('INSUFFICIENT_SCOPE');
      const unknown = await svc.request('POST', `/v1/shoppers/${mine.shopperReference}/cards`, {
        token: me,
        json: { alias: { namespace: 'stripe.fingerprint', value: fingerprint() } },
      });
      expect(unknown.status, 'the same answer for an unknown identifier: no oracle').to.equal(403);
      const attached = await attach(mine.token, alias, me);
      expect(attached.status).to.equal(403);
      for (const res of [byIdentifier, unknown, attached]) {
        expect(res.text).not.to.contain(victim.card_token).and.not.to.contain(victim.shopper_ref);
      }
      const otherShopper = await svc.request('POST', `/v1/shoppers/${victim.shopper_ref}/cards`, {
        token: me,
        json: { token: mine.token },
      });
      expect(otherShopper.status).to.equal(404);
      expect(await card(victim.card_token)).to.include({ shopper_ref: victim.shopper_ref });
    });
  });

  // Last (mocha runs a describe's own tests before its nested ones): after every payload above.
  describe('card data', () => {
    it('when every table is exported after these payloads, then none of their card numbers is in it', async () => {
      expect(findPans(await exportAllTables(svc), USED_PANS)).to.deep.equal([]);
      expect(findPans(svc.logs(), USED_PANS)).to.deep.equal([]);
    });
  });
});
