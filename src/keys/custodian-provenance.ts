/**
 * Provenance of the custodian register: a custodian is trusted only when the signatures that
 * registered them verify, back to the genesis ceremony.
 *
 * The seal (custodians.ts) stops a database writer. It does not stop someone who also holds the
 * master key, and the operator running the key CLI does (the CLI needs it). So, independently of the
 * master key, every custodian must be accounted for by signatures nobody can forge with one key:
 *
 * - a genesis custodian: the approvals stored for the request that registered them sign a genesis
 *   payload with that request's id, naming this name and this public key, and BOTH keys it names
 *   signed it (each with the key the payload itself names);
 * - a later custodian: the approvals stored for their add-custodian request sign a payload with that
 *   request's id naming this name and this key thumbprint, by two distinct custodians who are
 *   themselves trusted (computed to a fixed point, so the order of registration does not matter).
 *
 * The genesis itself is anchored outside the register's rows: it is trusted only when its request is
 * the FIRST execution of the sealed executed-request ledger (dual-control-ledger.ts) and the keyed
 * audit trail holds exactly one successful `key.custodian.genesis` entry, naming that request, whose
 * MAC verifies (`auditEntryIntact`). A database writer who empties the register and stages a genesis
 * of their own keys cannot make it ledger entry 1, nor remove or forge the first genesis entry. Any
 * mismatch, like more than one genesis on record, is tampering: nobody is trusted (`tampered` says
 * why; the callers refuse with DUAL_CONTROL_TAMPERED, audited). What a
 * holder of the master key and ONE custodian key can still do is replace the whole register with a
 * genesis of their own (two keys they hold); the real custodians see it at once (`custodian list`
 * shows other people or other thumbprints, and their approvals stop verifying) and an audit
 * checkpoint kept outside the database shows the rewritten trail.
 */
import type { JWK } from 'jose';
import type { Knex } from 'knex';
import { auditEntryIntact } from '../audit/audit-log.js';
import { successfulAuditEntries } from '../audit/audit-store.js';
import { isAppError } from '../errors/app-error.js';
import { verifyLedger } from './dual-control-ledger.js';
import { jwkFromX, listCustodians, type Custodian } from './custodians.js';
import { approvalsOfRequests } from './dual-control-store.js';
import type { MasterKeySource } from './master-key-types.js';
import { genesisCustodians, parsePayload, safeKid, verifyApproval, type RequestPayload } from './request-payload.js';

interface ApprovalRow {
  request_id: string;
  key_thumbprint: string;
  jws: string;
}

export interface RegisterVerdict {
  /** Sealed custodians whose registration signatures verify back to the genesis, by key thumbprint. */
  readonly trusted: ReadonlyMap<string, Custodian>;
  /** Sealed custodians whose registration does not verify, with the reason. */
  readonly untrusted: readonly { readonly custodian: Custodian; readonly reason: string }[];
  /** Set when the register's genesis does not match the ledger and the audit trail: nobody is trusted. */
  readonly tampered?: string;
}

/** The custodians that may approve: sealed, and registered by signatures that verify. */
export async function verifyRegister(
  db: Knex | Knex.Transaction,
  masterKey: MasterKeySource,
): Promise<RegisterVerdict> {
  const sealed = await listCustodians(db, masterKey);
  const requestIds = [...new Set(sealed.map((c) => c.authorisedBy).filter((id): id is string => id !== null))];
  const rows = requestIds.length === 0 ? [] : await approvalsOfRequests(db, requestIds);
  const byRequest = new Map<string, ApprovalRow[]>();
  for (const row of rows) byRequest.set(row.request_id, [...(byRequest.get(row.request_id) ?? []), row]);

  const trusted = new Map<string, Custodian>();
  const geneses = new Set<string>();
  for (const c of sealed) {
    if (c.authorisedBy !== null && (await genesisAccounts(c, byRequest.get(c.authorisedBy) ?? []))) {
      trusted.set(c.keyThumbprint, c);
      geneses.add(c.authorisedBy);
    }
  }
  const problem =
    geneses.size > 1
      ? 'more than one genesis is on record'
      : geneses.size === 1
        ? await genesisUnanchored(db, masterKey, [...geneses][0]!)
        : undefined;
  if (problem !== undefined) {
    return {
      trusted: new Map(),
      untrusted: sealed.map((custodian) => ({ custodian, reason: problem })),
      tampered: `The custodian register does not verify: ${problem}. Nobody is trusted until it is restored.`,
    };
  }
  let grew = true;
  while (grew) {
    grew = false;
    for (const c of sealed) {
      if (trusted.has(c.keyThumbprint) || c.authorisedBy === null) continue;
      if (await additionAccounts(c, byRequest.get(c.authorisedBy) ?? [], trusted)) {
        trusted.set(c.keyThumbprint, c);
        grew = true;
      }
    }
  }
  return {
    trusted,
    untrusted: sealed
      .filter((c) => !trusted.has(c.keyThumbprint))
      .map((custodian) => ({ custodian, reason: 'no two trusted custodians signed this registration' })),
  };
}

