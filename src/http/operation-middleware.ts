/**
 * The chain every operation runs before its handler, built from its `openapi.yaml` entry:
 * authenticate → check scopes → read the body (JSON, or raw bytes for signed webhooks) → validate
 * (for signed webhooks: the parameters; the body after its signature, see signed-body.ts).
 * Authentication comes first so that an anonymous caller never gets a body parsed or validated.
 */
import express, { type Request, type RequestHandler, type Response } from 'express';
import type { Authenticator, Principal } from '../auth/authenticator.js';
import type { CardRoutesAuth } from '../config/config.js';
import { AppError } from '../errors/app-error.js';
import type { ClientCertificatePrincipal, ClientCertificateVerifier } from '../auth/certificate-principal.js';
import { toIssues, type Operation } from './openapi.js';
import { problemStatus } from './problem-statuses.js';
import { findSensitiveAuthenticationData, refuseCardData } from '../card-data/card-data-guard.js';

/** 8-4-4-4-12 hexadecimal digits: a UUID as clients generate them for Idempotency-Key. */
const CANONICAL_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Client certificates on the card-data operations (those with a `clientCertificate` requirement). */
export interface ClientCertificateAuth {
  readonly mode: CardRoutesAuth;
  readonly verifier: ClientCertificateVerifier;
}

export function authenticate(
  op: Operation,
  authenticator: Authenticator,
  certificates?: ClientCertificateAuth,
): RequestHandler {
  const bearer = op.security.some((s) => s.scheme === 'bearerAuth');
  const certificateMode =
    certificates !== undefined && op.security.some((s) => s.scheme === 'clientCertificate') ? certificates.mode : 'jwt';
  if (certificateMode !== 'jwt' && certificates !== undefined) {
    const { verifier } = certificates;
    return async (req, _res, next) => {
      // A presented certificate is always judged, never skipped for a bearer token: a till whose
      // certificate was revoked is told so, whatever else it sends.
      const presented = verifier.presented(req.socket);
      if (presented !== undefined) {
        req.principal = await verifier.verify(presented);
      } else if (certificateMode === 'mtls-required') {
        throw new AppError('CLIENT_CERTIFICATE_REQUIRED', {
          detail: 'Call this operation over the HTTPS listener with a client certificate issued by this service.',
          headers: { 'WWW-Authenticate': 'mutual-tls' },
        });
      } else if (bearer) {
        req.principal = await bearerPrincipal(req, authenticator);
      }
      next();
    };
  }
  if (op.security.length === 0 || !bearer) {
    // Public (`security: []`) or authenticated by the feature itself (webhook signatures).
    return (_req, _res, next) => next();
  }
  return async (req, _res, next) => {
    req.principal = await bearerPrincipal(req, authenticator);
    next();
  };
}

async function bearerPrincipal(req: Request, authenticator: Authenticator): Promise<Principal> {
  const header = req.headers.authorization;
  if (header === undefined) throw bearerError('TOKEN_MISSING');
  const match = /^Bearer ([^\s]+)$/i.exec(header);
  if (match?.[1] === undefined) throw bearerError('TOKEN_MALFORMED');
  try {
    return await authenticator.authenticate(match[1]);
  } catch (error) {
    if (error instanceof AppError && problemStatus(error) === 401) throw withChallenge(error);
    throw error;
  }
}

export function isCertificatePrincipal(principal: Principal | undefined): principal is ClientCertificatePrincipal {
  return principal !== undefined && 'certificateSerial' in principal;
}

/**
 * Any one security alternative suffices; within one, every listed scope is required. A caller that
 * authenticated with a client certificate is held to the `clientCertificate` requirements, with the
 * scopes recorded for that certificate; a bearer token to the `bearerAuth` ones.
 */
export function authorize(op: Operation): RequestHandler {
  const bearerAlternatives = op.security.filter((s) => s.scheme === 'bearerAuth');
  const certificateAlternatives = op.security.filter((s) => s.scheme === 'clientCertificate');
  if (bearerAlternatives.length === 0 && certificateAlternatives.length === 0) return (_req, _res, next) => next();
  return (req, _res, next) => {
    const viaCertificate = isCertificatePrincipal(req.principal);
    const alternatives = viaCertificate ? certificateAlternatives : bearerAlternatives;
    // No bearer requirement and no certificate: the feature authenticates (webhook signatures).
    if (alternatives.length === 0 && !viaCertificate) {
      next();
      return;
    }
    const scopes = req.principal?.scopes ?? new Set<string>();
    if (alternatives.some((alt) => alt.scopes.every((s) => scopes.has(s)))) {
      next();
      return;
    }
    const wanted = alternatives.map((alt) => alt.scopes.join(' ')).join(' | ');
    if (viaCertificate) {
      throw new AppError('INSUFFICIENT_SCOPE', {
        detail: `This operation requires scope ${wanted || '(not available to client certificates)'}; the client certificate does not carry it.`,
      });
    }
    throw new AppError('INSUFFICIENT_SCOPE', {
      detail: `This operation requires scope ${wanted}.`,
      headers: {
        'WWW-Authenticate': `Bearer error="insufficient_scope", scope="${alternatives[0]?.scopes.join(' ') ?? ''}"`,
      },
    });
  };
}

