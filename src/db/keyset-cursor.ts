/**
 * Keyset pagination cursors: the (timestamp, id) of the last row of a page, opaque to clients.
 * Stable under inserts and free of OFFSET scans; a cursor that does not decode is a 400 naming the
 * parameter, never a 500.
 */
import type { Knex } from 'knex';
import { AppError } from '../errors/app-error.js';

export function encodeCursor(at: Date, id: string): string {
  return Buffer.from(JSON.stringify([at.toISOString(), id])).toString('base64url');
}

export function decodeCursor(cursor: string): [Date, string] {
  try {
    const [at, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
    const date = new Date(String(at));
    // Only instants PostgreSQL can hold: a crafted far-away date must be a 400, not a driver error.
    const year = date.getUTCFullYear();
    if (typeof id !== 'string' || Number.isNaN(date.getTime()) || year < 1970 || year > 9999) throw new Error('cursor');
    return [date, id];
  } catch {
    throw new AppError('VALIDATION_FAILED', {
      extensions: { errors: [{ pointer: '/query/cursor', message: 'is not a cursor from this list' }] },
    });
  }
}

/** One page of a list, newest first; `nextCursor` is absent on the last page. */
export interface Page<T> {
  readonly items: readonly T[];
  readonly nextCursor: string | undefined;
}

/**
 * Narrows a newest-first query to the rows after the cursor's: (at, id) strictly before it. The
 * query is ordered by `atColumn` then `idColumn`, both descending.
 */
export function afterCursor(
  query: Knex.QueryBuilder,
  cursor: string | undefined,
  atColumn: string,
  idColumn: string,
): void {
  if (cursor === undefined) return;
  const [at, id] = decodeCursor(cursor);
  void query.where((q) =>
    q.where(atColumn, '<', at).orWhere((q2) => q2.where(atColumn, '=', at).where(idColumn, '<', id)),
  );
}

/** The page from a query limited to `limit + 1` rows: the extra row only says a next page exists. */
export function pageOf<T>(rows: readonly T[], limit: number, key: (last: T) => [Date, string]): Page<T> {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items, nextCursor: rows.length > limit && last !== undefined ? encodeCursor(...key(last)) : undefined };
}

/** A page as the API answers it: `items`, and `nextCursor` unless this is the last page. */
export function pageBody<T, J>(page: Page<T>, toJson: (item: T) => J): { items: J[]; nextCursor?: string } {
  return {
    items: page.items.map(toJson),
    ...(page.nextCursor === undefined ? {} : { nextCursor: page.nextCursor }),
  };
}
