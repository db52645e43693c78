/**
 * Splitting the master key M-of-N among the registered custodians (PCI DSS 3.6.1.2 "at least two
 * full-length key components or key shares", 3.7.6 split knowledge and dual control), and the split
 * record that an unseal checks shares against.
 *
 * - The split runs only as an approved `split-master-key` request (dual-control.ts): two custodians
 *   sign the threshold, the exact set of holders (key thumbprints) and the master key id. The same
 *   request re-splits when a custodian leaves: the new split supersedes the old in the same
 *   transaction, and the service accepts only shares of the active split.
 * - Each share is encrypted to its holder's key (share-crypto.ts) and written once to a file of mode
 *   0600 that is never overwritten; the process keeps no share after the command. The database holds
 *   the split record only: holders, x coordinates and per-share digests (share-crypto.ts
 *   `shareDigest`), never a share, sealed under the master key.
 * - What a database writer can do to the record while the service is sealed: change a digest, a
 *   holder's public key, the threshold. The unseal trusts the record only provisionally: the rebuilt
 *   key must carry the pinned id (MASTER_KEY_SHARES_KEY_ID), the record's seal must verify under it
 *   and every submitter must be a sealed custodian, or the unseal is refused (shares.ts). Lowering
 *   the threshold gains nothing: Shamir rebuilds the right key only from M genuine shares.
 * - Re-splitting the same key does not make the old shares useless outside the service: a leaving
 *   custodian's old share and M-1 other old shares still rebuild it offline. What fully revokes is a
 *   master-key rotation to a new key, then a split of that key (docs/key-management.md).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import { appendAuditEvent, canonicalJson } from '../audit/audit-log.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import { verifyRegister, type RegisterVerdict } from './custodian-provenance.js';
import type { Custodian } from './custodians.js';
import {
  activeSplitRow,
  insertActiveSplit,
  lockActiveSplitId,
  supersedeActiveSplit,
  type SplitRow,
} from './custody-store.js';
import {
  authorisationDetails,
  authorise,
  refusalsAudited,
  type Authorisation,
  type DualControlContext,
} from './dual-control.js';
import { sealMatches } from './dual-control-ledger.js';
import type { MasterKeySource } from './master-key-types.js';
import { sealTo, shareDigest, x25519PublicFromEd25519, type Envelope } from './master-key-sources/share-crypto.js';
import type { RequestParams } from './request-payload.js';
import { createHash } from 'node:crypto';

export const SHARE_FILE_TYPE = 'loyalty-vault/master-key-share/v1';

export interface ShareHolder {
  readonly custodianId: string;
  readonly name: string;
  readonly keyThumbprint: string;
  /** The holder's Ed25519 public key (JWK `x`): what the unseal verifies their signature with. */
  readonly x: string;
  /** The share's x coordinate (its last byte). */
  readonly index: number;
  readonly digest: string;
}

export interface SplitRecord {
  readonly id: string;
  readonly threshold: number;
  readonly total: number;
  readonly kekId: string;
  readonly holders: readonly ShareHolder[];
  readonly requestId: string | null;
  readonly createdAt: Date;
}

/** What a custodian receives: their share, encrypted to their key. Never the share in clear. */
export interface ShareFile {
  readonly type: typeof SHARE_FILE_TYPE;
  readonly splitId: string;
  readonly kekId: string;
  readonly threshold: number;
  readonly total: number;
  readonly custodian: string;
  readonly keyThumbprint: string;
  readonly index: number;
  readonly envelope: Envelope;
}

/** A source whose key can be split: the bytes leave it only as shares. */
export interface SplittableMasterKey extends MasterKeySource {
  shamirSplit(total: number, threshold: number): Promise<Uint8Array[]>;
}

export function isSplittable(source: MasterKeySource): source is SplittableMasterKey {
  return typeof (source as Partial<SplittableMasterKey>).shamirSplit === 'function';
}

/** The context an envelope to a custodian is bound to (HKDF info and GCM AAD). */
export const custodianShareContext = (splitId: string, thumbprint: string): string =>
  `master-key-share/custodian|${splitId}|${thumbprint}`;

const SPLIT_AAD = (id: string): string => `loyalty-vault/master-key-split/v1|${id}`;

function recordDigest(r: Omit<SplitRecord, 'createdAt'>): Buffer {
  return createHash('sha256')
    .update(
      canonicalJson({
        id: r.id,
        threshold: r.threshold,
        total: r.total,
        kekId: r.kekId,
        holders: r.holders,
        requestId: r.requestId,
      }),
    )
    .digest();
}

