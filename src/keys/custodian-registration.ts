/**
 * How a custodian comes to exist: the two ways, both dual-controlled and both leaving evidence of
 * every person who took part.
 *
 * - **Genesis ceremony** (the first two): `keys request genesis` names both people and their Ed25519
 *   public keys; the payload carries the custodian's responsibilities (PCI DSS 3.7.8). Each of the two
 *   signs that joint statement with their own private key (`keys approve`): proof of possession of
 *   their key and their signed acknowledgement, over a statement that also names the other. `keys
 *   custodian genesis --request <id>` then registers both (sealed rows), once: the ledger's first
 *   execution. With custodians or a genesis on record it is refused.
 * - **add-custodian** (every later one): a request naming the name and key thumbprint, approved by two
 *   existing custodians, then `keys custodian add … --request <id>` with that key.
 *
 * There is no third way: a row written with database access alone has no seal and is no custodian.
 */
import type { JWK } from 'jose';
import type { Knex } from 'knex';
import { appendAuditEvent } from '../audit/audit-log.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import {
  assertCustodianName,
  CUSTODIAN_ACKNOWLEDGEMENT,
  insertSealedCustodian,
  jwkFromX,
  jwkOf,
  publicKeyFromPem,
  type Custodian,
} from './custodians.js';
import { anySealedCustodianRow, countSealedCustodianRows, custodianClash } from './custody-store.js';
import {
  authorisationDetails,
  authorise,
  refusalsAudited,
  type Authorisation,
  type DualControlContext,
  type RequestParams,
} from './dual-control.js';
import { requestParamsColumn } from './dual-control-store.js';
import { genesisCustodians } from './request-payload.js';

/** What a request to add a custodian names: the name and the key, so approvers see exactly whom. */
export async function custodianParams(name: string, publicKeyPem: string): Promise<RequestParams> {
  assertCustodianName(name);
  return { name, keyThumbprint: (await jwkOf(publicKeyFromPem(publicKeyPem))).thumbprint };
}

/** What the genesis request names: both people and their public keys. */
export async function genesisParams(
  first: { name: string; publicKeyPem: string },
  second: { name: string; publicKeyPem: string },
): Promise<RequestParams> {
  const out: Record<string, string> = {};
  for (const [which, who] of [
    ['first', first],
    ['second', second],
  ] as const) {
    assertCustodianName(who.name);
    const { jwk, thumbprint } = await jwkOf(publicKeyFromPem(who.publicKeyPem));
    out[`${which}Name`] = who.name;
    out[`${which}Key`] = thumbprint;
    out[`${which}PublicKey`] = String(jwk.x);
  }
  if (out['firstKey'] === out['secondKey'] || out['firstName'] === out['secondName']) {
    throw new AppError('CUSTODIAN_INVALID', {
      detail: 'The genesis names two different people with two different keys: one person cannot be both.',
    });
  }
  return out;
}

/**
 * The refusals that come before authorising, so that they do not spend the request: a bad name, no
 * acknowledgement, a name or key already on the register, no request while genesis is still due.
 */
async function registrable(
  trx: Knex.Transaction,
  input: { name: string; publicKeyPem: string; acknowledged: boolean; requestId: string | undefined },
): Promise<{ jwk: JWK; thumbprint: string }> {
  assertCustodianName(input.name);
  if (!input.acknowledged) {
    throw new AppError('CUSTODIAN_INVALID', {
      detail: 'The custodian must acknowledge their responsibilities (--acknowledge) to be registered.',
    });
  }
  const { jwk, thumbprint } = await jwkOf(publicKeyFromPem(input.publicKeyPem));
  // Before authorising, so that a clash does not spend the request.
  if (await custodianClash(trx, input.name, thumbprint)) throw new AppError('CUSTODIAN_EXISTS');
  if (input.requestId === undefined) {
    if ((await countSealedCustodianRows(trx)) < 2) {
      throw new AppError('CUSTODIANS_TOO_FEW', {
        detail: 'The first two custodians are registered together by the genesis ceremony (keys request genesis).',
      });
    }
  }
  return { jwk, thumbprint };
}

