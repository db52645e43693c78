/**
 * Signed audit exports for auditors (PCI DSS 10.3, 10.5): the entries of a period as JSON, plus a
 * detached JWS (RFC 7515 appendix F) over the file's exact bytes, signed by the active `audit-signing`
 * key (Ed25519). The auditor verifies offline with only that key's public half: the signature proves
 * the file is what the vault exported.
 *
 * Format v2 (the keyed chain): each entry carries its MAC (`hash`), the previous entry's MAC, the
 * audit-chain key version, the salted digest of its details and the salt (absent once redacted).
 * Offline, without the audit-chain key, the verifier checks the signature, every link, and every
 * unredacted entry's details against its digest; the MACs themselves were checked by the vault when
 * it exported, and its verdict (`chain`) is inside the signed bytes. v1 files (plain SHA-256 chain,
 * exported before the keyed chain) still verify as they did.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { base64url, calculateJwkThumbprint, CompactSign, compactVerify, type JWK } from 'jose';
import type { Knex } from 'knex';
import { AppError } from '../errors/app-error.js';
import type { KeyActor } from '../auth/actors.js';
import { detailsDigest, isTombstone, legacyHash } from './audit-chain.js';
import { appendAuditEvent, rowToEvent, type AuditEvent } from './audit-log.js';
import { entriesBetween, seqBoundsOf } from './audit-store.js';
import { verifyAuditChain } from './audit-verify.js';

export const EXPORT_FORMAT = 'loyalty-vault/audit-export/v2';
const EXPORT_FORMAT_V1 = 'loyalty-vault/audit-export/v1';
const EXPORT_TYP = 'loyalty-vault-audit-export+jws';

export interface AuditExportDocument {
  readonly format: typeof EXPORT_FORMAT;
  readonly exportedAt: string;
  /** Inclusive start and exclusive end of `occurredAt`. */
  readonly from: string;
  readonly to: string;
  readonly signingKey: { readonly purpose: 'audit-signing'; readonly version: number; readonly kid: string };
  /** The vault's own check of the whole trail (MACs under the audit-chain key) when it exported. */
  readonly chain:
    | { readonly ok: true; readonly entries: number; readonly headSeq: number; readonly headHash: string }
    | { readonly ok: false; readonly finding: string };
  readonly entries: readonly AuditEvent[];
}

export interface AuditExport {
  /** The file's bytes (JSON). */
  readonly document: string;
  /** Detached compact JWS: `header..signature`. */
  readonly detachedJws: string;
  readonly keyVersion: number;
  readonly publicKeyPem: string;
  readonly entries: number;
}

export async function publicKeyThumbprint(publicKey: KeyObject): Promise<string> {
  return calculateJwkThumbprint(publicKey.export({ format: 'jwk' }) as JWK, 'sha256');
}

export interface AuditSigner {
  readonly version: number;
  readonly kid: string;
  readonly publicKeyPem: string;
  readonly privateKey: KeyObject;
}

/**
 * Where the export and the checkpoint get their signing key: the key ring provides it
 * (src/keys/audit-signer.ts). Called only once the request is known to be valid.
 */
export type AuditSignerSource = () => Promise<AuditSigner>;

export async function exportAudit(
  knex: Knex,
  signerSource: AuditSignerSource,
  range: { from: Date; to: Date },
  actor: KeyActor,
  now = new Date(),
): Promise<AuditExport> {
  if (!(range.from.getTime() < range.to.getTime())) {
    const error = new AppError('AUDIT_EXPORT_INVALID', { detail: '--from must be before --to.' });
    await knex.transaction((trx) =>
      appendAuditEvent(
        trx,
        {
          ...actor,
          action: 'audit.exported',
          outcome: 'denied',
          resource: `audit:${range.from.toISOString()}/${range.to.toISOString()}`,
          details: { code: error.code, reason: error.detail ?? error.title },
        },
        now,
      ),
    );
    throw error;
  }
  const signer = await signerSource();
  const verdict = await verifyAuditChain(knex);
  // A contiguous run of the chain (instances' clocks may differ slightly, `seq` never does): from the
  // first entry at or after `from` to the last one before `to`.
  const bounds = await seqBoundsOf(knex, range);
  const rows =
    bounds.first === null || bounds.last === null
      ? []
      : await entriesBetween(knex, Number(bounds.first), Number(bounds.last));
  const doc: AuditExportDocument = {
    format: EXPORT_FORMAT,
    exportedAt: now.toISOString(),
    from: range.from.toISOString(),
    to: range.to.toISOString(),
    signingKey: { purpose: 'audit-signing', version: signer.version, kid: signer.kid },
    chain: verdict.ok
      ? { ok: true, entries: verdict.checked, headSeq: verdict.headSeq, headHash: verdict.headHash }
      : { ok: false, finding: verdict.reason },
    entries: rows.map(rowToEvent),
  };
  const document = `${JSON.stringify(doc, null, 2)}\n`;
  const jws = await new CompactSign(Buffer.from(document, 'utf8'))
    .setProtectedHeader({ alg: 'EdDSA', typ: EXPORT_TYP, kid: signer.kid })
    .sign(signer.privateKey);
  const [header, , signature] = jws.split('.');
  await knex.transaction((trx) =>
    appendAuditEvent(
      trx,
      {
        ...actor,
        action: 'audit.exported',
        outcome: verdict.ok ? 'success' : 'failure',
        resource: `audit:${doc.from}/${doc.to}`,
        details: {
          entries: doc.entries.length,
          // base64url, not hex: one hex digest in a hundred holds a Luhn-valid 13-digit run, which
          // the audit trail's PAN guard refuses (and a failed export must not be the price).
          sha256: createHash('sha256').update(document).digest('base64url'),
          signingKeyVersion: signer.version,
          kid: signer.kid,
          chainOk: verdict.ok,
        },
      },
      now,
    ),
  );
  return {
    document,
    detachedJws: `${header ?? ''}..${signature ?? ''}`,
    keyVersion: signer.version,
    publicKeyPem: signer.publicKeyPem,
    entries: doc.entries.length,
  };
}

