/**
 * Helpers for the abuse suite: fast-check arbitraries built from the JSON Schemas of openapi.yaml,
 * the hostile values mixed into them, a raw HTTP client that sends exactly what it is given, and the
 * PAN-echo check applied to every response.
 */
import http from 'node:http';
import fc from 'fast-check';
import type { Operation } from '../../src/http/openapi.js';

type Json = Record<string, unknown>;

/** The test PANs embedded in fuzzed values; no response may ever repeat one. */
export const FUZZ_PANS = ['4111111111111111', '5555555555554444'] as const;

/** Every scope that any operation of the contract names (as test/logging/pan-never-logged does). */
export function allScopes(operations: readonly Operation[]): string {
  return [...new Set(operations.flatMap((op) => op.security.flatMap((s) => s.scopes)))].join(' ');
}

export function isWebhook(op: Operation): boolean {
  return op.raw['x-raw-body'] === true;
}

export function isBearer(op: Operation): boolean {
  return op.security.some((s) => s.scheme === 'bearerAuth');
}

/** The operation's parameters (path-level ones included), `$ref`s to components resolved. */
export function parametersOf(document: Json, op: Operation): Json[] {
  const pathItem = (document['paths'] as Record<string, Json>)[op.pathTemplate] ?? {};
  const all = [...((pathItem['parameters'] ?? []) as Json[]), ...((op.raw['parameters'] ?? []) as Json[])];
  return all.map((p) => resolve(document, p));
}

export function requestBodySchema(document: Json, op: Operation): Json | undefined {
  const body = op.raw['requestBody'] as Json | undefined;
  if (body === undefined) return undefined;
  const content = (resolve(document, body)['content'] ?? {}) as Record<string, Json>;
  const media = Object.values(content)[0];
  return media?.['schema'] as Json | undefined;
}

function resolve(document: Json, node: Json): Json {
  const ref = node['$ref'];
  if (typeof ref !== 'string') return node;
  let target: unknown = document;
  for (const part of ref.replace(/^#\//, '').split('/')) target = (target as Json)[part];
  if (target === undefined || target === null) throw new Error(`unresolvable $ref ${ref}`);
  return resolve(document, target as Json);
}

// --- hostile values -------------------------------------------------------------------------------

const PAN_SPELLINGS = FUZZ_PANS.flatMap((pan) => [
  pan,
  pan.replace(/(\d{4})(?=\d)/g, '$1 '),
  pan.replace(/(\d{4})(?=\d)/g, '$1-'),
  pan.replace(/(\d{4})(?=\d)/g, '$1\u200b'), // zero-width space between the groups
  `card:${pan}`,
  `${pan}=1`,
  `\u202e${pan}`, // right-to-left override before the number
]);

export const panLike: fc.Arbitrary<string> = fc.constantFrom(...PAN_SPELLINGS);

export const hostileNumber: fc.Arbitrary<number> = fc.constantFrom(
  1e308,
  -1e308,
  -1,
  -0,
  0.5,
  -0.000001,
  2 ** 53 + 1,
  Number.MAX_SAFE_INTEGER,
  -(2 ** 31),
  2 ** 63,
  5e-324,
  Number(FUZZ_PANS[0]),
);

const hostileText: fc.Arbitrary<string> = fc.constantFrom(
  'NaN',
  'Infinity',
  '-Infinity',
  '1e308',
  '-1',
  '0x1F',
  '9007199254740993',
  '1_000',
  ' 42 ',
  '\u0661\u0662\u0663', // Arabic-Indic digits
  '\u202egnp.exe', // RTL override
  'a\u200bb\u200c\u200d\ufeff', // zero-width characters
  '😀👨‍👩‍👧‍👦🏳️‍🌈',
  '\ud800', // lone high surrogate (JSON.stringify writes it as an escape)
  '\udfff', // lone low surrogate
  'e\u0301\u0301\u0301',
  '\u0000',
  '\r\nX-Injected: 1',
  '../../../etc/passwd',
  "' or 1=1 --",
  '${jndi:ldap://x}',
  '<script>alert(1)</script>',
  '%00',
  '__proto__',
  'constructor',
  'prototype',
  '',
);

/** Long strings stay well under node's 16 KB header limit when used in a header or the URL. */
export const longString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('x'.repeat(300), 'A'.repeat(2_000)),
  fc.constantFrom(...FUZZ_PANS).map((pan) => `${'9'.repeat(500)}${pan}${'a'.repeat(500)}`),
);

export const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: hostileText },
  { weight: 3, arbitrary: panLike },
  { weight: 1, arbitrary: longString },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 1, arbitrary: hostileNumber.map(String) },
);

