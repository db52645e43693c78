/**
 * The express application, built from `openapi.yaml` and a map of handlers by operationId. It does
 * not listen: `src/main.ts` does, and tests run it on port 0.
 */
import express, { type Express, type RequestHandler } from 'express';
import helmet from 'helmet';
import type { Authenticator } from '../auth/authenticator.js';
import { API_REFERENCE_PATHS, apiReferenceRouter } from './api-reference.js';
import { mayHoldCardData } from '../card-data/card-data-guard.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import type { Logger } from '../logging/logger.js';
import type { ApiSpec, Operation } from './openapi.js';
import {
  authenticate,
  authorize,
  enforceResponseContract,
  readBody,
  validate,
  type ClientCertificateAuth,
} from './operation-middleware.js';
import { problemMiddleware } from './problem.js';
import type { RequestObserver } from './request-metrics.js';
import { declaredScheme, verifySignedBody, type SignatureSchemes } from './signed-body.js';
import type { HandlerMap } from './types.js';

export interface AppOptions {
  readonly spec: ApiSpec;
  readonly handlers: HandlerMap;
  readonly authenticator: Authenticator;
  readonly logger: Logger;
  readonly bodyLimitBytes: number;
  readonly trustProxy: boolean;
  /** Check every JSON response against its documented schema (on in tests). */
  readonly enforceResponseContract: boolean;
  /** Client certificates on the card-data operations (absent: bearer tokens only). */
  readonly clientCertificates?: ClientCertificateAuth | undefined;
  /**
   * Runs before authentication and before the body is read: throws to refuse the
   * operation (a sealed vault answers VAULT_SEALED, src/keys/sealed-operations.ts).
   */
  readonly beforeHandler?: ((operationId: string) => void) | undefined;
  /** Signature schemes by the name operations declare in `x-webhook-signature`. */
  readonly signatures?: SignatureSchemes;
  /** Told each finished request's operation, status and duration (the request-duration histogram). */
  readonly observeRequest?: RequestObserver | undefined;
}

/**
 * Inbound request ids are kept only when short, plain and free of PAN-shaped digit runs: 12 or more
 * digits not broken by a letter, whatever separators group them (`4111-1111-…`, `4111..1111..…`;
 * the card-data pre-scan, {@link mayHoldCardData}, decides). A kept id is echoed in a response
 * header, where no masking happens.
 */
const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;
const isSafeRequestId = (id: string): boolean => SAFE_REQUEST_ID.test(id) && !mayHoldCardData(id);

function gate(operationId: string, check: (operationId: string) => void): RequestHandler {
  return (_req, _res, next) => {
    try {
      check(operationId);
      next();
    } catch (error) {
      next(error);
    }
  };
}

export function createApp(options: AppOptions): Express {
  checkHandlersMatchSpec(options.spec, options.handlers);
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', options.trustProxy);
  app.set('etag', false);
  app.set('query parser', 'simple');

  const apiHeaders = helmet({
    // An API serves no documents: nothing may be framed, scripted or loaded from its responses.
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    crossOriginResourcePolicy: { policy: 'same-origin' },
    referrerPolicy: { policy: 'no-referrer' },
  });
  // The API reference's three paths set their own, looser policy (api-reference.ts says what and why).
  app.use((req, res, next) => {
    if (API_REFERENCE_PATHS.has(req.path)) next();
    else apiHeaders(req, res, next);
  });
  app.use(requestContext(options.logger, options.observeRequest));
  app.use(apiReferenceRouter(options.spec.document));

  for (const op of options.spec.operations) {
    const chain: RequestHandler[] = [
      tagOperation(op),
      // Before authentication: a sealed vault cannot check a client certificate's sealed revocation
      // list either (it would read as tampered); /readyz tells anyone that it is sealed anyway.
      ...(options.beforeHandler === undefined ? [] : [gate(op.operationId, options.beforeHandler)]),
      authenticate(op, options.authenticator, options.clientCertificates),
      authorize(op),
      ...readBody(op, options.bodyLimitBytes),
      validate(op),
    ];
    const signature = declaredScheme(op, options.signatures ?? {});
    if (signature !== undefined) chain.push(verifySignedBody(op, signature));
    if (options.enforceResponseContract) chain.push(enforceResponseContract(op));
    const handler = options.handlers[op.operationId];
    if (handler === undefined) throw new Error(`no handler for ${op.operationId}`);
    chain.push(handler);
    app[op.method](op.expressPath, ...chain);
  }

  // A documented path with an undocumented method is 405 with the methods it does have.
  const methodsByPath = new Map<string, string[]>();
  for (const op of options.spec.operations) {
    const methods = methodsByPath.get(op.expressPath) ?? [];
    methods.push(op.method.toUpperCase());
    methodsByPath.set(op.expressPath, methods);
  }
  for (const [path, methods] of methodsByPath) {
    const allow = [...methods, ...(methods.includes('GET') ? ['HEAD'] : [])].join(', ');
    app.all(path, () => {
      throw new AppError('METHOD_NOT_ALLOWED', { headers: { Allow: allow } });
    });
  }
  app.use(() => {
    throw new AppError('ROUTE_NOT_FOUND');
  });
  app.use(problemMiddleware(options.logger));
  return app;
}

function tagOperation(op: Operation): RequestHandler {
  return (req, _res, next) => {
    req.operation = op;
    next();
  };
}

function requestContext(logger: Logger, observe: RequestObserver | undefined): RequestHandler {
  return (req, res, next) => {
    const inbound = req.headers['x-request-id'];
    // Generated ids are `req_…` rather than UUIDs: a UUID's dash-separated groups can form a 13–19
    // digit Luhn-valid run, which the PAN masker would then rewrite in logs and problem bodies.
    req.id = typeof inbound === 'string' && isSafeRequestId(inbound) ? inbound : newId('req');
    res.setHeader('X-Request-Id', req.id);
    // Responses may carry card metadata or balances: never cache them anywhere.
    res.setHeader('Cache-Control', 'no-store');
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      observe?.(req.operation?.operationId, res.statusCode, ms / 1000);
      // The path template, not the URL: a URL can carry a card number typed into the wrong place.
      logger.info(
        {
          requestId: req.id,
          method: req.method,
          route: req.operation?.pathTemplate ?? '(unmatched)',
          operationId: req.operation?.operationId,
          status: res.statusCode,
          ms: Math.round(ms * 10) / 10,
          subject: req.principal?.subject,
        },
        'request',
      );
    });
    next();
  };
}

function checkHandlersMatchSpec(spec: ApiSpec, handlers: HandlerMap): void {
  const documented = new Set(spec.operations.map((o) => o.operationId));
  const missing = [...documented].filter((id) => handlers[id] === undefined);
  const undocumented = Object.keys(handlers).filter((id) => !documented.has(id));
  if (missing.length > 0 || undocumented.length > 0) {
    throw new Error(
      `openapi.yaml and the handlers disagree: ${[
        ...missing.map((id) => `${id} is documented but has no handler`),
        ...undocumented.map((id) => `${id} has a handler but is not documented`),
      ].join('; ')}`,
    );
  }
}
