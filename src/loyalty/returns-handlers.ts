/**
 * HTTP adapters of returns at a till (issue 22): validated input in, one service call, response out.
 * The card is in the body, never in a URL; a PAN takes `tokens:write` besides `returns:write` (the
 * scope of clients that handle card numbers); shopper tokens are refused.
 */
import type { Request } from 'express';
import { AppError } from '../errors/app-error.js';
import { callerOf } from '../http/callers.js';
import { contractHandlers, type Schemas } from '../http/contract.js';
import type { HandlerMap } from '../http/types.js';
import { principalOf } from '../http/types.js';
import type { PresentedCard, ReturnablePurchase, ReturnsService } from './returns-service.js';

export const PAN_SCOPE = 'tokens:write';

function presentedCard(req: Request, card: Schemas['PresentedCard']): PresentedCard {
  const principal = principalOf(req);
  if (principal.shopperRef !== undefined) {
    throw new AppError('INSUFFICIENT_SCOPE', { detail: 'Shopper tokens cannot look up or record returns.' });
  }
  if ('pan' in card) {
    if (!principal.scopes.has(PAN_SCOPE)) {
      throw new AppError('INSUFFICIENT_SCOPE', { detail: 'Presenting a card number takes tokens:write.' });
    }
    return { kind: 'pan', pan: card.pan };
  }
  if ('par' in card) return { kind: 'par', par: card.par };
  return { kind: 'token', token: card.token };
}

function purchaseJson(p: ReturnablePurchase): Schemas['ReturnablePurchase'] {
  return {
    paymentId: p.paymentId,
    authorisedAt: p.authorisedAt.toISOString(),
    ...(p.channel === null ? {} : { channel: p.channel as NonNullable<Schemas['ReturnablePurchase']['channel']> }),
    currency: p.currency,
    amount: p.amount,
    refundableAmount: p.refundableAmount,
    ...(p.last4 === null ? {} : { last4: p.last4 }),
  };
}

export function returnsHandlers(returns: ReturnsService, windowDays: number): HandlerMap {
  return contractHandlers({
    async lookupReturnablePurchases(req, res) {
      const card = presentedCard(req, req.valid.body.card);
      const purchases = await returns.lookup(card, callerOf(req));
      res.json({ returnWindowDays: windowDays, purchases: purchases.map(purchaseJson) });
    },
    async recordReturn(req, res) {
      const { body, headers } = req.valid;
      const card = presentedCard(req, body.card);
      const result = await returns.recordReturn(
        card,
        {
          paymentId: body.paymentId,
          amount: body.amount,
          mode: body.mode,
          reference: body.reference,
          ...(body.providerRefundId === undefined ? {} : { providerRefundId: body.providerRefundId }),
          ...(body.storeId === undefined ? {} : { storeId: body.storeId }),
        },
        headers['idempotency-key'],
        callerOf(req),
      );
      if (result.replayed) res.setHeader('Idempotent-Replayed', 'true');
      res.status(result.status).json(result.body);
    },
  });
}
