/**
 * The text custodians sign and how a signature over it is checked: the canonical request payload
 * (a leaf module shared by requests, approvals and custodian provenance).
 *
 * A payload is canonical JSON (keys sorted, no whitespace); `parsePayload` accepts only text that is
 * already in that form and has exactly the v2 fields, so two different texts never parse to one
 * request. Approvals are compact JWS (EdDSA) with `typ` loyalty-vault-key-approval+jws and `kid` the
 * signer's key thumbprint.
 */
import { createHash } from 'node:crypto';
import { compactVerify, decodeProtectedHeader, importJWK, type JWK } from 'jose';
import { canonicalJson } from '../audit/audit-log.js';

export type KeyOperation = 'rotate' | 'retire' | 'destroy' | 'add-custodian' | 'genesis' | 'split-master-key';
export type RequestParams = Readonly<Record<string, string | number>>;

export const OPERATIONS: readonly KeyOperation[] = [
  'rotate',
  'retire',
  'destroy',
  'add-custodian',
  'genesis',
  'split-master-key',
];
export const APPROVAL_TYP = 'loyalty-vault-key-approval+jws';
export const PAYLOAD_TYPE = 'loyalty-vault/key-request/v2';

/** The signed description of a request: what runs, and all that runs. */
export interface RequestPayload {
  readonly type: typeof PAYLOAD_TYPE;
  readonly id: string;
  readonly operation: KeyOperation;
  readonly params: RequestParams;
  readonly description: string;
  readonly requestedBy: string;
  readonly createdAt: string;
  readonly expiresAt: string;
  /** The master key id of the deployment: a request signed elsewhere never runs here. */
  readonly deployment: string;
  /** genesis only: the responsibilities both first custodians accept by signing. */
  readonly acknowledgement?: string;
}

export const sha256Hex = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex');
export const sha256B64 = (text: string): string => createHash('sha256').update(text, 'utf8').digest('base64url');

/** Parses and checks a payload's shape and canonical form; undefined when it is not one. */
export function parsePayload(text: string): RequestPayload | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || canonicalJson(value) !== text) return undefined;
  const p = value as Record<string, unknown>;
  const strings = ['id', 'description', 'requestedBy', 'createdAt', 'expiresAt', 'deployment'];
  if (p['type'] !== PAYLOAD_TYPE || !strings.every((k) => typeof p[k] === 'string')) return undefined;
  if (!OPERATIONS.includes(p['operation'] as KeyOperation)) return undefined;
  const params = p['params'];
  if (typeof params !== 'object' || params === null || Array.isArray(params)) return undefined;
  if (!Object.values(params).every((v) => typeof v === 'string' || typeof v === 'number')) return undefined;
  if (p['acknowledgement'] !== undefined && typeof p['acknowledgement'] !== 'string') return undefined;
  if (Number.isNaN(Date.parse(p['expiresAt'] as string))) return undefined;
  const allowed = new Set([...strings, 'type', 'operation', 'params', 'acknowledgement']);
  if (Object.keys(p).some((k) => !allowed.has(k))) return undefined;
  return value as RequestPayload;
}

/** The two people a genesis request names. */
export function genesisCustodians(params: RequestParams): { name: string; thumbprint: string; x: string }[] {
  return (['first', 'second'] as const).map((which) => ({
    name: String(params[`${which}Name`]),
    thumbprint: String(params[`${which}Key`]),
    x: String(params[`${which}PublicKey`]),
  }));
}

export function unverifiedPayload(jws: string): string | undefined {
  const part = jws.split('.')[1];
  return part === undefined ? undefined : Buffer.from(part, 'base64url').toString('utf8');
}

export function safeKid(jws: string): string | undefined {
  try {
    return decodeProtectedHeader(jws).kid;
  } catch {
    return undefined;
  }
}

/** The payload text `jws` signs when it is a valid approval by `jwk`; undefined otherwise. */
export async function verifyApproval(jws: string, jwk: JWK): Promise<string | undefined> {
  try {
    const key = await importJWK(jwk, 'EdDSA');
    const verified = await compactVerify(jws, key, { algorithms: ['EdDSA'] });
    return verified.protectedHeader.typ === APPROVAL_TYP ? new TextDecoder().decode(verified.payload) : undefined;
  } catch {
    return undefined;
  }
}
