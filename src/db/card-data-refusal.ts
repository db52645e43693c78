/**
 * The database's card-data guard (the `card_data_guard` triggers of migration 20261206000100) refuses a
 * row holding what reads as card data: SQLSTATE 23514 with constraint `card_data_guard`. The edge
 * refuses such input first; reaching the trigger means a field the edge did not check held it, and the
 * client is told so (422), never given a 500.
 */
export function isCardDataRefused(error: unknown): boolean {
  const e = error as { code?: unknown; constraint?: unknown; message?: unknown; cause?: unknown } | undefined;
  if (e === undefined || e === null) return false;
  if (
    e.code === '23514' &&
    (e.constraint === 'card_data_guard' ||
      (typeof e.message === 'string' && e.message.includes('card data refused in')))
  ) {
    return true;
  }
  return e.cause !== undefined && e.cause !== error && isCardDataRefused(e.cause);
}
