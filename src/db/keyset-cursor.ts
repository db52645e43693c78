/**
 * Keyset pagination cursors: the (timestamp, id) of the last row of a page, opaque to clients.
 * Stable under inserts and free of OFFSET scans; a cursor that does not decode is a 400 naming the
 * parameter, never a 500.
 */
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
