/**
 * Every operation of openapi.yaml shows what it takes and what it answers: at least one example of its
 * request body (when it has one) and of its success response (its lowest 2xx status with a body), and
 * every example in the document validates against its schema with the validators the service itself
 * compiles (src/http/openapi.ts: the same ajv, the same `$ref` registry). /docs and `npm run
 * docs:build` render them. Card numbers appear only where an operation takes or returns one (a `pan`
 * field), and only as the schemes' published test numbers: never in free text.
 */
import { expect } from 'chai';
import { mayHoldCardData } from '../../src/card-data/card-data-guard.js';
import { loadApiSpec, toIssues, type Operation } from '../../src/http/openapi.js';
import { ALL_TEST_PANS } from '../support/pans.js';

type Json = Record<string, unknown>;

const spec = loadApiSpec();
const components = (spec.document['components'] ?? {}) as Record<string, Json>;

function deref(node: Json): Json {
  const ref = node['$ref'];
  if (typeof ref !== 'string') return node;
  const [, , section, name] = ref.split('/');
  return components[section as string]?.[name as string] as Json;
}

interface Example {
  readonly where: string;
  readonly value: unknown;
}

/** The examples of a media type object: `example`, or the values of `examples`. */
function examplesOf(content: Json | undefined, where: string): Example[] {
  const out: Example[] = [];
  for (const [mediaType, media] of Object.entries((content ?? {}) as Record<string, Json>)) {
    if ('example' in media) out.push({ where: `${where} ${mediaType} example`, value: media['example'] });
    for (const [name, example] of Object.entries((media['examples'] ?? {}) as Record<string, Json>)) {
      out.push({ where: `${where} ${mediaType} examples.${name}`, value: deref(example)['value'] });
    }
  }
  return out;
}

function requestExamples(op: Operation): Example[] | undefined {
  const body = op.raw['requestBody'] as Json | undefined;
  return body === undefined ? undefined : examplesOf(deref(body)['content'] as Json, 'request');
}

function responseExamples(op: Operation): Map<string, Example[]> {
  const out = new Map<string, Example[]>();
  for (const [status, response] of Object.entries(op.raw['responses'] as Record<string, Json>)) {
    out.set(status, examplesOf(deref(response)['content'] as Json | undefined, `response ${status}`));
  }
  return out;
}

/** The lowest 2xx status that has a body: its examples are required. */
function successStatus(op: Operation): string | undefined {
  return Object.entries(op.raw['responses'] as Record<string, Json>)
    .filter(([status, response]) => /^2\d\d$/.test(status) && deref(response)['content'] !== undefined)
    .map(([status]) => status)
    .sort()[0];
}

/** Strings that may hold a card number, with their JSON pointers. */
function cardDataIn(value: unknown, pointer = ''): { pointer: string; text: string }[] {
  if (typeof value === 'string') return mayHoldCardData(value) ? [{ pointer, text: value }] : [];
  if (Array.isArray(value)) return value.flatMap((v, i) => cardDataIn(v, `${pointer}/${i}`));
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).flatMap(([k, v]) => cardDataIn(v, `${pointer}/${k}`));
  }
  return [];
}

describe('openapi.yaml examples', () => {
  for (const op of spec.operations) {
    describe(`${op.operationId} (${op.method.toUpperCase()} ${op.pathTemplate})`, () => {
      it('when it takes a body, then it has a request example, and every request example matches its schema', () => {
        const examples = requestExamples(op);
        if (examples === undefined) return;
        expect(examples, 'request examples').to.not.be.empty;
        for (const example of examples) {
          const valid = op.validateBody?.(example.value) ?? true;
          expect(valid, `${example.where}: ${JSON.stringify(toIssues(op.validateBody?.errors))}`).to.equal(true);
        }
      });

      it('then it has an example of its success response, and every response example matches its schema', () => {
        const byStatus = responseExamples(op);
        const success = successStatus(op);
        if (success !== undefined) expect(byStatus.get(success), `response ${success} examples`).to.not.be.empty;
        for (const [status, examples] of byStatus) {
          const validate = op.responseValidator(Number(status.replace(/X/gi, '0')));
          for (const example of examples) {
            expect(validate, `${example.where}: no schema`).to.not.equal(undefined);
            const valid = validate?.(example.value);
            expect(valid, `${example.where}: ${JSON.stringify(toIssues(validate?.errors))}`).to.equal(true);
          }
        }
      });

      it('then its examples hold card numbers only in a pan field, and only test numbers', () => {
        const all = [...(requestExamples(op) ?? []), ...[...responseExamples(op).values()].flat()];
        for (const example of all) {
          for (const found of cardDataIn(example.value)) {
            expect(found.pointer, `${example.where}: card data outside a pan field`).to.match(/\/pan$/);
            expect(ALL_TEST_PANS, `${example.where}${found.pointer}: not a scheme test number`).to.include(found.text);
          }
        }
      });
    });
  }
});
