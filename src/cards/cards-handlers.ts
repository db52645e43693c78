/** HTTP adapter of the card vault: validated input in, one service call, response out. */
import type { Request } from 'express';
import { AppError } from '../errors/app-error.js';
import type { RateLimitDecision, SharedBudget } from '../ratelimit/rate-limiter.js';
import type { TokenBuckets } from '../ratelimit/token-bucket.js';
import type { HandlerMap } from '../http/types.js';
import { callerOf, clientKeyOf } from '../http/callers.js';
import { contractHandlers, type Schemas } from '../http/contract.js';
import { principalOf } from '../http/types.js';
import type { CardInput, CardView, SightingHooks, VaultService } from './vault-service.js';

/** The body schema (oneOf) guarantees exactly one of pan / par / alias. */
function toCardInput(body: Schemas['CardIdentifierInput']): CardInput {
  if ('pan' in body) {
    return {
      kind: 'pan',
      pan: body.pan,
      ...(body.expiryMonth === undefined ? {} : { expiryMonth: body.expiryMonth }),
      ...(body.expiryYear === undefined ? {} : { expiryYear: body.expiryYear }),
    };
  }
  if ('par' in body) return { kind: 'par', par: body.par };
  return { kind: 'alias', namespace: body.alias.namespace, value: body.alias.value };
}

export function cardJson(card: CardView): Schemas['Card'] {
  return {
    token: card.token,
    shopperReference: card.shopperReference,
    ...(card.brand === undefined ? {} : { brand: card.brand }),
    ...(card.last4 === undefined ? {} : { last4: card.last4 }),
    ...(card.expiryMonth === undefined
      ? {}
      : { expiryMonth: card.expiryMonth, ...(card.expiryYear === undefined ? {} : { expiryYear: card.expiryYear }) }),
    createdAt: card.createdAt.toISOString(),
  };
}

/**
 * Tokenising and attaching are for checkout, POS and gateway clients. A shopper-bound token (the
 * loyalty app) could otherwise probe which card numbers are known and to which shopper they belong.
 */
function refuseShopperTokens(req: Request): void {
  if (principalOf(req).shopperRef !== undefined) {
    throw new AppError('INSUFFICIENT_SCOPE', { detail: 'Shopper tokens cannot tokenise cards or attach identifiers.' });
  }
}

/**
 * @param limits per client, every card request: one client's flood must not starve checkout for the
 *   others.
 * @param firstSightings per client, shared by every instance (the database's sliding window). `POST
 *   /v1/tokens` answers 201 for a new card and 200 for a known one, so a `tokens:write` client can ask
 *   whether a card is known here; every "unknown" answer is a first sighting and spends this lower
 *   budget. The budget is read alongside the lookup and checked before any answer, so once it is spent
 *   every tokenisation by that client answers 429 `FIRST_SIGHTING_RATE_LIMITED`, known card or not, and
 *   the refusal itself answers nothing (README: membership probing). Attaching an identifier answers
 *   the same question (201 attached vs 409 linked elsewhere), so every attach spends one unit before
 *   anything is looked up.
 */
export function cardsHandlers(vault: VaultService, limits: TokenBuckets, firstSightings?: SharedBudget): HandlerMap {
  const limit = (req: Request): void => {
    const decision = limits.take(clientKeyOf(principalOf(req)));
    if (decision.allowed) return;
    throw new AppError('TOO_MANY_REQUESTS', {
      detail: 'Card endpoint rate limit reached for this client.',
      headers: { 'Retry-After': String(decision.retryAfterSeconds) },
    });
  };
  const refuseUnless = (decision: RateLimitDecision): void => {
    if (decision.allowed) return;
    throw new AppError('FIRST_SIGHTING_RATE_LIMITED', {
      detail: 'This client has created too many new cards recently; nothing was created.',
      headers: { 'Retry-After': String(decision.retryAfterSeconds) },
    });
  };
  return contractHandlers({
    async createToken(req, res) {
      refuseShopperTokens(req);
      limit(req);
      const input = toCardInput(req.valid.body);
      const client = clientKeyOf(principalOf(req));
      let hooks: SightingHooks = {};
      if (firstSightings !== undefined) {
        // Read while the card is looked up; awaited before any answer, so it adds no round trip.
        const budget = firstSightings.peek(client);
        budget.catch(() => undefined);
        let taken = false;
        hooks = {
          beforeAnswer: async () => refuseUnless(await budget),
          beforeFirstSighting: async () => {
            if (taken) return;
            taken = true;
            refuseUnless(await firstSightings.take(client));
          },
        };
      }
      const { card, created } = await vault.tokenise(input, hooks);
      res.status(created ? 201 : 200).json(cardJson(card));
    },
    async getToken(req, res) {
      limit(req);
      res.json(cardJson(await vault.getCard(req.valid.path.token, callerOf(req))));
    },
    async attachIdentifier(req, res) {
      refuseShopperTokens(req);
      limit(req);
      const { path, body } = req.valid;
      if (firstSightings !== undefined) refuseUnless(await firstSightings.take(clientKeyOf(principalOf(req))));
      const { card, created } = await vault.attachIdentifier(path.token, toCardInput(body), callerOf(req));
      res.status(created ? 201 : 200).json(cardJson(card));
    },
    async detokenise(req, res) {
      const { path, body } = req.valid;
      const { pan } = await vault.detokenise(path.token, body.reason, callerOf(req));
      res.json({ token: path.token, pan });
    },
  });
}
