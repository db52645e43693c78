/**
 * Dual control for key operations (PCI DSS 3.6.1.2, 3.7.6): rotate, retire and destroy run only with
 * the signed approval of two distinct registered key custodians.
 *
 * - A custodian is registered with an Ed25519 public key and acknowledges the custodian's
 *   responsibilities at registration (PCI DSS 3.7.8); the acknowledgement text is stored and audited.
 * - An operation first becomes a pending request whose `payload` is a canonical JSON description
 *   (id, operation, parameters, human description, expiry). Each custodian signs exactly those bytes
 *   with their private key (compact JWS, EdDSA); the private key never leaves their machine's file.
 * - When the operation runs, in its own transaction, every stored approval is verified again against
 *   the custodian's registered public key and the request's payload: a forged or transplanted
 *   signature (one made over another request) refuses the whole request, and two valid approvals from
 *   different custodians are required. The request is then marked executed (once only) and the
 *   signatures go into the audit entry of the operation.
 * - Single-operator mode (KEYS_SINGLE_OPERATOR, development only, refused in production) skips it.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, CompactSign, compactVerify, importJWK, type JWK } from 'jose';
import type { Knex } from 'knex';
import { appendAuditEvent, canonicalJson } from '../audit/audit-log.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import type { KeyActor } from './key-ring.js';

export const CUSTODIAN_ACKNOWLEDGEMENT =
  'I accept the responsibilities of a loyalty-vault key custodian (PCI DSS 3.7.8): I keep my private ' +
  'signing key secret and under my sole control, I approve a key operation only after reading its ' +
  'description and checking that it was requested for a legitimate reason, I never approve on behalf ' +
  'of another person, and I report any suspected compromise of a key or of my signing key at once.';

export type KeyOperation = 'rotate' | 'retire' | 'destroy' | 'add-custodian';
export type RequestParams = Readonly<Record<string, string | number>>;

/** How long custodians have to approve a request. */
const REQUEST_TTL_MS = 24 * 3600 * 1000;
const REQUIRED_APPROVALS = 2;
const APPROVAL_TYP = 'loyalty-vault-key-approval+jws';

export interface Custodian {
  readonly id: string;
  readonly name: string;
  readonly keyThumbprint: string;
  readonly acknowledgedAt: Date;
}

export interface KeyRequest {
  readonly id: string;
  readonly operation: KeyOperation;
  readonly params: RequestParams;
  readonly description: string;
  /** The exact text custodians sign. */
  readonly payload: string;
  readonly state: 'pending' | 'executed';
  readonly expiresAt: Date;
}

/** What authorised an operation: recorded in its audit entry. */
export type Authorisation =
  | { readonly mode: 'single-operator' }
  | {
      readonly mode: 'dual-control';
      readonly requestId: string;
      readonly approvals: readonly {
        readonly custodian: string;
        readonly keyThumbprint: string;
        readonly jws: string;
      }[];
    };

function publicKeyFromPem(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (error) {
    throw new AppError('CUSTODIAN_INVALID', { detail: 'The public key is not a PEM public key.', cause: error });
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new AppError('CUSTODIAN_INVALID', { detail: 'Custodian keys must be Ed25519.' });
  }
  return key;
}

async function thumbprintOf(key: KeyObject): Promise<{ jwk: JWK; thumbprint: string }> {
  const jwk = key.export({ format: 'jwk' }) as JWK;
  return { jwk, thumbprint: await calculateJwkThumbprint(jwk, 'sha256') };
}

/** Custodians registered without approvals: the first two (bootstrap), each registration audited. */
const BOOTSTRAP_CUSTODIANS = 2;

/** What a request to add a custodian names: the name and the key, so approvers see exactly whom. */
export async function custodianParams(name: string, publicKeyPem: string): Promise<RequestParams> {
  return { name, keyThumbprint: (await thumbprintOf(publicKeyFromPem(publicKeyPem))).thumbprint };
}

