/**
 * A delivery signed as its gateway signs it, by the service's own signing code: Standard Webhooks
 * (crypto/standard-webhooks.ts, the code outbound events are signed with and platform deliveries
 * verified with) and the Adyen and Stripe HMACs (crypto/gateway-signatures.ts, the code their
 * adapters verify with).
 */
import { adyenHmac, stripeSignatureHeader } from '../crypto/gateway-signatures.js';
import { signatureHeaderValue } from '../crypto/standard-webhooks.js';
import { adyenItem, adyenNotification, letters, platformEvent, stripeEvent, type DeliveryInit } from './payloads.js';
import type { Provider, SimulatorSettings } from './settings.js';

export interface SignedDelivery {
  readonly provider: Provider;
  /** What the gateway calls the event: `payment.authorised`, `AUTHORISATION`, `charge.succeeded`. */
  readonly eventType: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

export function signedDelivery(provider: Provider, init: DeliveryInit, settings: SimulatorSettings): SignedDelivery {
  const { secret } = settings.secretFor(provider);
  const timestamp = String(Math.floor(init.now.getTime() / 1000));
  switch (provider) {
    case 'platform': {
      const event = platformEvent(init);
      const body = JSON.stringify(event);
      const id = `msg_${letters(24)}`;
      return {
        provider,
        eventType: String(event['type']),
        path: '/v1/webhooks/platform',
        headers: {
          'content-type': 'application/json',
          'webhook-id': id,
          'webhook-timestamp': timestamp,
          'webhook-signature': signatureHeaderValue([secret], id, timestamp, body),
        },
        body,
      };
    }
    case 'adyen': {
      const item = adyenItem(init);
      item.additionalData['hmacSignature'] = adyenHmac(item, secret).toString('base64');
      const basic = settings.adyenBasicAuth;
      return {
        provider,
        eventType: String(item['eventCode']),
        path: '/v1/webhooks/adyen',
        headers: {
          'content-type': 'application/json',
          ...(basic === undefined
            ? {}
            : {
                authorization: `Basic ${Buffer.from(`${basic.username}:${basic.password}`).toString('base64')}`,
              }),
        },
        body: JSON.stringify(adyenNotification(item, settings.adyenLive)),
      };
    }
    case 'stripe': {
      const event = stripeEvent(init);
      const body = JSON.stringify(event);
      return {
        provider,
        eventType: String(event['type']),
        path: '/v1/webhooks/stripe',
        headers: {
          'content-type': 'application/json',
          'stripe-signature': stripeSignatureHeader([secret], timestamp, body),
        },
        body,
      };
    }
  }
}
