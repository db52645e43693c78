import { isCheckViolation } from './check-violation.js';

/**
 * The database's card-data guard (the `card_data_guard` triggers of migration 20261206000100) refuses a
 * row holding what reads as card data: SQLSTATE 23514 with constraint `card_data_guard`. The edge
 * refuses such input first; reaching the trigger means a field the edge did not check held it, and the
 * client is told so (422), never given a 500.
 */
export function isCardDataRefused(error: unknown): boolean {
  return isCheckViolation(error, 'card_data_guard', 'card data refused in');
}
