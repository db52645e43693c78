/** HTTP adapters of the finance operations (admin): the liability report and adjustments. */
import type { Request } from 'express';
import { actorOf } from '../http/callers.js';
import { contractHandlers, type Schemas } from '../http/contract.js';
import type { HandlerMap } from '../http/types.js';
import type { AdjustmentResult } from './adjustment-service.js';
import { ShopperMergedMeanwhile } from './ledger-book.js';
import type { LoyaltyService } from './loyalty-service.js';

export function financeHandlers(loyalty: LoyaltyService, shopper: (req: Request) => Promise<string>): HandlerMap {
  return contractHandlers({
    async getLoyaltyLiability(req, res) {
      const { asOf, from } = req.valid.query;
      res.json(
        await loyalty.liability.report({
          ...(asOf === undefined ? {} : { asOf: new Date(asOf) }),
          ...(from === undefined ? {} : { from: new Date(from) }),
        }),
      );
    },

    async adjustPoints(req, res) {
      const { body, headers } = req.valid;
      const ref = await shopper(req);
      let result;
      try {
        result = await loyalty.adjustments.adjust(ref, body, headers['idempotency-key'], actorOf(req));
      } catch (error) {
        // Merged meanwhile: answer 308 to the survivor, as for any merged reference.
        if (error instanceof ShopperMergedMeanwhile) await shopper(req);
        throw error;
      }
      if (result.replayed) res.setHeader('Idempotent-Replayed', 'true');
      res.status(201).json(adjustmentJson(result.body));
    },
  });
}

function adjustmentJson(a: AdjustmentResult): Schemas['Adjustment'] {
  // The claim's provider was validated against the contract's list when it was made.
  const { missingPayment, ...rest } = a;
  return {
    ...rest,
    ...(missingPayment === undefined ? {} : { missingPayment: missingPayment as Schemas['MissingPayment'] }),
  };
}
