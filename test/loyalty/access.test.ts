/**
 * Broken object-level authorisation: every `/v1/shoppers/{shopperReference}/…` operation of
 * openapi.yaml, with shopper A's token (every shopper scope) aimed at shopper B, must look exactly
 * like a shopper that does not exist; without the operation's scope, 403.
 */
import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import type { Operation } from '../../src/http/openapi.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { newShopper, payment, redeem, type Shopper } from './support.js';

const SHOPPER_SCOPES = 'loyalty:read loyalty:redeem loyalty:write';

describe('loyalty: a shopper token reaches only its own shopper', function () {
  this.timeout(60_000);
  let svc: TestService;
  let a: Shopper;
  let b: Shopper;
  let bRedemption: string;
  let shopperOps: Operation[];

  before(async () => {
    svc = await startTestService();
    const [panA, panB] = generatePans(2, '422222');
    a = await newShopper(svc, panA as string);
    b = await newShopper(svc, panB as string);
    const p = payment(b, { channel: 'in_store' });
    await p.send(svc, { type: 'authorised' });
    bRedemption = (await redeem(svc, b.shopperRef, 1, 'b-redemption-1')).body.redemptionId;
    shopperOps = svc.service.spec.operations.filter((op) =>
      op.pathTemplate.startsWith('/v1/shoppers/{shopperReference}'),
    );
  });
  after(async () => svc.close());

  /** A request that would succeed for the right caller: valid path, headers and body. */
  function requestFor(op: Operation, shopperRef: string, token: string) {
    const path = op.pathTemplate
      .replace('{shopperReference}', shopperRef)
      .replace('{redemptionId}', bRedemption)
      .replace('{campaignId}', 'cmp_aaaaaaaaaaaaaaaaaaaaaaaaaa');
    // A bare UUID, as clients are told to send: a prefixed one can read as a card number (one in 180).
    const headers: Record<string, string> = { 'idempotency-key': randomUUID() };
    const bodies: Record<string, unknown> = {
      redeemPoints: { points: 1, reference: 'bola' },
      enrolShopper: { externalMemberId: 'bola-member' },
      linkShopperCard: { token: a.cardToken },
    };
    const body = bodies[op.operationId];
    return svc.request(op.method.toUpperCase(), path, {
      token,
      headers,
      ...(body === undefined ? {} : { json: body }),
    });
  }

  it('covers every shopper operation of the contract', () => {
    expect(shopperOps.map((op) => op.operationId)).to.have.members([
      'listShopperPurchases',
      'getShopperBalance',
      'listShopperLedger',
      'redeemPoints',
      'reverseRedemption',
      'enrolShopper',
      'linkShopperCard',
      'listShopperCampaigns',
      'activateShopperCampaign',
    ]);
  });

  it("when shopper A's token is used on every route of shopper B, then 404 NOT_FOUND, the same as an unknown shopper, and B is unchanged", async () => {
    const token = await signToken({ scope: SHOPPER_SCOPES, shopperRef: a.shopperRef });
    const before = await svc.db.knex('loyalty_accounts').where({ shopper_ref: b.shopperRef }).first();
    for (const op of shopperOps) {
      if (op.operationId === 'reverseRedemption') continue; // admin-only: 403 first, below
      const res = await requestFor(op, b.shopperRef, token);
      expect(res.status, op.operationId).to.equal(404);
      expect(res.body.code, op.operationId).to.equal('NOT_FOUND');
      const unknown = await requestFor(op, 'shp_aaaaaaaaaaaaaaaaaaaaaaaaaa', token);
      expect(unknown.status, op.operationId).to.equal(404);
      expect({ ...res.body, requestId: 'x' }, op.operationId).to.deep.equal({ ...unknown.body, requestId: 'x' });
    }
    expect(await svc.db.knex('loyalty_accounts').where({ shopper_ref: b.shopperRef }).first()).to.deep.equal(before);
    expect(await svc.db.knex('cards').where({ token: a.cardToken }).first('shopper_ref')).to.deep.equal({
      shopper_ref: a.shopperRef,
    });
  });

  it('when a token has scopes but no shopper binding and no admin scope, then 404 on every shopper route', async () => {
    const token = await signToken({ scope: SHOPPER_SCOPES });
    for (const op of shopperOps.filter((o) => o.operationId !== 'reverseRedemption')) {
      expect((await requestFor(op, b.shopperRef, token)).status, op.operationId).to.equal(404);
    }
  });

  it('when the token lacks the operation scope, then 403 INSUFFICIENT_SCOPE even for its own shopper', async () => {
    const token = await signToken({ scope: 'tokens:read', shopperRef: b.shopperRef });
    for (const op of shopperOps) {
      const res = await requestFor(op, b.shopperRef, token);
      expect(res.status, op.operationId).to.equal(403);
      expect(res.body.code, op.operationId).to.equal('INSUFFICIENT_SCOPE');
    }
  });

  it("when an admin names B's redemption under A's reference, then 404 and it is not reversed", async () => {
    const admin = await signToken({ scope: 'loyalty:admin' });
    const op = shopperOps.find((o) => o.operationId === 'reverseRedemption') as Operation;
    const res = await requestFor(op, a.shopperRef, admin);
    expect(res.status).to.equal(404);
    expect(await svc.db.knex('loyalty_redemptions').where({ id: bRedemption }).first('state')).to.deep.equal({
      state: 'completed',
    });
  });

  it('when B uses its own token, then each read succeeds; an admin reaches B too', async () => {
    const own = await signToken({ scope: SHOPPER_SCOPES, shopperRef: b.shopperRef });
    const admin = await signToken({ scope: 'loyalty:admin' });
    for (const id of ['getShopperBalance', 'listShopperLedger', 'listShopperPurchases']) {
      const op = shopperOps.find((o) => o.operationId === id) as Operation;
      expect((await requestFor(op, b.shopperRef, own)).status, id).to.equal(200);
      expect((await requestFor(op, b.shopperRef, admin)).status, id).to.equal(200);
    }
  });
});