export type ExportVerdict =
  | {
      readonly ok: true;
      readonly entries: number;
      readonly keyVersion: number;
      readonly from: string;
      readonly to: string;
    }
  | { readonly ok: false; readonly reason: string };

/**
 * Offline check of an export: the detached signature over the exact bytes with the given public key,
 * then every entry's hash and its link to the previous entry of the file.
 */
export async function verifyAuditExport(
  document: Buffer,
  detachedJws: string,
  publicKeyPem: string,
): Promise<ExportVerdict> {
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(publicKeyPem);
  } catch {
    return { ok: false, reason: 'the public key is not a PEM public key' };
  }
  const parts = detachedJws.trim().split('.');
  if (parts.length !== 3 || parts[1] !== '')
    return { ok: false, reason: 'the signature is not a detached compact JWS' };
  try {
    const verified = await compactVerify(
      `${parts[0] ?? ''}.${base64url.encode(document)}.${parts[2] ?? ''}`,
      publicKey,
      {
        algorithms: ['EdDSA'],
      },
    );
    if (verified.protectedHeader.typ !== EXPORT_TYP)
      return { ok: false, reason: 'the signature is not over an audit export' };
  } catch {
    return {
      ok: false,
      reason: 'the signature does not verify with this public key (the file or signature was changed)',
    };
  }
  let doc:
    | AuditExportDocument
    | ({ format: typeof EXPORT_FORMAT_V1; entries: AuditEvent[] } & Omit<AuditExportDocument, 'format' | 'chain'>);
  try {
    doc = JSON.parse(document.toString('utf8')) as typeof doc;
  } catch {
    return { ok: false, reason: 'the file is not JSON' };
  }
  const problem =
    doc.format === EXPORT_FORMAT
      ? (checkKeyedEntries(doc.entries) ??
        (doc.chain.ok ? undefined : `the vault found the trail broken when it exported: ${doc.chain.finding}`))
      : doc.format === EXPORT_FORMAT_V1
        ? checkPlainEntries(doc.entries)
        : 'unknown export format';
  if (problem !== undefined) return { ok: false, reason: problem };
  return { ok: true, entries: doc.entries.length, keyVersion: doc.signingKey.version, from: doc.from, to: doc.to };
}

/** v2: links between consecutive entries, and each unredacted entry's details against its digest. */
function checkKeyedEntries(entries: readonly AuditEvent[]): string | undefined {
  let previous: AuditEvent | undefined;
  for (const entry of entries) {
    if (previous !== undefined && (entry.seq !== previous.seq + 1 || entry.prevHash !== previous.hash)) {
      return `entry ${entry.seq} does not link to entry ${previous.seq}`;
    }
    if (entry.detailsSalt === null) {
      if (!isTombstone(entry.details)) return `entry ${entry.seq} has no salt but is not a redaction tombstone`;
    } else if (detailsDigest(entry.detailsSalt, entry.details) !== entry.detailsDigest) {
      return `entry ${entry.seq} details do not match their digest`;
    }
    previous = entry;
  }
  return undefined;
}

/** v1: the plain SHA-256 chain of exports made before the keyed chain. */
function checkPlainEntries(entries: readonly AuditEvent[]): string | undefined {
  let previous: AuditEvent | undefined;
  for (const entry of entries) {
    const { hash, ...body } = entry;
    if (legacyHash(body) !== hash) return `entry ${entry.seq} does not match its hash`;
    if (previous !== undefined && (entry.seq !== previous.seq + 1 || entry.prevHash !== previous.hash)) {
      return `entry ${entry.seq} does not link to entry ${previous.seq}`;
    }
    previous = entry;
  }
  return undefined;
}
