/**
 * Shopper access: which shopper a reference means (merges resolved) and who may reach it. Loyalty and
 * payments both answer per shopper; neither owns this.
 */
import type { Request } from 'express';
import type { Knex } from 'knex';
import { AppError } from '../errors/app-error.js';
import { principalOf, validInput } from '../http/types.js';
import { maskPans } from '../logging/pan-redactor.js';
import { accessShopper } from './shopper-access.js';

/**
 * The shopper of the path, if the caller may reach it (`404` otherwise, as for an unknown one). A
 * merged reference answers `308` to the same URL under the survivor's reference.
 */
export async function reachableShopper(knex: Knex, req: Request): Promise<string> {
  const ref = validInput(req).path['shopperReference'] as string;
  const access = await accessShopper(knex, principalOf(req), ref);
  if (access.kind === 'shopper') return access.shopperRef;
  throw new AppError('SHOPPER_MERGED', {
    detail: 'This shopper was merged; repeat the request at Location.',
    extensions: { survivorReference: access.survivorRef },
    // Headers are not masked on the way out: a card number pasted into the query is masked here.
    headers: {
      Location: maskPans(req.originalUrl.replace(`/shoppers/${ref}`, `/shoppers/${access.survivorRef}`)).replace(
        /[^\x21-\x7e]/g,
        (c) => encodeURIComponent(c),
      ),
    },
  });
}
