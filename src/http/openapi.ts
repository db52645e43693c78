/**
 * `openapi.yaml` is the single source of truth for routes, input validation, scopes and responses.
 * This module reads it once and compiles, for every operation, the express path, the security
 * alternatives and ajv validators (JSON Schema 2020-12, as OpenAPI 3.1 uses) for its parameters,
 * body and responses. No route exists that the document does not declare.
 */
import fs from 'node:fs';
import { Ajv2020, type ValidateFunction, type ErrorObject } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse as parseYaml } from 'yaml';
import { projectRoot } from '../config/project-root.js';
import path from 'node:path';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

type Json = Record<string, unknown>;

/** One way to satisfy an operation's security: every listed scope of the bearer token. */
export interface SecurityAlternative {
  readonly scheme: string;
  readonly scopes: readonly string[];
}

export interface Operation {
  readonly operationId: string;
  readonly method: HttpMethod;
  /** OpenAPI template, e.g. `/v1/tokens/{token}`. */
  readonly pathTemplate: string;
  /** Express path, e.g. `/v1/tokens/:token`. */
  readonly expressPath: string;
  /** Empty means public (documented `security: []`). Otherwise any one alternative suffices. */
  readonly security: readonly SecurityAlternative[];
  /** Media type of the request body, when the operation takes one. */
  readonly requestMediaType: string | undefined;
  readonly requestBodyRequired: boolean;
  readonly validateParams: ValidateFunction;
  readonly validateBody: ValidateFunction | undefined;
  /** Response validator for a status code, falling back to `4XX`-style ranges and `default`. */
  responseValidator(status: number): ValidateFunction | undefined;
  /** The raw operation object, for extensions (`x-…`) that features read. */
  readonly raw: Readonly<Json>;
}

export interface ApiSpec {
  readonly document: Readonly<Json>;
  readonly yamlText: string;
  readonly operations: readonly Operation[];
  byId(operationId: string): Operation;
}

export interface ValidationIssue {
  /** JSON pointer into the request: `/body/expiryMonth`, `/query/limit`, `/path/token`. */
  readonly pointer: string;
  readonly message: string;
}

const SPEC_ID = 'urn:loyalty-vault:openapi';

export function openApiPath(): string {
  return path.join(projectRoot(), 'openapi.yaml');
}

/**
 * Every scope a bearer token can need: the scopes of the `bearerAuth` requirements of the contract's
 * operations (openapi.yaml is where scopes are defined), sorted. Parses the YAML only.
 */
export function bearerScopes(file: string = openApiPath()): string[] {
  const document = parseYaml(fs.readFileSync(file, 'utf8')) as Json;
  const scopes = new Set<string>();
  for (const pathItem of Object.values((document['paths'] ?? {}) as Record<string, Json>)) {
    for (const method of HTTP_METHODS) {
      const requirements = ((pathItem[method] as Json | undefined)?.['security'] ?? []) as Json[];
      for (const requirement of requirements) {
        for (const scope of (requirement['bearerAuth'] ?? []) as string[]) scopes.add(scope);
      }
    }
  }
  return [...scopes].sort();
}

export function loadApiSpec(file: string = openApiPath()): ApiSpec {
  const yamlText = fs.readFileSync(file, 'utf8');
  const document = parseYaml(yamlText) as Json;
  const ajv = createAjv(document);
  const operations: Operation[] = [];
  const seen = new Set<string>();

  const paths = (document['paths'] ?? {}) as Record<string, Json>;
  const deref = (node: Json): Json => resolveComponentRef(document, node);
  for (const [pathTemplate, pathItem] of Object.entries(paths)) {
    const shared = ((pathItem['parameters'] ?? []) as Json[]).map(deref);
    for (const method of HTTP_METHODS) {
      const op = pathItem[method] as Json | undefined;
      if (op === undefined) continue;
      const operationId = op['operationId'];
      if (typeof operationId !== 'string')
        throw new Error(`${method.toUpperCase()} ${pathTemplate} has no operationId`);
      if (seen.has(operationId)) throw new Error(`operationId ${operationId} is used twice`);
      seen.add(operationId);
      if (!Array.isArray(op['security'])) {
        throw new Error(`${operationId} must declare "security" explicitly ([] for a public operation)`);
      }
      const own = ((op['parameters'] ?? []) as Json[]).map(deref);
      operations.push(compileOperation(ajv, method, pathTemplate, op, [...shared, ...own], deref));
    }
  }

  const byId = new Map(operations.map((o) => [o.operationId, o]));
  return {
    document,
    yamlText,
    operations,
    byId(operationId) {
      const op = byId.get(operationId);
      if (op === undefined) throw new Error(`unknown operationId ${operationId}`);
      return op;
    },
  };
}

/** Resolves a local `$ref` to a reusable component (parameter, response, request body). */
function resolveComponentRef(document: Json, node: Json): Json {
  const ref = node['$ref'];
  if (typeof ref !== 'string') return node;
  const match = /^#\/components\/(parameters|responses|requestBodies)\/([^/]+)$/.exec(ref);
  const section =
    match === null
      ? undefined
      : ((document['components'] as Json | undefined)?.[match[1] as string] as Json | undefined);
  const target = match === null ? undefined : section?.[match[2] as string];
  if (target === undefined) throw new Error(`unresolvable $ref ${ref}`);
  return target as Json;
}

function createAjv(document: Json): Ajv2020 {
  const ajv = new Ajv2020({ allErrors: true, strict: true, coerceTypes: false, useDefaults: false });
  addFormats(ajv);
  // OpenAPI annotation keywords that JSON Schema does not define: carried, never validated.
  ajv.addVocabulary(['example', 'discriminator', 'xml', 'externalDocs']);
  const schemas = ((document['components'] as Json | undefined)?.['schemas'] ?? {}) as Json;
  ajv.addSchema({ $id: SPEC_ID, $defs: rewriteRefs(schemas) as Json });
  return ajv;
}