export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: hostileString },
  { weight: 2, arbitrary: hostileNumber },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, [], {}, [FUZZ_PANS[0]], { pan: FUZZ_PANS[1] }) },
  // An own `__proto__` key, as JSON.parse makes it (an object literal would set the prototype instead).
  { weight: 1, arbitrary: fc.constant(JSON.parse('{"__proto__":{"admin":true},"constructor":{"prototype":1}}')) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
);

// --- values shaped by the contract --------------------------------------------------------------

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567'.split('');

/** A prefixed id of the right shape (`shp_…`, `tok_…`): usually unknown to the service. */
export function prefixedId(prefix: string): fc.Arbitrary<string> {
  return fc
    .array(fc.constantFrom(...BASE32), { minLength: 26, maxLength: 26 })
    .map((chars) => `${prefix}_${chars.join('')}`);
}

/** A value that matches `schema` most of the time (lengths and bounds may be off by design). */
export function fromSchema(document: Json, input: Json, depth = 0): fc.Arbitrary<unknown> {
  const schema = resolve(document, input);
  if ('const' in schema) return fc.constant(schema['const']);
  if (Array.isArray(schema['enum'])) return fc.constantFrom(...(schema['enum'] as unknown[]));
  const alternatives = (schema['oneOf'] ?? schema['anyOf']) as Json[] | undefined;
  if (alternatives !== undefined) return fc.oneof(...alternatives.map((s) => fromSchema(document, s, depth + 1)));
  if (depth > 6) return fc.constant(null);
  switch (schema['type']) {
    case 'string':
      return stringFor(schema);
    case 'integer':
      return fc.integer({
        min: Math.max(Number(schema['minimum'] ?? -1_000_000), -(2 ** 31)),
        max: Math.min(Number(schema['maximum'] ?? 1_000_000), 2 ** 31),
      });
    case 'number':
      return fc.double({
        min: Number(schema['minimum'] ?? -1e6),
        max: Number(schema['maximum'] ?? 1e6),
        noNaN: true,
        noDefaultInfinity: true,
      });
    case 'boolean':
      return fc.boolean();
    case 'array':
      return fc.array(fromSchema(document, (schema['items'] ?? {}) as Json, depth + 1), { maxLength: 3 });
    case 'object':
      return objectFor(document, schema, depth);
    default:
      return fc.jsonValue({ maxDepth: 2 });
  }
}

function stringFor(schema: Json): fc.Arbitrary<string> {
  const pattern = schema['pattern'];
  if (typeof pattern === 'string') {
    const prefixed = /^\^([a-z]{3})_\[a-z2-7\]\{26\}\$$/.exec(pattern);
    if (prefixed?.[1] !== undefined) return prefixedId(prefixed[1]);
    return fc.stringMatching(new RegExp(pattern), { size: 'xsmall' });
  }
  if (schema['format'] === 'date-time') {
    return fc
      .date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true })
      .map((d) => d.toISOString());
  }
  if (schema['format'] === 'email') return fc.emailAddress();
  return fc.string({
    minLength: Number(schema['minLength'] ?? 0),
    maxLength: Math.min(Number(schema['maxLength'] ?? 40), 40),
  });
}

function objectFor(document: Json, schema: Json, depth: number): fc.Arbitrary<unknown> {
  const properties = (schema['properties'] ?? {}) as Record<string, Json>;
  const required = new Set((schema['required'] ?? []) as string[]);
  const keys = Object.keys(properties);
  if (keys.length === 0)
    return fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 });
  const model: Record<string, fc.Arbitrary<unknown>> = {};
  for (const key of keys) model[key] = fromSchema(document, properties[key] as Json, depth + 1);
  return fc.record(model, { requiredKeys: keys.filter((k) => required.has(k)) });
}

/** A schema-shaped value with one leaf (or the value itself) swapped for a hostile one, or extra keys. */
export function mutated(shaped: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  return fc.oneof(
    fc.tuple(shaped, hostileValue, fc.nat()).map(([value, hostile, n]) => replaceLeaf(value, hostile, n)),
    fc
      .tuple(shaped, fc.constantFrom('__proto__', 'constructor', 'prototype', FUZZ_PANS[0], 'cvc'), hostileValue)
      .map(([value, key, hostile]) =>
        value !== null && typeof value === 'object' && !Array.isArray(value)
          ? Object.defineProperty({ ...value }, key, { value: hostile, enumerable: true, writable: true })
          : value,
      ),
  );
}

