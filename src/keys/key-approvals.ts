/**
 * Approving a request (`keys approve`): a custodian signs the canonical payload, and only after being
 * shown it.
 *
 * `previewApproval` checks everything that would refuse the approval (a tampered or executed or
 * expired request, a key that is no trusted custodian, a second approval by the same key) and returns
 * what to show; nothing is held open while the person reads it. `approveRequest` then checks again in
 * its own transaction and signs only if the payload still has the SHA-256 that was shown. Both audit
 * their refusals; a success is audited with the custodian as the actor (the signature is theirs) and
 * the operator running the CLI in the details.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { CompactSign } from 'jose';
import type { Knex } from 'knex';
import { appendAuditEvent } from '../audit/audit-log.js';
import { AppError } from '../errors/app-error.js';
import { jwkOf } from './custodians.js';
import { custodianIdByThumbprint } from './custody-store.js';
import { databaseNow } from '../db/database-clock.js';
import {
  inspectRequest,
  refusalsAudited,
  registerOf,
  signerOf,
  type DualControlContext,
  type KeyRequest,
  type RequestView,
} from './dual-control.js';
import { countApprovals, insertApproval, lockRequestId } from './dual-control-store.js';
import type { MasterKeySource } from './master-key-types.js';
import { APPROVAL_TYP, sha256B64 } from './request-payload.js';

export interface ApprovalPreview {
  readonly view: RequestView;
  readonly signer: string;
  readonly keyThumbprint: string;
}

function privateKeyOf(privateKeyPem: string): KeyObject {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(privateKeyPem);
  } catch (error) {
    throw new AppError('APPROVAL_INVALID', { detail: 'The private key is not a PEM private key.', cause: error });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new AppError('APPROVAL_INVALID', { detail: 'Approvals are signed with an Ed25519 key.' });
  }
  return privateKey;
}

/** Checks that this key may approve this request now: the refusal reasons of approveRequest. */
async function checkApprovable(
  db: Knex | Knex.Transaction,
  requestId: string,
  thumbprint: string,
  masterKey: MasterKeySource,
  now: Date,
): Promise<{ view: RequestView; request: KeyRequest; signer: string; custodian: boolean }> {
  const view = await inspectRequest(db, requestId, masterKey, now);
  if (view.request === undefined || view.problems.length > 0) {
    throw new AppError('KEY_REQUEST_TAMPERED', {
      detail: `The request does not match what was signed: ${view.problems.join('; ')}. Do not approve it.`,
    });
  }
  if (view.state === 'executed') throw new AppError('KEY_REQUEST_NOT_PENDING', { detail: 'The request has run.' });
  if (view.state === 'expired') throw new AppError('KEY_REQUEST_EXPIRED');
  const signer = await signerOf(registerOf(db, masterKey), thumbprint, view.request.payload);
  if (signer === undefined) {
    throw new AppError('APPROVAL_INVALID', {
      detail:
        view.request.payload.operation === 'genesis'
          ? 'This key is not one of the two the genesis request names.'
          : 'This key belongs to no registered custodian.',
    });
  }
  if (view.approvals.some((a) => a.keyThumbprint === thumbprint)) throw new AppError('APPROVAL_DUPLICATE');
  return { view, request: view.request, signer: signer.name, custodian: signer.custodian };
}

/** What `keys approve` shows before asking for confirmation. Refusals are audited. */
export async function previewApproval(
  knex: Knex,
  requestId: string,
  privateKeyPem: string,
  ctx: DualControlContext,
  at?: Date,
): Promise<ApprovalPreview> {
  return refusalsAudited(
    knex,
    ctx.actor,
    { action: 'key.request.approved', resource: `request:${requestId}` },
    async (trx) => {
      const now = at ?? (await databaseNow(trx));
      const { thumbprint } = await jwkOf(createPublicKey(privateKeyOf(privateKeyPem)));
      const checked = await checkApprovable(trx, requestId, thumbprint, ctx.masterKey, now);
      return { view: checked.view, signer: checked.signer, keyThumbprint: thumbprint };
    },
    at ?? new Date(),
  );
}

/**
 * Signs a request with a custodian's private key and records the approval. `shownDigest` is the
 * SHA-256 of the payload the custodian saw and confirmed: if the stored payload changed since, the
 * approval is refused rather than signing something unseen.
 */
export async function approveRequest(
  knex: Knex,
  requestId: string,
  privateKeyPem: string,
  shownDigest: string,
  ctx: DualControlContext,
  at?: Date,
): Promise<{ custodian: string; approvals: number; digest: string }> {
  return refusalsAudited(
    knex,
    ctx.actor,
    { action: 'key.request.approved', resource: `request:${requestId}` },
    async (trx) => {
      // The approval's time and the expiry check use the database's clock, not the CLI's.
      const now = at ?? (await databaseNow(trx));
      const privateKey = privateKeyOf(privateKeyPem);
      const { thumbprint } = await jwkOf(createPublicKey(privateKey));
      await lockRequestId(trx, requestId);
      const { request, signer, custodian } = await checkApprovable(trx, requestId, thumbprint, ctx.masterKey, now);
      if (request.digest !== shownDigest) {
        throw new AppError('KEY_REQUEST_TAMPERED', { detail: 'The payload changed after it was shown: not signed.' });
      }
      const jws = await new CompactSign(new TextEncoder().encode(request.canonical))
        .setProtectedHeader({ alg: 'EdDSA', typ: APPROVAL_TYP, kid: thumbprint })
        .sign(privateKey);
      const custodianId = custodian ? await custodianIdByThumbprint(trx, thumbprint) : null;
      const inserted = await insertApproval(trx, {
        requestId: request.id,
        custodianId,
        keyThumbprint: thumbprint,
        jws,
        approvedAt: now,
      });
      if (!inserted) throw new AppError('APPROVAL_DUPLICATE');
      await appendAuditEvent(
        trx,
        {
          actor: signer,
          actorType: 'custodian',
          action: 'key.request.approved',
          outcome: 'success',
          origin: ctx.actor.origin,
          resource: `request:${request.id}`,
          details: {
            operation: request.payload.operation,
            params: request.payload.params,
            payloadSha256: sha256B64(request.canonical),
            keyThumbprint: thumbprint,
            operator: ctx.actor.actor,
            jws,
          },
        },
        now,
      );
      const approvals = await countApprovals(trx, request.id);
      return { custodian: signer, approvals, digest: request.digest };
    },
    at ?? new Date(),
  );
}
