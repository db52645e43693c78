/**
 * Who may reach which shopper, and where a merged shopper's history lives: the service the loyalty
 * routes, and the payments feature's purchase history, go through (shoppers.ts holds the SQL).
 */
import type { Knex } from 'knex';
import type { Principal } from '../auth/authenticator.js';
import { accessShopper, mergedInto, type ShopperAccess } from '../shoppers/shopper-access.js';

export class ShopperService {
  constructor(private readonly knex: Knex) {}

  /** Throws `NOT_FOUND` for an unknown shopper and for one the caller may not reach, alike. */
  access(principal: Principal, shopperRef: string): Promise<ShopperAccess> {
    return accessShopper(this.knex, principal, shopperRef);
  }

  /** The references merged into this shopper (its own history lives under them too). */
  mergedInto(survivorRef: string): Promise<string[]> {
    return mergedInto(this.knex, survivorRef);
  }
}
