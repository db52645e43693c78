/**
 * HOOK for tiers (issue 21, built on another branch): the tier each shopper was in as of a time, for
 * the liability report's "by tier" figures. Until tiers exist every shopper is in tier `none`, which
 * this says by returning `'none'` (the report then needs no per-shopper read). When tiers land,
 * return a map shopper reference → tier name (shoppers absent from it are reported under `none`).
 */
import type { Knex } from 'knex';

export const NO_TIER = 'none';

export type TierHook = (
  db: Knex | Knex.Transaction,
  asOf: Date,
) => Promise<ReadonlyMap<string, string> | typeof NO_TIER>;

export const liabilityTiersAsOf: TierHook = () => Promise.resolve(NO_TIER);