/**
 * Registers a custodian. The first two are registered directly (there is nobody yet to approve);
 * every later one needs a request approved by two existing custodians, or whoever can run the CLI
 * could register two keys of their own and defeat dual control.
 */
export async function registerCustodian(
  knex: Knex,
  input: { name: string; publicKeyPem: string; acknowledged: boolean },
  actor: KeyActor,
  control: { requestId: string | undefined; singleOperator: boolean; production: boolean },
  now = new Date(),
): Promise<Custodian> {
  if (!/^[A-Za-z][A-Za-z0-9 ._'-]{1,63}$/.test(input.name)) {
    throw new AppError('CUSTODIAN_INVALID', {
      detail: "A custodian name is 2 to 64 letters, digits, spaces or . _ ' -.",
    });
  }
  if (!input.acknowledged) {
    throw new AppError('CUSTODIAN_INVALID', {
      detail: 'The custodian must acknowledge their responsibilities (--acknowledge) to be registered.',
    });
  }
  const { jwk, thumbprint } = await thumbprintOf(publicKeyFromPem(input.publicKeyPem));
  const id = newId('cus');
  return knex
    .transaction(async (trx) => {
      const clash = (await trx('key_custodians')
        .where({ name: input.name })
        .orWhere({ key_thumbprint: thumbprint })
        .first('id')) as unknown;
      if (clash !== undefined) throw new AppError('CUSTODIAN_EXISTS');
      const existing = (await trx('key_custodians').count('* as n').first()) as { n: number | string };
      const bootstrap = Number(existing.n) < BOOTSTRAP_CUSTODIANS;
      const auth: Authorisation | undefined = bootstrap
        ? undefined
        : await authorise(
            trx,
            { operation: 'add-custodian', params: { name: input.name, keyThumbprint: thumbprint }, ...control },
            now,
          );
      await trx('key_custodians').insert({
        id,
        name: input.name,
        public_key_jwk: JSON.stringify(jwk),
        key_thumbprint: thumbprint,
        acknowledgement: CUSTODIAN_ACKNOWLEDGEMENT,
        acknowledged_at: now,
        registered_by: actor.actor,
        created_at: now,
      });
      await appendAuditEvent(
        trx,
        {
          ...actor,
          action: 'key.custodian.registered',
          outcome: 'success',
          resource: `custodian:${id}`,
          details: {
            name: input.name,
            keyThumbprint: thumbprint,
            acknowledgement: CUSTODIAN_ACKNOWLEDGEMENT,
            ...(auth === undefined
              ? { authorisation: 'bootstrap (first two custodians)' }
              : authorisationDetails(auth)),
          },
        },
        now,
      );
      return { id, name: input.name, keyThumbprint: thumbprint, acknowledgedAt: now };
    })
    .catch(async (error: unknown) => {
      if (error instanceof AppError && error.code !== 'CUSTODIAN_EXISTS') {
        await knex.transaction((trx) =>
          appendAuditEvent(
            trx,
            {
              ...actor,
              action: 'key.custodian.registered',
              outcome: 'denied',
              resource: `custodian:${input.name}`,
              details: { code: error.code, reason: error.detail ?? error.title },
            },
            now,
          ),
        );
      }
      throw error;
    });
}

export async function listCustodians(knex: Knex): Promise<Custodian[]> {
  const rows = (await knex('key_custodians').orderBy('name')) as {
    id: string;
    name: string;
    key_thumbprint: string;
    acknowledged_at: Date;
  }[];
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    keyThumbprint: r.key_thumbprint,
    acknowledgedAt: r.acknowledged_at,
  }));
}

