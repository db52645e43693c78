/**
 * Signed checkpoints of the audit trail, kept outside the database (a WORM bucket, a ticket, an
 * email to the QSA): a compact JWS (Ed25519, the active `audit-signing` key) over the head's
 * sequence number and MAC at a moment. The keyed chain stops a database writer from rewriting or
 * cutting the trail without the key, except in one way: deleting the newest entries and putting
 * back an older head row that was genuinely sealed. A checkpoint closes that window up to its own
 * moment: `verifyAgainstCheckpoint` proves the current trail verifies and still holds the
 * checkpoint's entry with the same MAC, so a trail that was truncated below it, or rewritten at or
 * before it (even by someone holding the master key: the MAC would differ), fails.
 *
 * A checkpoint is made only of a trail that verifies (a refusal is audited), and making one is an
 * audited action. It names its signing key by thumbprint (`kid`); verifying one needs the public key
 * or that thumbprint from outside the database ({@link CheckpointTrust}).
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { CompactSign, compactVerify, decodeProtectedHeader } from 'jose';
import type { Knex } from 'knex';
import { AppError } from '../errors/app-error.js';
import type { KeyActor } from '../auth/actors.js';
import { macEqual } from './audit-chain.js';
import { publicKeyThumbprint, type AuditSignerSource } from './audit-export.js';
import { appendAuditEvent } from './audit-log.js';
import { auditSigningPublicKeyPems, entryHash } from './audit-store.js';
import { verifyAuditChain } from './audit-verify.js';

export const CHECKPOINT_FORMAT = 'loyalty-vault/audit-checkpoint/v1';
const CHECKPOINT_TYP = 'loyalty-vault-audit-checkpoint+jws';

export interface CheckpointClaims {
  readonly format: typeof CHECKPOINT_FORMAT;
  /** The last entry when the checkpoint was made, and its MAC. */
  readonly seq: number;
  readonly hash: string;
  readonly createdAt: string;
  readonly signingKey: { readonly purpose: 'audit-signing'; readonly version: number; readonly kid: string };
}

export async function createCheckpoint(
  knex: Knex,
  signerSource: AuditSignerSource,
  actor: KeyActor,
  now = new Date(),
): Promise<{ jws: string; claims: CheckpointClaims }> {
  const verdict = await verifyAuditChain(knex);
  if (!verdict.ok) {
    const error = new AppError('AUDIT_CHAIN_BROKEN', { detail: `no checkpoint of a broken trail: ${verdict.reason}` });
    await knex.transaction((trx) =>
      appendAuditEvent(
        trx,
        {
          ...actor,
          action: 'audit.checkpointed',
          outcome: 'denied',
          resource: 'audit:chain',
          details: { code: error.code, reason: error.detail ?? error.title },
        },
        now,
      ),
    );
    throw error;
  }
  const signer = await signerSource();
  const claims: CheckpointClaims = {
    format: CHECKPOINT_FORMAT,
    seq: verdict.headSeq,
    hash: verdict.headHash,
    createdAt: now.toISOString(),
    signingKey: { purpose: 'audit-signing', version: signer.version, kid: signer.kid },
  };
  const jws = await new CompactSign(Buffer.from(JSON.stringify(claims), 'utf8'))
    .setProtectedHeader({ alg: 'EdDSA', typ: CHECKPOINT_TYP, kid: signer.kid })
    .sign(signer.privateKey);
  await knex.transaction((trx) =>
    appendAuditEvent(
      trx,
      {
        ...actor,
        action: 'audit.checkpointed',
        outcome: 'success',
        resource: 'audit:chain',
        details: { seq: claims.seq, signingKeyVersion: signer.version, kid: signer.kid },
      },
      now,
    ),
  );
  return { jws, claims };
}

export type CheckpointVerdict =
  | {
      readonly ok: true;
      readonly checkpoint: CheckpointClaims;
      readonly headSeq: number;
      /** Entries written since the checkpoint. */
      readonly extendedBy: number;
    }
  | { readonly ok: false; readonly reason: string; readonly checkpoint?: CheckpointClaims };

/**
 * Where the verifier's trust in the audit-signing public key comes from: never the database alone
 * (a database writer can plant a key of their own there and sign forged checkpoints with it). Either
 * the PEM itself, from the auditor's own copy, or its RFC 7638 thumbprint (the checkpoint's `kid`),
 * pinned out of band when `audit public-key` printed it: the database's PEM is used only when its
 * thumbprint is the pinned one.
 */
export type CheckpointTrust = { readonly publicKeyPem: string } | { readonly thumbprint: string };

/** Proves the trail in the database extends the checkpoint, signed by the trusted public key. */
export async function verifyAgainstCheckpoint(
  knex: Knex,
  jws: string,
  trust: CheckpointTrust,
): Promise<CheckpointVerdict> {
  const claims = await checkpointClaims(knex, jws.trim(), trust);
  if (typeof claims === 'string') return { ok: false, reason: claims };
  const chain = await verifyAuditChain(knex);
  if (!chain.ok) return { ok: false, reason: `the trail does not verify: ${chain.reason}`, checkpoint: claims };
  if (chain.headSeq < claims.seq) {
    return {
      ok: false,
      reason:
        `the trail ends at entry ${chain.headSeq} but the checkpoint of ${claims.createdAt} names entry ${claims.seq}: ` +
        `entries ${chain.headSeq + 1} to ${claims.seq} were removed (truncated) and an older head put back`,
      checkpoint: claims,
    };
  }
  const row = await entryHash(knex, claims.seq);
  if (row === undefined || !macEqual(row.hash, claims.hash)) {
    return {
      ok: false,
      reason: `entry ${claims.seq} is not the entry the checkpoint of ${claims.createdAt} signed: the trail up to it was rewritten`,
      checkpoint: claims,
    };
  }
  return { ok: true, checkpoint: claims, headSeq: chain.headSeq, extendedBy: chain.headSeq - claims.seq };
}

async function checkpointClaims(knex: Knex, jws: string, trust: CheckpointTrust): Promise<CheckpointClaims | string> {
  let kid: string | undefined;
  try {
    kid = decodeProtectedHeader(jws).kid;
  } catch {
    return 'the checkpoint is not a compact JWS';
  }
  let key: KeyObject | undefined;
  if ('publicKeyPem' in trust) {
    try {
      key = createPublicKey(trust.publicKeyPem);
    } catch {
      return 'the public key is not a PEM public key';
    }
  } else {
    if (kid !== trust.thumbprint) {
      return `the checkpoint is signed by key ${kid ?? '-'}, not by the pinned audit-signing key ${trust.thumbprint}`;
    }
    const pems = await auditSigningPublicKeyPems(knex);
    for (const pem of pems) {
      const candidate = createPublicKey(pem);
      if ((await publicKeyThumbprint(candidate)) === trust.thumbprint) key = candidate;
    }
    if (key === undefined)
      return `no audit-signing public key in the database has the pinned thumbprint ${trust.thumbprint}`;
  }
  try {
    const verified = await compactVerify(jws, key, { algorithms: ['EdDSA'] });
    if (verified.protectedHeader.typ !== CHECKPOINT_TYP) return 'the signature is not over an audit checkpoint';
    const claims = JSON.parse(new TextDecoder().decode(verified.payload)) as CheckpointClaims;
    if (claims.format !== CHECKPOINT_FORMAT || !Number.isSafeInteger(claims.seq) || typeof claims.hash !== 'string') {
      return 'unknown checkpoint format';
    }
    return claims;
  } catch {
    return 'the checkpoint signature does not verify (the file was changed, or signed by another key)';
  }
}
