/**
 * The webhook signature is a declared step of the operation (`x-webhook-signature`): every webhook
 * operation declares one, and an app whose schemes do not cover a declaration refuses to start.
 */
import { expect } from 'chai';
import { loadApiSpec } from '../../src/http/openapi.js';
import { declaredScheme } from '../../src/http/signed-body.js';

describe('signature as a declared step of the webhook operations', () => {
  const spec = loadApiSpec();
  const webhookOperations = spec.operations.filter((o) => o.pathTemplate.startsWith('/v1/webhooks/'));

  it('when openapi.yaml is read, then every inbound webhook operation declares a signature scheme and a raw body', () => {
    expect(webhookOperations.map((o) => o.operationId)).to.have.members([
      'receivePlatformWebhook',
      'receiveAdyenWebhook',
      'receiveStripeWebhook',
    ]);
    expect(
      webhookOperations.map((o) => [o.operationId, o.raw['x-webhook-signature'], o.raw['x-raw-body']]),
    ).to.deep.equal(
      webhookOperations.map((o) => [
        o.operationId,
        {
          receivePlatformWebhook: 'standard-webhooks',
          receiveAdyenWebhook: 'adyen-hmac',
          receiveStripeWebhook: 'stripe',
        }[o.operationId],
        true,
      ]),
    );
  });

  it('when a declared scheme is not provided, then the app refuses to start naming the operation', () => {
    for (const op of webhookOperations) {
      expect(() => declaredScheme(op, {})).to.throw(new RegExp(`^${op.operationId} declares x-webhook-signature`));
    }
  });

  it('when an operation declares no scheme, then none is required', () => {
    const health = spec.operations.find((o) => o.raw['x-webhook-signature'] === undefined);
    expect(health).to.not.equal(undefined);
    expect(declaredScheme(health!, {})).to.equal(undefined);
  });
});