/** Registers a later custodian under an add-custodian request approved by two custodians. */
export async function registerCustodian(
  knex: Knex,
  input: { name: string; publicKeyPem: string; acknowledged: boolean; requestId: string | undefined },
  control: { singleOperator: boolean; production: boolean },
  ctx: DualControlContext,
  now = new Date(),
): Promise<Custodian> {
  const id = newId('cus');
  return refusalsAudited(
    knex,
    ctx.actor,
    { action: 'key.custodian.registered', resource: `custodian:${id}` },
    async (trx) => {
      const { jwk, thumbprint } = await registrable(trx, input);
      // Custodian registration is never single-operator: it decides who controls everything else.
      const auth = await authorise(
        trx,
        {
          operation: 'add-custodian',
          params: { name: input.name, keyThumbprint: thumbprint },
          requestId: input.requestId,
          singleOperator: false,
          production: control.production,
          masterKey: ctx.masterKey,
          actor: ctx.actor,
        },
        now,
      );
      await insertSealedCustodian(
        trx,
        ctx.masterKey,
        { id, name: input.name, jwk, thumbprint, authorisedBy: input.requestId!, registeredBy: ctx.actor.actor },
        now,
      );
      await appendAuditEvent(
        trx,
        {
          ...ctx.actor,
          action: 'key.custodian.registered',
          outcome: 'success',
          resource: `custodian:${id}`,
          details: {
            name: input.name,
            keyThumbprint: thumbprint,
            acknowledgement: CUSTODIAN_ACKNOWLEDGEMENT,
            ...authorisationDetails(auth),
          },
        },
        now,
      );
      return {
        id,
        name: input.name,
        keyThumbprint: thumbprint,
        publicKeyJwk: jwk,
        acknowledgedAt: now,
        authorisedBy: input.requestId!,
      };
    },
    now,
  );
}

/** Completes the genesis ceremony: registers the two custodians its request names, once. */
export async function completeGenesis(
  knex: Knex,
  requestId: string,
  production: boolean,
  ctx: DualControlContext,
  now = new Date(),
): Promise<Custodian[]> {
  return refusalsAudited(
    knex,
    ctx.actor,
    { action: 'key.custodian.genesis', resource: `request:${requestId}` },
    async (trx) => {
      if (await anySealedCustodianRow(trx)) {
        throw new AppError('CUSTODIAN_INVALID', { detail: 'Custodians are registered already: no second genesis.' });
      }
      const row = await requestParamsColumn(trx, requestId);
      if (row === undefined) throw new AppError('KEY_REQUEST_NOT_FOUND');
      // The parameters are only a guess here: authorise() compares them with what both people signed.
      const params = typeof row.params === 'string' ? (JSON.parse(row.params) as RequestParams) : row.params;
      const auth = await authorise(
        trx,
        {
          operation: 'genesis',
          params,
          requestId,
          singleOperator: false,
          production,
          masterKey: ctx.masterKey,
          actor: ctx.actor,
        },
        now,
      );
      if (auth.mode !== 'dual-control') throw new AppError('DUAL_CONTROL_REQUIRED');
      const registered: Custodian[] = [];
      for (const who of genesisCustodians(auth.payload.params)) {
        registered.push(await registerGenesisCustodian(trx, who, auth, ctx, now));
      }
      await appendAuditEvent(
        trx,
        {
          ...ctx.actor,
          action: 'key.custodian.genesis',
          outcome: 'success',
          resource: `request:${requestId}`,
          details: {
            custodians: registered.map((c) => ({ name: c.name, keyThumbprint: c.keyThumbprint })),
            ...authorisationDetails(auth),
          },
        },
        now,
      );
      return registered;
    },
    now,
  );
}

/**
 * In the genesis transaction (after authorise): one of the two people the signed payload names, as a
 * sealed custodian, audited with their signature over the genesis as proof of possession of their key.
 */
async function registerGenesisCustodian(
  trx: Knex.Transaction,
  who: { readonly name: string; readonly thumbprint: string; readonly x: string },
  auth: Authorisation & { mode: 'dual-control' },
  ctx: DualControlContext,
  now: Date,
): Promise<Custodian> {
  const requestId = auth.requestId;
  const key = await jwkFromX(who.x);
  if (key === undefined || key.thumbprint !== who.thumbprint) throw new AppError('CUSTODIAN_INVALID');
  const id = newId('cus');
  await insertSealedCustodian(
    trx,
    ctx.masterKey,
    {
      id,
      name: who.name,
      jwk: key.jwk,
      thumbprint: who.thumbprint,
      authorisedBy: requestId,
      registeredBy: ctx.actor.actor,
    },
    now,
  );
  const approval = auth.approvals.find((a) => a.keyThumbprint === who.thumbprint);
  await appendAuditEvent(
    trx,
    {
      actor: who.name,
      actorType: 'custodian',
      action: 'key.custodian.registered',
      outcome: 'success',
      origin: ctx.actor.origin,
      resource: `custodian:${id}`,
      details: {
        name: who.name,
        keyThumbprint: who.thumbprint,
        acknowledgement: CUSTODIAN_ACKNOWLEDGEMENT,
        authorisation: 'genesis',
        requestId,
        proofOfPossession: approval?.jws,
      },
    },
    now,
  );
  return {
    id,
    name: who.name,
    keyThumbprint: who.thumbprint,
    publicKeyJwk: key.jwk,
    acknowledgedAt: now,
    authorisedBy: requestId,
  };
}
