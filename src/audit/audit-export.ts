/**
 * Signed audit exports for auditors (PCI DSS 10.3, 10.5): the entries of a period as JSON, plus a
 * detached JWS (RFC 7515 appendix F) over the file's exact bytes, signed by the active `audit-signing`
 * key (Ed25519). The auditor verifies offline with only that key's public half: the signature proves
 * the file is what the vault exported, and the hash chain inside proves no entry of the period was
 * edited, removed or reordered before the export.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { base64url, calculateJwkThumbprint, CompactSign, compactVerify, type JWK } from 'jose';
import type { Knex } from 'knex';
import { AppError } from '../errors/app-error.js';
import { ed25519PrivateKey, type KeyActor, type KeyRing } from '../keys/key-ring.js';
import { appendAuditEvent, hashEntry, rowToEvent, type AuditEvent } from './audit-log.js';

export const EXPORT_FORMAT = 'loyalty-vault/audit-export/v1';
const EXPORT_TYP = 'loyalty-vault-audit-export+jws';

export interface AuditExportDocument {
  readonly format: typeof EXPORT_FORMAT;
  readonly exportedAt: string;
  /** Inclusive start and exclusive end of `occurredAt`. */
  readonly from: string;
  readonly to: string;
  readonly signingKey: { readonly purpose: 'audit-signing'; readonly version: number; readonly kid: string };
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

export async function exportAudit(
  knex: Knex,
  ring: KeyRing,
  range: { from: Date; to: Date },
  actor: KeyActor,
  now = new Date(),
): Promise<AuditExport> {
  if (!(range.from.getTime() < range.to.getTime())) {
    throw new AppError('AUDIT_EXPORT_INVALID', { detail: '--from must be before --to.' });
  }
  const signing = await ring.active('audit-signing');
  const row = (await knex('data_keys').where({ purpose: 'audit-signing', version: signing.version }).first()) as {
    public_key_pem: string;
  };
  const seed = signing.key.export();
  const privateKey = ed25519PrivateKey(seed);
  seed.fill(0);
  const kid = await publicKeyThumbprint(createPublicKey(row.public_key_pem));
  // A contiguous run of the chain (instances' clocks may differ slightly, `seq` never does): from the
  // first entry at or after `from` to the last one before `to`.
  const bounds = (await knex('audit_events')
    .min({ first: knex.raw('case when occurred_at >= ? then seq end', [range.from]) })
    .max({ last: knex.raw('case when occurred_at < ? then seq end', [range.to]) })
    .first()) as { first: number | string | null; last: number | string | null };
  const rows =
    bounds.first === null || bounds.last === null
      ? []
      : ((await knex('audit_events')
          .whereBetween('seq', [Number(bounds.first), Number(bounds.last)])
          .orderBy('seq')) as Parameters<typeof rowToEvent>[0][]);
  const doc: AuditExportDocument = {
    format: EXPORT_FORMAT,
    exportedAt: now.toISOString(),
    from: range.from.toISOString(),
    to: range.to.toISOString(),
    signingKey: { purpose: 'audit-signing', version: signing.version, kid },
    entries: rows.map(rowToEvent),
  };
  const document = `${JSON.stringify(doc, null, 2)}\n`;
  const jws = await new CompactSign(Buffer.from(document, 'utf8'))
    .setProtectedHeader({ alg: 'EdDSA', typ: EXPORT_TYP, kid })
    .sign(privateKey);
  const [header, , signature] = jws.split('.');
  await knex.transaction((trx) =>
    appendAuditEvent(
      trx,
      {
        ...actor,
        action: 'audit.exported',
        outcome: 'success',
        resource: `audit:${doc.from}/${doc.to}`,
        details: {
          entries: doc.entries.length,
          // base64url, not hex: one hex digest in a hundred holds a Luhn-valid 13-digit run, which
          // the audit trail's PAN guard refuses (and a failed export must not be the price).
          sha256: createHash('sha256').update(document).digest('base64url'),
          signingKeyVersion: signing.version,
          kid,
        },
      },
      now,
    ),
  );
  return {
    document,
    detachedJws: `${header ?? ''}..${signature ?? ''}`,
    keyVersion: signing.version,
    publicKeyPem: row.public_key_pem,
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
  let doc: AuditExportDocument;
  try {
    doc = JSON.parse(document.toString('utf8')) as AuditExportDocument;
  } catch {
    return { ok: false, reason: 'the file is not JSON' };
  }
  if (doc.format !== EXPORT_FORMAT) return { ok: false, reason: 'unknown export format' };
  let previous: AuditEvent | undefined;
  for (const entry of doc.entries) {
    const { hash, ...body } = entry;
    if (hashEntry(body) !== hash) return { ok: false, reason: `entry ${entry.seq} does not match its hash` };
    if (previous !== undefined && (entry.seq !== previous.seq + 1 || entry.prevHash !== previous.hash)) {
      return { ok: false, reason: `entry ${entry.seq} does not link to entry ${previous.seq}` };
    }
    previous = entry;
  }
  return { ok: true, entries: doc.entries.length, keyVersion: doc.signingKey.version, from: doc.from, to: doc.to };
}
