/**
 * The simulator signs with the service's own code (crypto/); here its deliveries are checked by the
 * gateways' own libraries, so that "the service accepts what the simulator sends" cannot be two
 * copies of one mistake: Standard Webhooks' `Webhook.verify`, Adyen's `hmacValidator`, Stripe's
 * `webhooks.constructEvent`. And its inputs: only test PANs, amounts by the programme's exponents.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Webhook } from 'standardwebhooks';
import { hmacValidator } from '@adyen/api-library';
import Stripe from 'stripe';
import { containsCardData, luhnValid } from '../../src/card-data/card-data-guard.js';
import { currencyExponent } from '../../src/loyalty/programme.js';
import { amounts } from '../../src/simulate/amounts.js';
import { parseCard, TEST_PANS } from '../../src/simulate/cards.js';
import { signedDelivery } from '../../src/simulate/deliveries.js';
import { SCENARIOS, type DeliveryInit } from '../../src/simulate/payloads.js';
import type { Provider, SimulatorSettings } from '../../src/simulate/settings.js';

const SECRETS: Record<Provider, string> = {
  platform: `whsec_${randomBytes(32).toString('base64')}`,
  adyen: randomBytes(32).toString('hex').toUpperCase(),
  stripe: `whsec_${randomBytes(24).toString('hex')}`,
};

const settings: SimulatorSettings = {
  secretFor: (provider) => ({ secret: SECRETS[provider], source: 'test' }),
  adyenBasicAuth: undefined,
  adyenLive: false,
  bearer: () => Promise.resolve('unused'),
};

function init(scenario: DeliveryInit['scenario']): DeliveryInit {
  return {
    scenario,
    payment: scenario === 'capture' || scenario === 'refund' ? 'ABCDEFGHIJKLMNOP' : 'pay-sim-abc',
    amount: { value: 4200, currency: 'EUR' },
    card: {
      platform: { token: 'tok_onxw2zlsmvzxi2lknnwg23tpob' },
      token: 'tok_onxw2zlsmvzxi2lknnwg23tpob',
      brand: 'visa',
      last4: '1111',
      par: undefined,
    },
    now: new Date(),
  };
}

describe("simulate's deliveries, checked by the gateways' own libraries", () => {
  for (const scenario of SCENARIOS) {
    it(`when platform ${scenario} is signed, then standardwebhooks verifies it`, () => {
      const delivery = signedDelivery('platform', init(scenario), settings);
      const event = new Webhook(SECRETS.platform).verify(delivery.body, { ...delivery.headers }) as { type: string };
      expect(event.type).to.equal(delivery.eventType);
    });

    it(`when adyen ${scenario} is signed, then @adyen/api-library's hmacValidator accepts the item`, () => {
      const delivery = signedDelivery('adyen', init(scenario), settings);
      const body = JSON.parse(delivery.body) as {
        live: string;
        notificationItems: { NotificationRequestItem: never }[];
      };
      expect(body.live).to.equal('false');
      const item = body.notificationItems[0]?.NotificationRequestItem as never;
      expect(new hmacValidator().validateHMAC(item, SECRETS.adyen)).to.equal(true);
      expect(new hmacValidator().validateHMAC(item, randomBytes(32).toString('hex'))).to.equal(false);
    });

    it(`when stripe ${scenario} is signed, then stripe.webhooks.constructEvent accepts it`, () => {
      const delivery = signedDelivery('stripe', init(scenario), settings);
      const stripe = new Stripe('sk_test_not_used_for_network');
      const header = delivery.headers['stripe-signature'] as string;
      expect(stripe.webhooks.constructEvent(delivery.body, header, SECRETS.stripe).type).to.equal(delivery.eventType);
      expect(() =>
        stripe.webhooks.constructEvent(delivery.body, header, `whsec_${randomBytes(24).toString('hex')}`),
      ).to.throw();
    });
  }

  it('when a delivery is built from a PAN, then only the platform scheme carries it: no card data in the Adyen and Stripe bodies', () => {
    const withPan: DeliveryInit = {
      ...init('authorise'),
      card: { ...init('authorise').card, platform: { pan: '4111111111111111' } },
    };
    expect(signedDelivery('platform', withPan, settings).body).to.contain('"pan":"4111111111111111"');
    for (const provider of ['adyen', 'stripe'] as const) {
      const body = signedDelivery(provider, withPan, settings).body;
      expect(containsCardData(body), provider).to.equal(false);
    }
  });
});

describe("simulate's inputs", () => {
  it('every listed test PAN is Luhn-valid and accepted; a PAN outside the list is refused without echoing it', () => {
    for (const pan of Object.values(TEST_PANS).flat()) {
      expect(luhnValid(pan), pan).to.equal(true);
      expect(parseCard(pan)).to.include({ kind: 'pan', last4: pan.slice(-4) });
    }
    expect(parseCard('4111 1111 1111 1111')).to.include({ kind: 'pan', brand: 'visa' });
    expect(() => parseCard('4000000000000077'))
      .to.throw(/ending 0077/)
      .with.property('message')
      .that.does.not.contain('4000000000000077');
    expect(parseCard('tok_onxw2zlsmvzxi2lknnwg23tpob')).to.deep.equal({
      kind: 'token',
      token: 'tok_onxw2zlsmvzxi2lknnwg23tpob',
    });
    expect(() => parseCard('not-a-card')).to.throw(/--card must be/);
  });

  it('amounts use the exponents points are counted by (IQD has 3 decimals, JPY none)', () => {
    const a = amounts(currencyExponent);
    expect(a.parse('42.00', 'EUR')).to.deep.equal({ value: 4200, currency: 'EUR' });
    expect(a.parse('42', 'EUR')).to.deep.equal({ value: 4200, currency: 'EUR' });
    expect(a.parse('1500', 'JPY')).to.deep.equal({ value: 1500, currency: 'JPY' });
    expect(a.parse('1.250', 'IQD')).to.deep.equal({ value: 1250, currency: 'IQD' });
    expect(a.format({ value: 1250, currency: 'IQD' })).to.equal('1.250 IQD');
    expect(a.format({ value: 5, currency: 'EUR' })).to.equal('0.05 EUR');
    expect(a.quarterOf({ value: 4200, currency: 'EUR' })).to.deep.equal({ value: 1000, currency: 'EUR' });
    for (const bad of [
      ['1.5', 'JPY'],
      ['0', 'EUR'],
      ['-1', 'EUR'],
      ['4.2e3', 'EUR'],
      ['1.00', 'eur'],
    ] as const) {
      expect(() => a.parse(bad[0], bad[1]), bad.join(' ')).to.throw();
    }
  });
});
