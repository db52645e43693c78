/**
 * Signature verification as a declared step of an operation. An operation marked
 * `x-webhook-signature: <scheme>` in openapi.yaml (and `x-raw-body: true`) runs, after its parameters
 * are validated:
 *   verify over the exact bytes → parse JSON → refuse SAD (if the scheme says so) → validate the body
 *   → verify over the parsed fields (schemes that sign fields, not bytes: Adyen)
 * and only then its handler, which reads `validInput(req).body` and {@link signatureOf}. The schemes
 * are provided by the feature that owns the secrets (webhooks/), by name; `http/` knows none of them.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Request, RequestHandler } from 'express';
import { AppError } from '../errors/app-error.js';
import type { Operation } from './openapi.js';
import { checkBody } from './operation-middleware.js';

/** What a signature scheme proved. */
export interface SignatureEvidence {
  /** Which configured secret matched (its index, evidence for rotations): one per signed part. */
  readonly secretIndexes: readonly number[];
  /** The sender's message id, when the scheme signs one (Standard Webhooks `webhook-id`). */
  readonly messageId?: string;
}

export interface SignatureScheme {
  /** Refuse sensitive authentication data with 422 (else the feature's projection drops it). */
  readonly refuseSensitiveAuthenticationData: boolean;
  /** Checked over the exact bytes, before they are parsed; undefined when the scheme signs fields. */
  readonly verifyBytes?: (headers: IncomingHttpHeaders, raw: Buffer) => SignatureEvidence | undefined;
  /** Checked on the parsed and validated body (schemes that sign fields). */
  readonly verifyFields?: (headers: IncomingHttpHeaders, body: unknown) => SignatureEvidence;
  /** Told about every refusal by this step (the feature counts deliveries by outcome). */
  readonly refused?: (error: unknown) => void;
}

/** Schemes by the name operations declare in `x-webhook-signature`. */
export type SignatureSchemes = Readonly<Record<string, SignatureScheme>>;

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Set by the signature step of operations with `x-webhook-signature`. */
      signature?: SignatureEvidence;
    }
  }
}

/** The scheme an operation declares, or undefined; throws at start-up when it is not provided. */
export function declaredScheme(op: Operation, schemes: SignatureSchemes): SignatureScheme | undefined {
  const name = op.raw['x-webhook-signature'];
  if (name === undefined) return undefined;
  const scheme = typeof name === 'string' ? schemes[name] : undefined;
  if (scheme === undefined)
    throw new Error(`${op.operationId} declares x-webhook-signature ${JSON.stringify(name)}, which is not provided`);
  if (op.raw['x-raw-body'] !== true)
    throw new Error(`${op.operationId} declares x-webhook-signature without x-raw-body`);
  return scheme;
}

export function verifySignedBody(op: Operation, scheme: SignatureScheme): RequestHandler {
  return (req, _res, next) => {
    try {
      const raw = req.rawBody ?? Buffer.alloc(0);
      const early = scheme.verifyBytes?.(req.headers, raw);
      const body = parseJson(raw);
      checkBody(op, body, { refuseSensitiveAuthenticationData: scheme.refuseSensitiveAuthenticationData });
      const evidence = scheme.verifyFields?.(req.headers, body) ?? early;
      if (evidence === undefined) throw new Error(`the signature scheme of ${op.operationId} verified nothing`);
      req.signature = evidence;
      if (req.valid !== undefined) req.valid = { ...req.valid, body };
      next();
    } catch (error) {
      scheme.refused?.(error);
      throw error;
    }
  };
}

/** What the signature step proved; only on operations that declare one. */
export function signatureOf(req: Request): SignatureEvidence {
  if (req.signature === undefined) throw new Error(`no verified signature on ${req.method} ${req.path}`);
  return req.signature;
}

function parseJson(raw: Buffer): unknown {
  try {
    return JSON.parse(raw.toString('utf8')) as unknown;
  } catch {
    // No cause attached: V8's message quotes the input, which may hold a card number.
    throw new AppError('MALFORMED_JSON');
  }
}