/**
 * Why the genesis `requestId` is not the one on record, or undefined when it is: ledger entry 1 (the
 * sealed ledger verifying) and the only successful, intact `key.custodian.genesis` audit entry.
 */
async function genesisUnanchored(
  db: Knex | Knex.Transaction,
  masterKey: MasterKeySource,
  requestId: string,
): Promise<string | undefined> {
  let first: { requestId: string; operation: string } | undefined;
  try {
    first = (await verifyLedger(db, masterKey)).first;
  } catch (error) {
    if (isAppError(error)) return `the executed-request ledger does not verify (${error.detail ?? error.code})`;
    throw error;
  }
  if (first?.operation !== 'genesis' || first.requestId !== requestId) {
    return `the genesis ${requestId} is not the first execution in the sealed ledger`;
  }
  const entries = await successfulAuditEntries(db, 'key.custodian.genesis');
  if (entries.length !== 1) return `the audit trail holds ${entries.length} genesis entries, not one`;
  const [entry] = entries;
  if (entry!.resource !== `request:${requestId}`) return 'the audit trail records another genesis';
  if (!(await auditEntryIntact(db, Number(entry!.seq)))) return 'the audit entry of the genesis does not verify';
  return undefined;
}

/** The payload `row` signs when its signature verifies with `jwk` and names `requestId`. */
async function signedPayload(row: ApprovalRow, jwk: JWK, requestId: string): Promise<RequestPayload | undefined> {
  if (safeKid(row.jws) !== row.key_thumbprint) return undefined;
  const text = await verifyApproval(row.jws, jwk);
  const payload = text === undefined ? undefined : parsePayload(text);
  return payload?.id === requestId ? payload : undefined;
}

async function genesisAccounts(c: Custodian, approvals: readonly ApprovalRow[]): Promise<boolean> {
  const requestId = c.authorisedBy!;
  // Which genesis: the one the approvals claim (every signature is then checked against it).
  for (const row of approvals) {
    const claimed = parsePayload(Buffer.from(row.jws.split('.')[1] ?? '', 'base64url').toString('utf8'));
    if (claimed?.operation !== 'genesis' || claimed.id !== requestId) continue;
    const named = genesisCustodians(claimed.params);
    const self = named.find((n) => n.thumbprint === c.keyThumbprint);
    if (self === undefined || self.name !== c.name || self.x !== c.publicKeyJwk.x) return false;
    for (const who of named) {
      const key = await jwkFromX(who.x);
      const signature = approvals.find((a) => a.key_thumbprint === who.thumbprint);
      if (key?.thumbprint !== who.thumbprint || signature === undefined) return false;
      const payload = await signedPayload(signature, key.jwk, requestId);
      if (payload === undefined || payload.operation !== 'genesis') return false;
    }
    return new Set(named.map((n) => n.thumbprint)).size === 2;
  }
  return false;
}

async function additionAccounts(
  c: Custodian,
  approvals: readonly ApprovalRow[],
  trusted: ReadonlyMap<string, Custodian>,
): Promise<boolean> {
  const signers = new Set<string>();
  for (const row of approvals) {
    const signer = trusted.get(row.key_thumbprint);
    if (signer === undefined || signer.keyThumbprint === c.keyThumbprint) continue;
    const payload = await signedPayload(row, signer.publicKeyJwk, c.authorisedBy!);
    if (
      payload?.operation === 'add-custodian' &&
      payload.params['keyThumbprint'] === c.keyThumbprint &&
      payload.params['name'] === c.name
    ) {
      signers.add(row.key_thumbprint);
    }
  }
  return signers.size >= 2;
}
