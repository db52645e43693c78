/**
 * Whether the database refused a row with a check of ours: SQLSTATE 23514 naming `constraint` (pg
 * sets `constraint`; where a driver gives only the message, the message names it), here or in a
 * cause. The refusals themselves are recognised in key-version-check.ts and card-data-refusal.ts.
 */
export function isCheckViolation(error: unknown, constraint: string, messageHint: string = constraint): boolean {
  const e = error as { code?: unknown; constraint?: unknown; message?: unknown; cause?: unknown } | undefined;
  if (e === undefined || e === null) return false;
  if (
    e.code === '23514' &&
    (e.constraint === constraint || (typeof e.message === 'string' && e.message.includes(messageHint)))
  ) {
    return true;
  }
  return e.cause !== undefined && e.cause !== error && isCheckViolation(e.cause, constraint, messageHint);
}
