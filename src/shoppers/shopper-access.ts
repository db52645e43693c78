/**
 * Which shopper a reference means, and who may reach it.
 *
 * A merged shopper's reference keeps resolving: `shopper_merges` points it at its survivor (always
 * one hop: a merge re-points everything that pointed at the shopper it absorbs). A shopper token may
 * reach its own shopper, and the survivor of its shopper (the same person, after a merge); anything
 * else is `404` exactly like a reference that does not exist, so a token cannot probe for shoppers.
 * `loyalty:admin` reaches every shopper.
 */
import type { Knex } from 'knex';
import type { Principal } from '../auth/authenticator.js';
import { AppError } from '../errors/app-error.js';
import { findMergedInto, findShopperAndSurvivor, findSurvivor, findSurvivors } from './shopper-store.js';

export const ADMIN_SCOPE = 'loyalty:admin';

export async function survivorOf(db: Knex | Knex.Transaction, shopperRef: string): Promise<string> {
  return (await findSurvivor(db, shopperRef)) ?? shopperRef;
}

/** The survivors of those of these references that were merged (one query). */
export async function survivorsOf(
  db: Knex | Knex.Transaction,
  shopperRefs: readonly string[],
): Promise<Map<string, string>> {
  if (shopperRefs.length === 0) return new Map();
  const rows = await findSurvivors(db, shopperRefs);
  return new Map(rows.map((r) => [r.merged_ref, r.survivor_ref]));
}

/** The references merged into this shopper (its own history lives under them). */
export function mergedInto(db: Knex | Knex.Transaction, survivorRef: string): Promise<string[]> {
  return findMergedInto(db, survivorRef);
}

export type ShopperAccess =
  | { readonly kind: 'shopper'; readonly shopperRef: string }
  /** The reference was merged: the caller should use the survivor's (HTTP 308). */
  | { readonly kind: 'merged'; readonly survivorRef: string };

/**
 * Checks that the principal may reach `shopperRef` and resolves merges. Throws `NOT_FOUND` for an
 * unknown shopper and for one the caller may not reach, alike.
 */
export async function accessShopper(
  db: Knex | Knex.Transaction,
  principal: Principal,
  shopperRef: string,
): Promise<ShopperAccess> {
  const notFound = (): AppError => new AppError('NOT_FOUND', { detail: 'No such shopper.' });
  const admin = principal.scopes.has(ADMIN_SCOPE);
  if (!admin && principal.shopperRef === undefined) throw notFound();
  // One round trip: does the shopper exist, and was it merged into another?
  const row = await findShopperAndSurvivor(db, shopperRef);
  if (row === undefined) throw notFound();
  const survivor = row.survivor_ref ?? shopperRef;
  if (!admin) {
    const own = principal.shopperRef as string;
    if (own !== shopperRef && (await survivorOf(db, own)) !== survivor) throw notFound();
  }
  return survivor === shopperRef ? { kind: 'shopper', shopperRef } : { kind: 'merged', survivorRef: survivor };
}
