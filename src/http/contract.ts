/**
 * Handlers typed from the contract. `api-types.ts` is generated from openapi.yaml (npm run
 * contract:types; lint fails when it drifts); this file turns an operation's entry there into what its
 * handler reads and writes:
 *
 * - `req.valid` (and `validInput(req)`): the path, query and header parameters and the body, as the
 *   validation chain checked them against the same openapi.yaml (header names in lower case, as Node
 *   gives them);
 * - `res.json(…)`/`res.send(…)`: one of the operation's documented success bodies.
 *
 * `contractHandlers({ createToken(req, res) { … } })` infers each handler's operation from its key (a key
 * that is no operationId does not compile) and is the one place where a request is taken for validated:
 * the operation's middleware chain (operation-middleware.ts, signed-body.ts) has run before any
 * handler. Wire types stay here and in handlers: services take and return domain types, and a handler
 * maps between the two (`components['schemas']['Card']` is what `cardJson` must produce).
 */
import type { Request, Response } from 'express';
import type { components, operations } from './api-types.js';
import type { HandlerMap, ValidInput } from './types.js';
import { validInput } from './types.js';

/** The contract's named schemas: `Schemas['Card']`. */
export type Schemas = components['schemas'];
export type OperationId = keyof operations;

/** An absent parameter set (`query?: never`) is an empty object, as the validator makes it. */
type Present<T> = [NonNullable<T>] extends [never] ? Readonly<Record<never, never>> : Readonly<NonNullable<T>>;

export type PathOf<Op extends OperationId> = Present<operations[Op]['parameters']['path']>;
export type QueryOf<Op extends OperationId> = Present<operations[Op]['parameters']['query']>;
/** Header parameters by their lower-case names (`idempotency-key`). */
export type HeadersOf<Op extends OperationId> = {
  readonly [K in keyof Present<operations[Op]['parameters']['header']> as Lowercase<K & string>]: Present<
    operations[Op]['parameters']['header']
  >[K];
};

type ContentOf<T> = T extends { content: infer C } ? C[keyof C] : never;
/** The request body: `undefined` for an operation without one or when the body is optional and absent. */
export type BodyOf<Op extends OperationId> =
  | ContentOf<NonNullable<operations[Op]['requestBody']>>
  | (undefined extends operations[Op]['requestBody'] ? undefined : never);

type Responses<Op extends OperationId> = operations[Op]['responses'];
/** The body of any documented 2xx response of the operation (`never` for a 204 only). */
export type SuccessBodyOf<Op extends OperationId> = {
  [S in keyof Responses<Op>]: `${S & (string | number)}` extends `2${string}` ? ContentOf<Responses<Op>[S]> : never;
}[keyof Responses<Op>];

export interface ValidInputOf<Op extends OperationId> extends ValidInput {
  readonly path: PathOf<Op>;
  readonly query: QueryOf<Op>;
  readonly headers: HeadersOf<Op>;
  readonly body: BodyOf<Op>;
}

/** A request that passed the operation's chain: its input typed from openapi.yaml. */
export type ContractRequest<Op extends OperationId> = Omit<Request, 'valid'> & { readonly valid: ValidInputOf<Op> };
/** A response whose `json`/`send` take the operation's documented success bodies only. */
export type ContractResponse<Op extends OperationId> = Response<SuccessBodyOf<Op>>;
export type ContractHandler<Op extends OperationId> = (
  req: ContractRequest<Op>,
  res: ContractResponse<Op>,
) => Promise<void> | void;
export type ContractHandlers<Ops extends OperationId> = { readonly [Op in Ops]: ContractHandler<Op> };

/**
 * A parameter whose schema has a `default` (a page's `limit`): the validator fills it in (useDefaults),
 * so it is never absent by the time a handler reads it; the generated type cannot say so.
 */
export function filled<T>(value: T | undefined, name: string): T {
  if (value === undefined) throw new Error(`${name} has no value: its default in openapi.yaml was not applied`);
  return value;
}

/**
 * The handlers of some operations, typed from the contract, as the app takes them. Each checks that the
 * chain left validated input (as `validInput` always did) before the handler reads it.
 */
export function contractHandlers<Ops extends OperationId>(handlers: ContractHandlers<Ops>): HandlerMap {
  const map: Record<string, HandlerMap[string]> = {};
  for (const [operationId, handler] of Object.entries(handlers as Record<string, ContractHandler<Ops>>)) {
    map[operationId] = (req, res) => {
      validInput(req);
      // The operation's chain validated req.valid against this operation's entry in openapi.yaml.
      return handler(req as unknown as ContractRequest<Ops>, res as ContractResponse<Ops>);
    };
  }
  return map;
}
