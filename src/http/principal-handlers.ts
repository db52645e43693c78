import { contractHandlers } from './contract.js';
import type { HandlerMap } from './types.js';
import { principalOf } from './types.js';

/** Lets a client see how the service understood its token: subject, scopes, shopper. */
export function authHandlers(): HandlerMap {
  return contractHandlers({
    getCurrentPrincipal(req, res) {
      const p = principalOf(req);
      res.json({
        subject: p.subject,
        scopes: [...p.scopes].sort(),
        ...(p.shopperRef === undefined ? {} : { shopperReference: p.shopperRef }),
        ...(p.expiresAt === undefined ? {} : { expiresAt: p.expiresAt.toISOString() }),
      });
    },
  });
}
