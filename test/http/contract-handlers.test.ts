/**
 * Handlers typed from openapi.yaml (src/http/contract.ts over the generated src/http/api-types.ts).
 * The `@ts-expect-error` lines are the type tests: `npm run typecheck` fails if one of them compiles,
 * that is, if the types stopped following the contract.
 */
import { expect } from 'chai';
import type { Request, Response } from 'express';
import {
  contractHandlers,
  filled,
  type BodyOf,
  type HeadersOf,
  type QueryOf,
  type Schemas,
  type SuccessBodyOf,
} from '../../src/http/contract.js';

describe('HTTP layer: handlers typed from the contract', () => {
  it('when the contract changes a type, then the handlers that read or write it no longer compile', () => {
    const card: SuccessBodyOf<'createToken'> = {
      token: 'tok_typedaaaaaaaaaaaaaaaaaaaaaaaa',
      shopperReference: 'shp_typedaaaaaaaaaaaaaaaaaaaaaaa',
      createdAt: '2026-12-06T00:00:00.000Z',
    };
    // @ts-expect-error a brand the contract does not list
    const unknownBrand: Schemas['Card'] = { ...card, brand: 'unionpay' };
    // @ts-expect-error createdAt is required by the Card schema
    const noCreatedAt: SuccessBodyOf<'getToken'> = { token: card.token, shopperReference: card.shopperReference };
    // @ts-expect-error the redemption body has no `pan`
    const redemption: BodyOf<'redeemPoints'> = { points: 10, reference: 'order-one', pan: 'x' };
    // Header parameters are read by their lower-case names, as Node gives them.
    const headers: HeadersOf<'redeemPoints'> = { 'idempotency-key': 'redeem-one' };
    // @ts-expect-error a query parameter the operation does not declare
    const query: QueryOf<'listShopperLedger'> = { limit: 10, offset: 5 };
    // @ts-expect-error a 204 has no body
    const deleted: SuccessBodyOf<'deleteSubscription'> = {};
    expect([unknownBrand, noCreatedAt, redemption, headers, query, deleted]).to.have.length(6);
  });

  it('when handlers are given by operationId, then the app gets the same operations', () => {
    const handlers = contractHandlers({
      getLiveness(_req, res) {
        res.json({ status: 'ok' });
      },
      getCurrentPrincipal(_req, res) {
        // @ts-expect-error `scopes` is an array in the contract
        res.json({ subject: 'svc', scopes: 'a:read' });
      },
    });
    expect(Object.keys(handlers)).to.deep.equal(['getLiveness', 'getCurrentPrincipal']);
    // @ts-expect-error an operationId openapi.yaml does not have
    contractHandlers({ deleteEverything() {} });
  });

  it('when a handler runs without validated input, then it fails instead of reading undefined', () => {
    const handlers = contractHandlers({ getLiveness: () => undefined });
    const req = { method: 'GET', path: '/healthz' } as Request;
    expect(() => handlers['getLiveness']?.(req, {} as Response)).to.throw('no validated input on GET /healthz');
  });

  it('when a defaulted parameter is read, then a missing value fails loudly', () => {
    expect(filled(50, 'limit')).to.equal(50);
    expect(() => filled(undefined, 'limit')).to.throw('limit has no value');
  });
});