export async function createRequest(
  knex: Knex,
  input: { operation: KeyOperation; params: RequestParams; description: string },
  actor: KeyActor,
  now = new Date(),
): Promise<KeyRequest> {
  const id = newId('krq');
  const expiresAt = new Date(now.getTime() + REQUEST_TTL_MS);
  const payload = canonicalJson({
    type: 'loyalty-vault/key-request/v1',
    id,
    operation: input.operation,
    params: input.params,
    description: input.description,
    requestedBy: actor.actor,
    expiresAt: expiresAt.toISOString(),
  });
  await knex.transaction(async (trx) => {
    await trx('key_requests').insert({
      id,
      operation: input.operation,
      params: JSON.stringify(input.params),
      payload,
      description: input.description,
      state: 'pending',
      requested_by: actor.actor,
      origin: actor.origin,
      created_at: now,
      expires_at: expiresAt,
    });
    await appendAuditEvent(
      trx,
      {
        ...actor,
        action: 'key.request.created',
        outcome: 'success',
        resource: `request:${id}`,
        details: { operation: input.operation, params: input.params, description: input.description },
      },
      now,
    );
  });
  return {
    id,
    operation: input.operation,
    params: input.params,
    description: input.description,
    payload,
    state: 'pending',
    expiresAt,
  };
}

interface RequestRow {
  id: string;
  operation: KeyOperation;
  params: RequestParams | string;
  payload: string;
  description: string;
  state: 'pending' | 'executed';
  expires_at: Date;
}

function toRequest(row: RequestRow): KeyRequest {
  return {
    id: row.id,
    operation: row.operation,
    params: typeof row.params === 'string' ? (JSON.parse(row.params) as RequestParams) : row.params,
    description: row.description,
    payload: row.payload,
    state: row.state,
    expiresAt: row.expires_at,
  };
}

export async function findRequest(db: Knex | Knex.Transaction, id: string, forUpdate = false): Promise<KeyRequest> {
  const query = db('key_requests').where({ id }).first();
  if (forUpdate) void query.forUpdate();
  const row = (await query) as RequestRow | undefined;
  if (row === undefined) throw new AppError('KEY_REQUEST_NOT_FOUND');
  return toRequest(row);
}

/** Signs a request with a custodian's private key and records the approval. */
export async function approveRequest(
  knex: Knex,
  requestId: string,
  privateKeyPem: string,
  origin: string,
  now = new Date(),
): Promise<{ custodian: string; approvals: number }> {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(privateKeyPem);
  } catch (error) {
    throw new AppError('APPROVAL_INVALID', { detail: 'The private key is not a PEM private key.', cause: error });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new AppError('APPROVAL_INVALID', { detail: 'Approvals are signed with an Ed25519 key.' });
  }
  const { thumbprint } = await thumbprintOf(createPublicKey(privateKey));
  return knex.transaction(async (trx) => {
    const custodian = (await trx('key_custodians').where({ key_thumbprint: thumbprint }).first()) as
      { id: string; name: string } | undefined;
    if (custodian === undefined) {
      throw new AppError('APPROVAL_INVALID', { detail: 'This key belongs to no registered custodian.' });
    }
    const request = await findRequest(trx, requestId, true);
    assertPending(request, now);
    const jws = await new CompactSign(new TextEncoder().encode(request.payload))
      .setProtectedHeader({ alg: 'EdDSA', typ: APPROVAL_TYP, kid: thumbprint })
      .sign(privateKey);
    const inserted = (await trx('key_approvals')
      .insert({ request_id: request.id, custodian_id: custodian.id, jws, approved_at: now })
      .onConflict(['request_id', 'custodian_id'])
      .ignore()
      .returning('custodian_id')) as unknown[];
    if (inserted.length === 0) throw new AppError('APPROVAL_DUPLICATE');
    await appendAuditEvent(
      trx,
      {
        actor: custodian.name,
        actorType: 'custodian',
        action: 'key.request.approved',
        outcome: 'success',
        origin,
        resource: `request:${request.id}`,
        details: { operation: request.operation, params: request.params, keyThumbprint: thumbprint, jws },
      },
      now,
    );
    const count = (await trx('key_approvals').where({ request_id: request.id }).count('* as n').first()) as {
      n: number | string;
    };
    return { custodian: custodian.name, approvals: Number(count.n) };
  });
}