function replaceLeaf(value: unknown, hostile: unknown, n: number): unknown {
  if (value === null || typeof value !== 'object') return hostile;
  const entries = Object.entries(value);
  if (entries.length === 0) return hostile;
  const [key, child] = entries[n % entries.length] as [string, unknown];
  const copy: Record<string, unknown> = Array.isArray(value) ? ([...value] as unknown as Json) : { ...value };
  copy[key] = replaceLeaf(child, hostile, Math.floor(n / entries.length));
  return copy;
}

// --- raw bodies ------------------------------------------------------------------------------------

/** `[[[…]]]` or `{"a":{"a":…}}` nested `levels` deep. */
export function deeplyNested(levels: number, kind: 'array' | 'object'): string {
  return kind === 'array'
    ? `${'['.repeat(levels)}${']'.repeat(levels)}`
    : `${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`;
}

/** The JSON text of an object with its first key written twice: a PAN first, the real value last. */
export function withDuplicateKey(value: unknown): string {
  const text = JSON.stringify(value);
  if (value === null || typeof value !== 'object' || Array.isArray(value) || !text.startsWith('{"')) return text;
  const firstKey = Object.keys(value)[0];
  if (firstKey === undefined) return text;
  return `{${JSON.stringify(firstKey)}:${JSON.stringify(FUZZ_PANS[0])},${text.slice(1)}`;
}

export const hostileRawBody: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    deeplyNested(5_000, 'array'),
    deeplyNested(5_000, 'object'),
    '{"__proto__":{"isAdmin":true},"constructor":{"prototype":{"polluted":true}}}',
    `{"pan":"${FUZZ_PANS[0]}","pan":"${FUZZ_PANS[1]}"}`,
    `{"pan": "${FUZZ_PANS[0]}", "cvc": `,
    `{"reference":"\\ud800\\udc00\\udfff","points":1}`,
    '{"a":"\\u0000"}',
    FUZZ_PANS[1],
    'null',
    '',
    '\ufeff{}',
    '{"points":1e999}',
    `{"x":"${'y'.repeat(20_000)}"}`,
  ),
  hostileValue.map((v) => JSON.stringify(v) ?? 'null'),
);

export const contentType: fc.Arbitrary<string | undefined> = fc.oneof(
  { weight: 8, arbitrary: fc.constant('application/json') },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      undefined,
      'application/json; charset=utf-8',
      'application/json; charset=utf-16',
      'application/json; charset=latin1',
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/problem+json',
      'application/json, text/plain',
      '*/*',
      `application/json; pan=${FUZZ_PANS[0]}`,
    ),
  },
);

/**
 * Percent-encodes every byte of the UTF-8 form except the unreserved characters. Unlike
 * encodeURIComponent it never throws: a lone surrogate goes out as the bytes of U+FFFD.
 */
export function percentEncode(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const char = String.fromCharCode(byte);
    out += /[A-Za-z0-9._~-]/.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

// --- HTTP ----------------------------------------------------------------------------------------

export interface RawResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly text: string;
}

/**
 * Sends exactly this request with node:http (any method may carry a body; header values may hold
 * any byte: non-latin1 text is sent as its UTF-8 bytes, as a hostile client would).
 */
export function send(
  baseUrl: string,
  request: { method: string; path: string; headers: Record<string, string>; body: string | undefined },
): Promise<RawResponse> {
  const url = new URL(baseUrl);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers)) headers[name] = asHeaderValue(value);
  if (request.body !== undefined) headers['content-length'] = String(Buffer.byteLength(request.body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, method: request.method, path: request.path, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(20_000, () => req.destroy(new Error(`no answer to ${request.method} ${request.path}`)));
    req.on('error', reject);
    req.end(request.body);
  });
}

function asHeaderValue(value: string): string {
  // Header values are latin1 on the wire: send other text as its UTF-8 bytes; no CR/LF/NUL.
  const bytes = Buffer.from(value.replace(/[\r\n\0]/g, ' '), 'utf8').toString('latin1');
  return bytes.replace(/[^\t\x20-\x7e\x80-\xff]/g, '?');
}

/**
 * The PANs a response repeats: as sent, or with separators (spaces, dashes, dots, zero-width
 * characters, their JSON escapes) removed between digits.
 */
export function echoedPans(text: string): string[] {
  const digitsOnly = text.replace(/(?<=\d)(?:[\s._/:+-]|\\u200[bcd]|\\ufeff|[\u200b-\u200d\ufeff]|%20)+(?=\d)/gi, '');
  return FUZZ_PANS.filter((pan) => text.includes(pan) || digitsOnly.includes(pan));
}
