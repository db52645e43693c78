import type { Request, Response } from 'express';
import type { Principal } from '../auth/authenticator.js';
import type { Operation } from './openapi.js';

/** Input that passed validation against `openapi.yaml`. Handlers read only this, never `req.body`. */
export interface ValidInput {
  readonly path: Readonly<Record<string, unknown>>;
  readonly query: Readonly<Record<string, unknown>>;
  readonly headers: Readonly<Record<string, unknown>>;
  readonly body: unknown;
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      id: string;
      operation?: Operation;
      principal?: Principal;
      valid?: ValidInput;
      /** Exact bytes of the body, for operations marked `x-raw-body` (signed webhooks). */
      rawBody?: Buffer;
    }
  }
}

export type Handler = (req: Request, res: Response) => Promise<void> | void;
/** Handlers by operationId. The app refuses to start if this and `openapi.yaml` disagree. */
export type HandlerMap = Readonly<Record<string, Handler>>;

export function validInput(req: Request): ValidInput {
  if (req.valid === undefined) throw new Error(`no validated input on ${req.method} ${req.path}`);
  return req.valid;
}

export function principalOf(req: Request): Principal {
  if (req.principal === undefined) throw new Error(`no principal on ${req.method} ${req.path}`);
  return req.principal;
}