export function readBody(op: Operation, limitBytes: number): RequestHandler[] {
  if (op.requestMediaType === undefined) return [];
  const mediaType = op.requestMediaType;
  const raw = op.raw['x-raw-body'] === true;
  const contentTypeCheck: RequestHandler = (req, _res, next) => {
    if (!hasBody(req.headers)) {
      next();
      return;
    }
    if (req.is(mediaType) === false || req.is(mediaType) === null) {
      throw new AppError('UNSUPPORTED_MEDIA_TYPE', { detail: `Send the body as ${mediaType}.` });
    }
    next();
  };
  const parser: RequestHandler = raw
    ? express.raw({ type: () => true, limit: limitBytes })
    : express.json({ type: () => true, limit: limitBytes, strict: true });
  const keepRaw: RequestHandler = (req, _res, next) => {
    if (raw) req.rawBody = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    next();
  };
  return [contentTypeCheck, parser, keepRaw];
}

export function validate(op: Operation): RequestHandler {
  const raw = op.raw['x-raw-body'] === true;
  return (req, _res, next) => {
    const params = {
      path: { ...req.params },
      query: { ...(req.query as Record<string, unknown>) },
      header: { ...req.headers },
    };
    if (!op.validateParams(params)) {
      throw validationError(toIssues(op.validateParams.errors));
    }
    const infinite = nonFiniteParameter(params);
    if (infinite !== undefined) throw validationError([{ pointer: infinite, message: 'must be a finite number' }]);
    // An Idempotency-Key is stored (and its pattern admits dots, dashes, underscores and colons):
    // one shaped like a card number is refused, never kept. A canonical UUID is the one exception:
    // its 4-4-4 middle groups read as a dashed card number about once in 180 random UUIDs (measured
    // over 200,000 randomUUID() values), and UUIDs are what clients are told to send. A UUID key the
    // detector flags (a random one, or one crafted around a PAN) is stored as its keyed digest, never
    // as sent (src/keys/reference-digests.ts, called where keys are stored; docs/card-data.md).
    const idempotencyKey = req.headers['idempotency-key'];
    if (typeof idempotencyKey === 'string' && !CANONICAL_UUID.test(idempotencyKey)) {
      refuseCardData({ 'idempotency-key': idempotencyKey }, '/headers');
    }
    let body: unknown = undefined;
    if (op.requestMediaType !== undefined && !raw) {
      const present = hasBody(req.headers);
      if (!present && op.requestBodyRequired) {
        throw validationError([{ pointer: '/body', message: 'is required' }]);
      }
      if (present) {
        body = req.body as unknown;
        checkBody(op, body, { refuseSensitiveAuthenticationData: true });
      }
    }
    req.valid = { path: params.path, query: params.query, headers: params.header, body };
    next();
  };
}

/**
 * Validates a parsed body against the operation's schema, after refusing sensitive authentication
 * data (PCI DSS 3.3) when asked. Signed webhooks run it in their signature step (signed-body.ts).
 */
export function checkBody(op: Operation, body: unknown, options: { refuseSensitiveAuthenticationData: boolean }): void {
  if (options.refuseSensitiveAuthenticationData) {
    const sad = findSensitiveAuthenticationData(body);
    if (sad !== undefined) {
      throw new AppError('SENSITIVE_AUTHENTICATION_DATA', {
        detail: 'Card verification codes, track data and PINs are refused (PCI DSS 3.3).',
        extensions: { errors: [{ pointer: `/body${sad}`, message: 'must not be sent' }] },
      });
    }
  }
  if (op.validateBody !== undefined && !op.validateBody(body)) {
    throw validationError(toIssues(op.validateBody.errors, '/body'));
  }
}

/**
 * In tests (and optionally in staging) every JSON response is checked against the documented schema
 * for its status, so the contract cannot silently drift from the code.
 */
export function enforceResponseContract(op: Operation): RequestHandler {
  return (_req, res, next) => {
    const original = res.json.bind(res);
    res.json = ((body: unknown): Response => {
      const validator = op.responseValidator(res.statusCode);
      if (validator !== undefined && !validator(body)) {
        throw new AppError('RESPONSE_CONTRACT_VIOLATION', {
          detail: `${op.operationId} returned a ${res.statusCode} body that does not match openapi.yaml.`,
          extensions: { errors: toIssues(validator.errors, '/response') },
        });
      }
      return original(body);
    }) as Response['json'];
    next();
  };
}

/**
 * ajv's type coercion turns `"Infinity"` (and `"1e400"`) into `Infinity`, which passes `integer`,
 * and then skips `minimum`/`maximum` for a non-finite number: `?limit=Infinity` would reach the
 * handler and lift the page-size cap. Parameters come from strings, so only coercion can make one.
 */
function nonFiniteParameter(params: Readonly<Record<string, Readonly<Record<string, unknown>>>>): string | undefined {
  for (const [location, values] of Object.entries(params)) {
    for (const [name, value] of Object.entries(values)) {
      if (typeof value === 'number' && !Number.isFinite(value)) return `/${location}/${name}`;
    }
  }
  return undefined;
}

function hasBody(headers: Record<string, string | string[] | undefined>): boolean {
  const length = headers['content-length'];
  return headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

function validationError(issues: ReturnType<typeof toIssues>): AppError {
  return new AppError('VALIDATION_FAILED', { extensions: { errors: issues } });
}

function bearerError(code: 'TOKEN_MISSING' | 'TOKEN_MALFORMED'): AppError {
  return withChallenge(new AppError(code));
}

function withChallenge(error: AppError): AppError {
  // RFC 6750 §3: say that a bearer token is expected, and why this one failed, without details.
  const challenge = error.code === 'TOKEN_MISSING' ? 'Bearer' : 'Bearer error="invalid_token"';
  return new AppError(error.code, {
    ...(error.detail === undefined ? {} : { detail: error.detail }),
    headers: { ...error.headers, 'WWW-Authenticate': challenge },
    cause: error.cause ?? error,
  });
}