/** The parameters a split request names and the split command must be run with. */
export function splitParams(input: {
  threshold: number;
  thumbprints: readonly string[];
  kekId: string;
}): RequestParams {
  const holders = [...new Set(input.thumbprints)].sort();
  if (holders.length !== input.thumbprints.length) {
    throw new AppError('MASTER_KEY_SPLIT_INVALID', { detail: 'A custodian is named twice.' });
  }
  if (!Number.isInteger(input.threshold) || input.threshold < 2 || input.threshold > holders.length) {
    throw new AppError('MASTER_KEY_SPLIT_INVALID', {
      detail: `The threshold must be from 2 to the number of holders (${holders.length}): one share alone must never rebuild the key.`,
    });
  }
  return { threshold: input.threshold, holders: holders.join(','), kekId: input.kekId };
}

function recordOf(row: SplitRow): SplitRecord {
  return {
    id: row.id,
    threshold: Number(row.threshold),
    total: Number(row.total),
    kekId: row.kek_id,
    holders: (typeof row.holders === 'string' ? JSON.parse(row.holders) : row.holders) as ShareHolder[],
    requestId: row.request_id,
    createdAt: row.created_at,
  };
}

/**
 * The active split as stored: trusted only provisionally (a sealed service cannot check its seal);
 * {@link verifySplitSeal} checks it once the key is rebuilt.
 */
export async function activeSplit(db: Knex | Knex.Transaction): Promise<(SplitRecord & { seal: Buffer }) | undefined> {
  const row = await activeSplitRow(db);
  return row === undefined ? undefined : { ...recordOf(row), seal: row.seal };
}

export async function verifySplitSeal(
  masterKey: MasterKeySource,
  split: SplitRecord & { seal: Buffer },
): Promise<boolean> {
  return sealMatches(masterKey, split.seal, recordDigest(split), SPLIT_AAD(split.id));
}

/** What `keys shares split` is run with: the split the request must name, and where the files go. */
export interface SplitInput {
  readonly threshold: number;
  readonly thumbprints: readonly string[];
  readonly requestId: string | undefined;
  readonly outDir: string;
  readonly singleOperator: boolean;
  readonly production: boolean;
}

export interface SplitResult {
  readonly split: SplitRecord;
  readonly files: readonly string[];
}

/**
 * Runs an approved split: shares of the current master key, one per named custodian, each encrypted
 * to them and written to `outDir` (mode 0600, never overwriting); the record sealed and stored, the
 * previous split superseded, audited with the custodians' approvals. One transaction; a refusal is
 * audited in one of its own.
 */
export async function executeSplit(knex: Knex, input: SplitInput, ctx: DualControlContext): Promise<SplitResult> {
  const masterKey = ctx.masterKey;
  const id = newId('msp');
  return refusalsAudited(
    knex,
    ctx.actor,
    { action: 'master-key.split', resource: `master-key:${masterKey.keyId}` },
    async (trx) => {
      if (!isSplittable(masterKey)) {
        throw new AppError('MASTER_KEY_SPLIT_INVALID', {
          detail: `The master key source (${masterKey.description}) cannot be split.`,
        });
      }
      const params = splitParams({
        threshold: input.threshold,
        thumbprints: input.thumbprints,
        kekId: masterKey.keyId,
      });
      const authorisation = await authorise(trx, {
        operation: 'split-master-key',
        params,
        requestId: input.requestId,
        singleOperator: input.singleOperator,
        production: input.production,
        masterKey,
        actor: ctx.actor,
      });
      return splitWithin(
        trx,
        masterKey,
        { threshold: input.threshold, holders: params, requestId: input.requestId, outDir: input.outDir, id },
        authorisation,
        ctx.actor,
      );
    },
    new Date(),
  );
}

/**
 * The split itself, in the caller's transaction once it is authorised (a `split-master-key` request,
 * or a master-key rotation into shares, master-rotation-shares.ts): the register verified under
 * `masterKey`, one share per named custodian encrypted to them, the record sealed and stored (the
 * previous split superseded) and audited with `authorisation`, the 0600 files written last.
 */
export async function splitWithin(
  trx: Knex.Transaction,
  masterKey: SplittableMasterKey,
  input: { threshold: number; holders: RequestParams; requestId: string | undefined; outDir: string; id?: string },
  authorisation: Authorisation,
  actor: DualControlContext['actor'],
): Promise<SplitResult> {
  const id = input.id ?? newId('msp');
  const register = await verifyRegister(trx, masterKey);
  if (register.tampered !== undefined) throw new AppError('DUAL_CONTROL_TAMPERED', { detail: register.tampered });
  const custodians = trustedHolders(register, input.holders);
  const shares = await masterKey.shamirSplit(custodians.length, input.threshold);
  const { holders, files } = encryptShares(
    { id, kekId: masterKey.keyId, threshold: input.threshold, outDir: input.outDir },
    custodians,
    shares,
  );
  const record = {
    id,
    threshold: input.threshold,
    total: custodians.length,
    kekId: masterKey.keyId,
    holders,
    requestId: input.requestId ?? null,
  };
  const now = await storeSplit(trx, record, authorisation, { actor, masterKey });
  // Written inside the transaction: a failed write rolls the split back. Files of a split whose
  // commit then fails are harmless: no record holds their digests, the service refuses them.
  writeShareFiles(input.outDir, files);
  return { split: { ...record, createdAt: now }, files: files.map((f) => f.file) };
}