function assertPending(request: KeyRequest, now: Date): void {
  if (request.state !== 'pending') throw new AppError('KEY_REQUEST_NOT_PENDING');
  if (request.expiresAt.getTime() <= now.getTime()) {
    throw new AppError('KEY_REQUEST_NOT_PENDING', { detail: 'The request has expired: create a new one.' });
  }
}

export interface AuthoriseInput {
  readonly operation: KeyOperation;
  readonly params: RequestParams;
  readonly requestId: string | undefined;
  readonly singleOperator: boolean;
  readonly production: boolean;
}

/**
 * Inside the operation's transaction: checks the approvals and consumes the request, or refuses.
 * Records nothing on refusal (the caller audits the refusal in a transaction of its own).
 */
export async function authorise(
  trx: Knex.Transaction,
  input: AuthoriseInput,
  now = new Date(),
): Promise<Authorisation> {
  if (input.requestId === undefined) {
    if (input.singleOperator && input.production) throw new AppError('SINGLE_OPERATOR_REFUSED');
    if (input.singleOperator) return { mode: 'single-operator' };
    throw new AppError('DUAL_CONTROL_REQUIRED', {
      detail: 'Create a request (keys request …), have two custodians approve it, then pass --request <id>.',
    });
  }
  const request = await findRequest(trx, input.requestId, true);
  assertPending(request, now);
  if (request.operation !== input.operation || canonicalJson(request.params) !== canonicalJson(input.params)) {
    throw new AppError('KEY_REQUEST_MISMATCH');
  }
  const rows = (await trx('key_approvals as a')
    .join('key_custodians as c', 'c.id', 'a.custodian_id')
    .where('a.request_id', request.id)
    .orderBy('a.approved_at')
    .select('a.custodian_id', 'a.jws', 'c.name', 'c.public_key_jwk', 'c.key_thumbprint')) as {
    custodian_id: string;
    jws: string;
    name: string;
    public_key_jwk: JWK | string;
    key_thumbprint: string;
  }[];
  const approvals: { custodian: string; keyThumbprint: string; jws: string }[] = [];
  for (const row of rows) {
    const jwk = typeof row.public_key_jwk === 'string' ? (JSON.parse(row.public_key_jwk) as JWK) : row.public_key_jwk;
    if (!(await verifyApproval(row.jws, jwk, request.payload))) {
      throw new AppError('APPROVAL_INVALID', {
        detail: `The approval recorded for custodian ${row.name} does not verify for this request: the request is refused.`,
      });
    }
    approvals.push({ custodian: row.name, keyThumbprint: row.key_thumbprint, jws: row.jws });
  }
  const distinct = new Set(approvals.map((a) => a.keyThumbprint));
  if (distinct.size < REQUIRED_APPROVALS) {
    throw new AppError('DUAL_CONTROL_REQUIRED', {
      detail: `The request has ${distinct.size} valid approval(s) from distinct custodians; ${REQUIRED_APPROVALS} are required.`,
    });
  }
  await trx('key_requests').where({ id: request.id, state: 'pending' }).update({ state: 'executed', executed_at: now });
  return { mode: 'dual-control', requestId: request.id, approvals };
}

/** True when `jws` is a valid EdDSA signature by `jwk` over exactly `payload`. */
async function verifyApproval(jws: string, jwk: JWK, payload: string): Promise<boolean> {
  try {
    const key = await importJWK(jwk, 'EdDSA');
    const verified = await compactVerify(jws, key, { algorithms: ['EdDSA'] });
    return verified.protectedHeader.typ === APPROVAL_TYP && new TextDecoder().decode(verified.payload) === payload;
  } catch {
    return false;
  }
}

/** The custodians' signatures, for the audit entry of the operation. */
export function authorisationDetails(authorisation: Authorisation): Record<string, unknown> {
  return authorisation.mode === 'single-operator'
    ? { authorisation: 'single-operator (development only)' }
    : { authorisation: 'dual-control', requestId: authorisation.requestId, approvals: authorisation.approvals };
}
