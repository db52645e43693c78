/**
 * The one place where errors become HTTP: RFC 9457 `application/problem+json` with a stable `code`,
 * answered with the status `problem-statuses.ts` gives the code. Unknown errors become a bare 500 and are logged with their cause; nothing internal (stack, SQL,
 * driver message) and nothing from the request reaches the body. As a last safety net, any PAN-like
 * digit run in the rendered body is masked.
 */
import type { ErrorRequestHandler, Response } from 'express';
import { AppError } from '../errors/app-error.js';
import { isCardDataRefused } from '../db/card-data-refusal.js';
import { isKeyVersionNotWritable } from '../db/key-version-check.js';
import { maskPans } from '../logging/pan-redactor.js';
import type { Logger } from '../logging/logger.js';
import { problemStatus } from './problem-statuses.js';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export function problemType(code: string): string {
  return `urn:loyalty-vault:problem:${code.toLowerCase().replace(/_/g, '-')}`;
}

/** Turn anything thrown into an AppError: body-parser, database and unknown errors included. */
export function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  const e = error as { type?: unknown; code?: unknown; name?: unknown; status?: unknown } | null;
  switch (e?.type) {
    case 'entity.too.large':
      return new AppError('PAYLOAD_TOO_LARGE', { cause: error });
    case 'entity.parse.failed':
      return new AppError('MALFORMED_JSON', { cause: error });
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return new AppError('UNSUPPORTED_MEDIA_TYPE', {
        detail: 'The body encoding or charset is not supported.',
        cause: error,
      });
    case 'request.aborted':
    case 'request.size.invalid':
      return new AppError('VALIDATION_FAILED', { detail: 'The request body was incomplete.', cause: error });
    default:
      break;
  }
  // The router could not percent-decode a path parameter (`/v1/tokens/%ZZ`). Its message quotes the
  // raw segment, which may hold a card number: no cause is kept.
  if (error instanceof URIError && e?.status === 400) {
    return new AppError('VALIDATION_FAILED', {
      detail: 'The request path is not valid percent-encoded UTF-8.',
      extensions: { errors: [{ pointer: '/path', message: 'is not valid percent-encoding' }] },
    });
  }
  // A row refused by the write-time key check even after the ring reloaded (retryOnStaleKey): a
  // key-state change is in progress. Retryable, and not our bug: 503, never a 500.
  if (isKeyVersionNotWritable(error))
    return new AppError('KEY_RING_STALE', { headers: { 'Retry-After': '1' }, cause: error });
  // The database's card-data guard refused a row the edge let through: the input held card data.
  // No cause is kept: the refusal is the client's, not a fault to log.
  if (isCardDataRefused(error)) {
    return new AppError('CARD_NUMBER_NOT_ALLOWED', { detail: 'Card numbers are accepted only by the card vault.' });
  }
  if (isDatabaseTimeout(e)) return new AppError('DATABASE_TIMEOUT', { headers: { 'Retry-After': '1' }, cause: error });
  if (isDatabaseUnavailable(e))
    return new AppError('DATABASE_UNAVAILABLE', { headers: { 'Retry-After': '2' }, cause: error });
  return new AppError('INTERNAL', { cause: error });
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
]);

/**
 * What `pg` throws, without a code, when the connection under a query is gone (the server crashed or
 * restarted mid-statement); knex prefixes the statement (`ROLLBACK - …`).
 */
const LOST_CONNECTION =
  /(Connection terminated|Client has encountered a connection error|Client was closed and is not queryable|timeout exceeded when trying to connect)/;

function isDatabaseUnavailable(e: { code?: unknown; name?: unknown; message?: unknown } | null): boolean {
  if (e === null) return false;
  if (e.name === 'KnexTimeoutError') return true; // no pooled connection could be had in time
  if (e.code === undefined && typeof e.message === 'string' && LOST_CONNECTION.test(e.message)) return true;
  const code = typeof e.code === 'string' ? e.code : '';
  // SQLSTATE class 08 (connection exception), 57P01-03 (admin/crash shutdown, cannot connect now),
  // 53300 (too many connections), 40001/40P01 (serialization failure, deadlock: retryable).
  return (
    CONNECTION_CODES.has(code) ||
    code.startsWith('08') ||
    /^57P0[1-3]$/.test(code) ||
    ['53300', '40001', '40P01'].includes(code)
  );
}

function isDatabaseTimeout(e: { code?: unknown } | null): boolean {
  return e?.code === '57014'; // query_canceled: statement_timeout
}

export function sendProblem(res: Response, error: AppError, requestId: string): void {
  const status = problemStatus(error);
  const body = {
    type: problemType(error.code),
    title: error.title,
    status,
    code: error.code,
    ...(error.detail === undefined ? {} : { detail: error.detail }),
    ...error.extensions,
    requestId,
  };
  for (const [name, value] of Object.entries(error.headers)) {
    // A header value Node refuses (a character outside Latin-1) must not turn the problem into a 500.
    if (/^[\t\x20-\x7e\x80-\xff]*$/.test(value)) res.setHeader(name, value);
  }
  res
    .status(status)
    .type(PROBLEM_CONTENT_TYPE)
    .send(maskPans(JSON.stringify(body)));
}

export function problemMiddleware(logger: Logger): ErrorRequestHandler {
  return (error: unknown, req, res, next) => {
    if (res.headersSent) {
      next(error);
      return;
    }
    const appError = toAppError(error);
    if (problemStatus(appError) >= 500) {
      logger.error({ err: error, requestId: req.id, code: appError.code }, 'request failed');
    }
    sendProblem(res, appError, req.id);
  };
}