/** `#/components/schemas/X` → `urn:…#/$defs/X`, so every compiled schema resolves into one registry. */
function rewriteRefs(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (node === null || typeof node !== 'object') return node;
  const out: Json = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === '$ref' && typeof value === 'string' && value.startsWith('#/components/schemas/')) {
      out[key] = `${SPEC_ID}#/$defs/${value.slice('#/components/schemas/'.length)}`;
    } else {
      out[key] = rewriteRefs(value);
    }
  }
  return out;
}

function compileOperation(
  ajv: Ajv2020,
  method: HttpMethod,
  pathTemplate: string,
  op: Json,
  parameters: Json[],
  deref: (node: Json) => Json,
): Operation {
  const operationId = op['operationId'] as string;
  // Parameters arrive as strings; a separate coercing validator turns `?limit=10` into 10.
  const paramsSchema: Json = { type: 'object', properties: {}, required: [] };
  for (const location of ['path', 'query', 'header'] as const) {
    const props: Json = {};
    const required: string[] = [];
    for (const p of parameters.filter((x) => x['in'] === location)) {
      const name = location === 'header' ? (p['name'] as string).toLowerCase() : String(p['name']);
      props[name] = rewriteRefs(p['schema'] ?? {});
      if (p['required'] === true || location === 'path') required.push(name);
    }
    // Unknown query parameters are refused: a typo should fail loudly, not be ignored.
    const extra = location === 'query' ? { additionalProperties: false } : {};
    (paramsSchema['properties'] as Json)[location] = { type: 'object', properties: props, required, ...extra };
    (paramsSchema['required'] as string[]).push(location);
  }
  const coercing = paramsAjv(ajv);
  const validateParams = coercing.compile(paramsSchema);

  let requestMediaType: string | undefined;
  let validateBody: ValidateFunction | undefined;
  const requestBody = op['requestBody'] === undefined ? undefined : deref(op['requestBody'] as Json);
  if (requestBody !== undefined) {
    const content = (requestBody['content'] ?? {}) as Record<string, Json>;
    const [mediaType, media] = Object.entries(content)[0] ?? [];
    if (mediaType === undefined || media === undefined) throw new Error(`${operationId} requestBody has no content`);
    requestMediaType = mediaType;
    if (media['schema'] !== undefined) validateBody = ajv.compile(rewriteRefs(media['schema']) as Json);
  }

  const responseValidators = new Map<string, ValidateFunction | undefined>();
  for (const [status, declared] of Object.entries((op['responses'] ?? {}) as Record<string, Json>)) {
    const response = deref(declared);
    const content = (response['content'] ?? {}) as Record<string, Json>;
    const media = Object.values(content)[0];
    const schema = media?.['schema'];
    responseValidators.set(
      status.toUpperCase(),
      schema === undefined ? undefined : ajv.compile(rewriteRefs(schema) as Json),
    );
  }

  const security = (op['security'] as Json[]).flatMap((requirement) =>
    Object.entries(requirement).map(([scheme, scopes]) => ({ scheme, scopes: scopes as string[] })),
  );

  return {
    operationId,
    method,
    pathTemplate,
    expressPath: pathTemplate.replace(/\{([^}]+)\}/g, ':$1'),
    security,
    requestMediaType,
    requestBodyRequired: requestBody?.['required'] === true,
    validateParams,
    validateBody,
    responseValidator(status) {
      const exact = `${status}`;
      const range = `${Math.floor(status / 100)}XX`;
      for (const key of [exact, range, 'DEFAULT']) {
        if (responseValidators.has(key)) return responseValidators.get(key);
      }
      return undefined;
    },
    raw: op,
  };
}

const coercingInstances = new WeakMap<Ajv2020, Ajv2020>();

/** A sibling ajv instance that coerces strings (parameters) and shares the component schemas. */
function paramsAjv(base: Ajv2020): Ajv2020 {
  let instance = coercingInstances.get(base);
  if (instance === undefined) {
    instance = new Ajv2020({ allErrors: true, strict: true, coerceTypes: true, useDefaults: true });
    addFormats(instance);
    instance.addVocabulary(['example', 'discriminator', 'xml', 'externalDocs']);
    const defs = (base.getSchema(SPEC_ID)?.schema as Json | undefined)?.['$defs'] ?? {};
    instance.addSchema({ $id: SPEC_ID, $defs: defs });
    coercingInstances.set(base, instance);
  }
  return instance;
}

/**
 * ajv errors as client-safe issues: a JSON pointer and ajv's own message (for an enum, the values the
 * schema allows). Neither contains the value that failed (ajv messages name the rule, not the data); pointers can contain attacker-chosen
 * property names, so the problem renderer masks PAN-like runs in the whole body as well.
 */
export function toIssues(errors: readonly ErrorObject[] | null | undefined, prefix = ''): ValidationIssue[] {
  return (errors ?? []).slice(0, 20).map((e) => {
    let pointer = `${prefix}${e.instancePath}`;
    if (e.keyword === 'required') pointer += `/${String((e.params as { missingProperty: string }).missingProperty)}`;
    let message = e.message ?? 'is invalid';
    if (e.keyword === 'additionalProperties') message = 'has a property that is not allowed';
    // The schema's own values, never the input: what the caller could have sent.
    if (e.keyword === 'enum') {
      const allowed = (e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v));
      message = `must be one of ${allowed.join(', ')}`;
    }
    return { pointer: pointer === '' ? '/' : pointer, message };
  });
}