/** The trusted custodians the split names, in its order; a key that is none refuses the split. */
function trustedHolders(register: RegisterVerdict, params: RequestParams): Custodian[] {
  const thumbprints = String(params['holders']).split(',');
  return thumbprints.map((t) => {
    const c = register.trusted.get(t);
    if (c === undefined) {
      throw new AppError('MASTER_KEY_SPLIT_INVALID', { detail: `Key ${t} is not a registered custodian.` });
    }
    return c;
  });
}

/** Mode 0600 (the directory 0700), never overwriting an existing file. */
function writeShareFiles(outDir: string, files: readonly { file: string; content: ShareFile }[]): void {
  fs.mkdirSync(outDir, { recursive: true, mode: 0o700 });
  for (const f of files) {
    fs.writeFileSync(f.file, JSON.stringify(f.content, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
  }
}

/**
 * In the split's transaction: seals the record under the master key, supersedes the active split
 * (locked first) and stores this one as active, audited with the custodians' approvals. Returns its time.
 */
async function storeSplit(
  trx: Knex.Transaction,
  record: Omit<SplitRecord, 'createdAt'> & { holders: ShareHolder[] },
  authorisation: Authorisation,
  ctx: DualControlContext,
): Promise<Date> {
  const { id, holders } = record;
  const masterKey = ctx.masterKey;
  const seal = await masterKey.wrap(recordDigest(record), SPLIT_AAD(id));
  const now = new Date();
  const previous = await lockActiveSplitId(trx);
  await supersedeActiveSplit(trx, now);
  await insertActiveSplit(trx, {
    id,
    threshold: record.threshold,
    total: record.total,
    kekId: record.kekId,
    holders: JSON.stringify(holders),
    requestId: record.requestId,
    createdAt: now,
    seal,
  });
  await appendAuditEvent(
    trx,
    {
      ...ctx.actor,
      action: 'master-key.split',
      outcome: 'success',
      resource: `master-key:${masterKey.keyId}`,
      details: {
        splitId: id,
        threshold: record.threshold,
        total: record.total,
        holders: holders.map((h) => ({ custodian: h.name, keyThumbprint: h.keyThumbprint, index: h.index })),
        supersedes: previous?.id ?? null,
        ...authorisationDetails(authorisation),
      },
    },
    now,
  );
  return now;
}

/**
 * One share per custodian, each encrypted to their key (the share files' content) with its digest for
 * the record; the shares are zeroed once encrypted, whatever happens.
 */
function encryptShares(
  split: { id: string; kekId: string; threshold: number; outDir: string },
  custodians: readonly Custodian[],
  shares: Uint8Array[],
): { holders: ShareHolder[]; files: { file: string; content: ShareFile }[] } {
  const { id } = split;
  const holders: ShareHolder[] = [];
  const files: { file: string; content: ShareFile }[] = [];
  const copies: Buffer[] = []; // the plaintext handed to sealTo, wiped with the shares
  try {
    custodians.forEach((c, i) => {
      const share = shares[i]!;
      const x = String(c.publicKeyJwk.x);
      holders.push({
        custodianId: c.id,
        name: c.name,
        keyThumbprint: c.keyThumbprint,
        x,
        index: share[share.length - 1]!,
        digest: shareDigest(id, c.keyThumbprint, share),
      });
      const envelope = sealTo(
        x25519PublicFromEd25519(Buffer.from(x, 'base64url')),
        copies[copies.push(Buffer.from(share)) - 1]!,
        custodianShareContext(id, c.keyThumbprint),
      );
      files.push({
        file: path.join(split.outDir, `${id}.${c.name.replace(/[^A-Za-z0-9._-]/g, '_')}.share.json`),
        content: {
          type: SHARE_FILE_TYPE,
          splitId: id,
          kekId: split.kekId,
          threshold: split.threshold,
          total: custodians.length,
          custodian: c.name,
          keyThumbprint: c.keyThumbprint,
          index: share[share.length - 1]!,
          envelope,
        },
      });
    });
  } finally {
    for (const share of [...shares, ...copies]) share.fill(0);
  }
  return { holders, files };
}

export function parseShareFile(text: string): ShareFile {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new AppError('MASTER_KEY_SHARE_INVALID', { detail: 'The share file is not JSON.', cause: error });
  }
  const v = value as Partial<ShareFile> | null;
  if (
    v === null ||
    typeof v !== 'object' ||
    v.type !== SHARE_FILE_TYPE ||
    typeof v.splitId !== 'string' ||
    typeof v.keyThumbprint !== 'string' ||
    typeof v.envelope !== 'object'
  ) {
    throw new AppError('MASTER_KEY_SHARE_INVALID', { detail: `The file is not a ${SHARE_FILE_TYPE} share file.` });
  }
  return v as ShareFile;
}
