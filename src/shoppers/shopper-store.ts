/**
 * SQL of shopper references: `shoppers` and the merge map `shopper_merges`. Functions take a knex
 * handle or the caller's transaction; shopper-access.ts decides what the rows mean.
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

/** The survivor `shopperRef` was merged into; undefined when it was not merged. */
export async function findSurvivor(db: Db, shopperRef: string): Promise<string | undefined> {
  const row = (await db('shopper_merges').where({ merged_ref: shopperRef }).first('survivor_ref')) as
    { survivor_ref: string } | undefined;
  return row?.survivor_ref;
}

/** The merge rows of those of these references that were merged (one query). */
export async function findSurvivors(
  db: Db,
  shopperRefs: readonly string[],
): Promise<{ merged_ref: string; survivor_ref: string }[]> {
  return (await db('shopper_merges')
    .whereIn('merged_ref', [...new Set(shopperRefs)])
    .select('merged_ref', 'survivor_ref')) as { merged_ref: string; survivor_ref: string }[];
}

/** The references merged into this shopper. */
export async function findMergedInto(db: Db, survivorRef: string): Promise<string[]> {
  const rows = (await db('shopper_merges').where({ survivor_ref: survivorRef }).select('merged_ref')) as {
    merged_ref: string;
  }[];
  return rows.map((r) => r.merged_ref);
}

/**
 * One round trip: undefined when the shopper does not exist, else its survivor (null when it was not
 * merged).
 */
export async function findShopperAndSurvivor(
  db: Db,
  shopperRef: string,
): Promise<{ survivor_ref: string | null } | undefined> {
  return (await db('shoppers as s')
    .leftJoin('shopper_merges as m', 'm.merged_ref', 's.shopper_ref')
    .where('s.shopper_ref', shopperRef)
    .first('m.survivor_ref')) as { survivor_ref: string | null } | undefined;
}
