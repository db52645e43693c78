/**
 * The custodian's side of unsealing (`keys unseal`, `keys seal`, `keys shares reveal`): everything
 * that touches a share or the custodian's private key runs here, in the custodian's own CLI process;
 * the instance receives only a signed submission whose share is encrypted to it (unseal.ts).
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { CompactSign } from 'jose';
import { AppError } from '../errors/app-error.js';
import { jwkOf } from './custodians.js';
import { custodianShareContext, parseShareFile } from './key-shares.js';
import { openEnvelope, sealTo, SHARE_BYTES, x25519PrivateFromEd25519 } from './master-key-sources/share-crypto.js';
import { CLEAR_SHARE_FILE_TYPE } from './master-key-sources/shares.js';
import {
  instanceShareContext,
  SEAL_JWS_TYP,
  SEAL_PAYLOAD_TYPE,
  UNSEAL_JWS_TYP,
  UNSEAL_PAYLOAD_TYPE,
  type UnsealStatus,
} from './unseal.js';

export function custodianKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (error) {
    throw new AppError('CUSTODIAN_INVALID', { detail: 'The private key is not a PEM private key.', cause: error });
  }
  if (key.asymmetricKeyType !== 'ed25519')
    throw new AppError('CUSTODIAN_INVALID', { detail: 'Custodian keys are Ed25519.' });
  return key;
}

/** Opens the custodian's share file with their key. The caller wipes the result. */
export async function openShareFile(
  shareFileText: string,
  privateKey: KeyObject,
): Promise<{ splitId: string; thumbprint: string; share: Buffer }> {
  const file = parseShareFile(shareFileText);
  const { thumbprint } = await jwkOf(privateKeyPublic(privateKey));
  if (thumbprint !== file.keyThumbprint) {
    throw new AppError('MASTER_KEY_SHARE_INVALID', {
      detail: `This share file is ${file.custodian}'s, not for this key.`,
    });
  }
  let share: Buffer;
  try {
    share = openEnvelope(
      x25519PrivateFromEd25519(privateKey),
      file.envelope,
      custodianShareContext(file.splitId, thumbprint),
    );
  } catch (error) {
    throw new AppError('MASTER_KEY_SHARE_INVALID', {
      detail: 'The share file does not open with this key (altered?).',
      cause: error,
    });
  }
  if (share.length !== SHARE_BYTES)
    throw new AppError('MASTER_KEY_SHARE_INVALID', { detail: 'The share has the wrong length.' });
  return { splitId: file.splitId, thumbprint, share };
}

function privateKeyPublic(privateKey: KeyObject): KeyObject {
  return createPublicKey(privateKey);
}

/** The signed submission of one share to one instance, for the status that instance published. */
export async function unsealSubmission(
  status: UnsealStatus,
  shareFileText: string,
  privateKey: KeyObject,
): Promise<string> {
  if (!status.sealed || status.instanceKey === null) throw new AppError('VAULT_NOT_SEALED');
  const opened = await openShareFile(shareFileText, privateKey);
  try {
    if (status.splitId !== null && opened.splitId !== status.splitId) {
      throw new AppError('UNSEAL_SHARE_REFUSED', {
        detail: `This share is of split ${opened.splitId}; the instance expects ${status.splitId}.`,
      });
    }
    const envelope = sealTo(
      Buffer.from(status.instanceKey, 'base64url'),
      opened.share,
      instanceShareContext(status.nonce, opened.thumbprint),
    );
    const payload = { type: UNSEAL_PAYLOAD_TYPE, nonce: status.nonce, splitId: opened.splitId, share: envelope };
    return await new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
      .setProtectedHeader({ alg: 'EdDSA', typ: UNSEAL_JWS_TYP, kid: opened.thumbprint })
      .sign(privateKey);
  } finally {
    opened.share.fill(0);
  }
}

/** A custodian's signed request to seal the instance whose status carries `nonce`. */
export async function sealRequest(status: UnsealStatus, privateKey: KeyObject): Promise<string> {
  const { thumbprint } = await jwkOf(privateKeyPublic(privateKey));
  return new CompactSign(new TextEncoder().encode(JSON.stringify({ type: SEAL_PAYLOAD_TYPE, nonce: status.nonce })))
    .setProtectedHeader({ alg: 'EdDSA', typ: SEAL_JWS_TYP, kid: thumbprint })
    .sign(privateKey);
}

/** The cleartext share file the key CLI reads (MASTER_KEY_SHARE_FILES). Written 0600 by the caller. */
export async function clearShareFile(shareFileText: string, privateKey: KeyObject): Promise<string> {
  const opened = await openShareFile(shareFileText, privateKey);
  try {
    return (
      JSON.stringify({
        type: CLEAR_SHARE_FILE_TYPE,
        splitId: opened.splitId,
        keyThumbprint: opened.thumbprint,
        share: opened.share.toString('base64url'),
      }) + '\n'
    );
  } finally {
    opened.share.fill(0);
  }
}
