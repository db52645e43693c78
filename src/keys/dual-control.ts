/* eslint max-lines: ["error", 500] -- dual-control rules: requests, approvals, signatures and their verification, kept together */
/**
 * Dual control for key operations (PCI DSS 3.6.1.2, 3.7.6, 3.7.7): rotate, retire, destroy and the
 * registration of custodians run only with the signed approval of two distinct registered custodians,
 * once, and exactly as signed.
 *
 * - A request's payload is canonical JSON (id, operation, parameters including the key versions it
 *   names, description, requester, creation and expiry, and the master key id: the deployment it is
 *   valid in). Each custodian signs exactly those bytes (compact JWS, EdDSA) after `keys approve` has
 *   shown them the payload and its SHA-256 (key-approvals.ts); the private key never leaves their file.
 * - What runs is decided from the signed payload, never from the request's columns: inside the
 *   operation's transaction every approval is verified against its custodian's sealed public key, all
 *   approvals must sign the same bytes (digest compared), and the payload they sign must name this
 *   request, this deployment, the operation and the parameters the command was invoked with, and must
 *   not have expired by the database's clock (db/database-clock.ts: the CLI's clock is the operator's).
 *   The columns are an index for `request list`; a column that disagrees with the
 *   signed payload is reported as tampering (`KEY_REQUEST_TAMPERED`) and nothing runs.
 * - Once: the execution is appended to the sealed ledger (dual-control-ledger.ts) and audited as
 *   `key.request.executed` in the same transaction; a request the ledger or the audit trail knows as
 *   executed never runs again, whatever its `state` column says. A genesis runs only as the ledger's
 *   first execution, with no genesis and no execution in the audit trail (assertFirstGenesis), and a
 *   register whose genesis is not that one trusts nobody (custodian-provenance.ts).
 * - Every refusal is audited with its code in a transaction of its own (it commits although the
 *   command fails). The person running the CLI is recorded as `operator`; an approval as `custodian`.
 * - Single-operator mode (KEYS_SINGLE_OPERATOR, development only, refused in production) skips it,
 *   and only until the first two custodians' genesis: from then on it is refused (SINGLE_OPERATOR_REFUSED).
 */
import type { JWK } from 'jose';
import type { Knex } from 'knex';
import { appendAuditEvent, auditedWrite, canonicalJson } from '../audit/audit-log.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import { verifyRegister, type RegisterVerdict } from './custodian-provenance.js';
import { CUSTODIAN_ACKNOWLEDGEMENT, jwkFromX } from './custodians.js';
import { databaseNow } from '../db/database-clock.js';
import {
  appendExecution,
  assertFirstGenesis,
  auditRecordsExecution,
  auditRecordsGenesis,
  readLedger,
} from './dual-control-ledger.js';
import { anyCustodyRow } from './custody-store.js';
import {
  anyRequestRow,
  approvalsOf,
  executionRecorded,
  findRequest,
  insertRequest,
  lockRequest,
  markRequestExecuted,
  recentRequests,
  type RequestRow,
} from './dual-control-store.js';
import type { KeyActor } from './key-ring.js';
import type { MasterKeySource } from './master-key-types.js';
import {
  genesisCustodians,
  parsePayload,
  PAYLOAD_TYPE,
  safeKid,
  sha256B64,
  sha256Hex,
  unverifiedPayload,
  verifyApproval,
  type KeyOperation,
  type RequestParams,
  type RequestPayload,
} from './request-payload.js';

export type { KeyOperation, RequestParams, RequestPayload } from './request-payload.js';

/** How long custodians have to approve a request. */
const REQUEST_TTL_MS = 24 * 3600 * 1000;
const REQUIRED_APPROVALS = 2;

export interface KeyRequest {
  readonly id: string;
  readonly payload: RequestPayload;
  /** The exact text custodians sign, and its SHA-256 (hex). */
  readonly canonical: string;
  readonly digest: string;
}

/** What authorised an operation: recorded in its audit entry. */
export type Authorisation =
  | { readonly mode: 'single-operator' }
  | {
      readonly mode: 'dual-control';
      readonly requestId: string;
      readonly payloadSha256: string;
      readonly payload: RequestPayload;
      readonly approvals: readonly {
        readonly custodian: string;
        readonly keyThumbprint: string;
        readonly jws: string;
      }[];
    };

/** Who runs the command and under which master key: every dual-control call needs both. */
export interface DualControlContext {
  readonly actor: KeyActor;
  readonly masterKey: MasterKeySource;
}

/** Errors whose refusal is already in the audit trail (auditedWrite marks them; the CLI audits the others). */
export { refusalAudited } from '../audit/audit-log.js';

/** A write whose refusal is audited with its code in a transaction that commits (auditedWrite). */
export async function refusalsAudited<T>(
  knex: Knex,
  actor: KeyActor,
  what: { action: string; resource: string },
  write: (trx: Knex.Transaction) => Promise<T>,
  now: Date,
): Promise<T> {
  return auditedWrite(knex, actor, what, write, () => now);
}

function requestOf(canonical: string, payload: RequestPayload): KeyRequest {
  return { id: payload.id, payload, canonical, digest: sha256Hex(canonical) };
}

/**
 * Creates a request. Refused (audited) with CUSTODIANS_TOO_FEW while fewer than two custodians are
 * registered, except the genesis request, which is refused once custodians exist. Its creation and
 * expiry are read from the database's clock, not the CLI's (`now` only for tests of expiry).
 */
export async function createRequest(
  knex: Knex,
  input: { operation: KeyOperation; params: RequestParams; description: string },
  ctx: DualControlContext,
  at?: Date,
): Promise<KeyRequest> {
  const id = newId('krq');
  return refusalsAudited(
    knex,
    ctx.actor,
    { action: 'key.request.created', resource: `request:${id}` },
    async (trx) => {
      const now = at ?? (await databaseNow(trx));
      const register = await verifyRegister(trx, ctx.masterKey);
      if (register.tampered !== undefined) throw new AppError('DUAL_CONTROL_TAMPERED', { detail: register.tampered });
      const custodians = [...register.trusted.values()];
      if (input.operation === 'genesis') {
        const ledger = await readLedger(trx, ctx.masterKey);
        if (custodians.length > 0 || ledger.seq > 0) {
          throw new AppError('CUSTODIAN_INVALID', {
            detail: 'The first custodians are registered already: add one with keys request add-custodian.',
          });
        }
      } else if (custodians.length < REQUIRED_APPROVALS) {
        throw new AppError('CUSTODIANS_TOO_FEW', {
          detail: `${custodians.length} custodian(s) registered; dual control needs two. Register the first two with the genesis ceremony (keys request genesis).`,
        });
      }
      const expiresAt = new Date(now.getTime() + REQUEST_TTL_MS);
      const payload: RequestPayload = {
        type: PAYLOAD_TYPE,
        id,
        operation: input.operation,
        params: input.params,
        description: input.description,
        requestedBy: ctx.actor.actor,
        createdAt: now.toISOString(),
        expiresAt: expiresAt.toISOString(),
        deployment: ctx.masterKey.keyId,
        ...(input.operation === 'genesis' ? { acknowledgement: CUSTODIAN_ACKNOWLEDGEMENT } : {}),
      };
      const canonical = canonicalJson(payload);
      await insertRequest(trx, {
        id,
        operation: input.operation,
        params: JSON.stringify(input.params),
        payload: canonical,
        description: input.description,
        requestedBy: ctx.actor.actor,
        origin: ctx.actor.origin,
        createdAt: now,
        expiresAt,
      });
      await appendAuditEvent(
        trx,
        {
          ...ctx.actor,
          action: 'key.request.created',
          outcome: 'success',
          resource: `request:${id}`,
          details: { operation: input.operation, params: input.params, payloadSha256: sha256B64(canonical) },
        },
        now,
      );
      return requestOf(canonical, payload);
    },
    at ?? new Date(),
  );
}

/** What `request show` and `approve` present: the request as stored, and what is wrong with it. */
export interface RequestView {
  readonly request: KeyRequest | undefined;
  /** The stored payload text (shown even when it does not parse, so that tampering is visible). */
  readonly stored: string;
  readonly state: 'pending' | 'executed' | 'expired';
  readonly approvals: readonly { readonly signer: string; readonly keyThumbprint: string; readonly valid: boolean }[];
  /** Why this request would be refused: empty when it is consistent. */
  readonly problems: readonly string[];
}

/** Reads a request and checks it against what was signed, without changing anything. */
export async function inspectRequest(
  db: Knex | Knex.Transaction,
  id: string,
  masterKey: MasterKeySource,
  now = new Date(),
): Promise<RequestView> {
  const row = await findRequest(db, id);
  if (row === undefined) throw new AppError('KEY_REQUEST_NOT_FOUND');
  const problems: string[] = [];
  const payload = parsePayload(row.payload);
  if (payload === undefined) problems.push('the stored payload is not a canonical v2 request payload');
  else {
    if (payload.id !== row.id) problems.push(`the stored payload names request ${payload.id}`);
    if (payload.deployment !== masterKey.keyId) problems.push('the payload was made for another deployment');
    problems.push(...columnMismatches(row, payload));
  }
  const request = payload === undefined ? undefined : requestOf(row.payload, payload);
  const approvals: { signer: string; keyThumbprint: string; valid: boolean }[] = [];
  const register = registerOf(db, masterKey);
  for (const a of await approvalsOf(db, id)) {
    const signer = await signerOf(register, a.key_thumbprint, payload);
    const signed = signer === undefined ? undefined : await verifyApproval(a.jws, signer.jwk);
    const valid = signed !== undefined && signed === row.payload;
    if (signer === undefined) problems.push(`an approval is by key ${a.key_thumbprint}, which belongs to no custodian`);
    else if (!valid) problems.push(`the approval of ${signer.name} does not sign this payload`);
    approvals.push({ signer: signer?.name ?? 'unknown key', keyThumbprint: a.key_thumbprint, valid });
  }
  // For display and to refuse a pointless approval; execution verifies the sealed ledger itself.
  const executed = await executionRecorded(db, id);
  const state = executed
    ? 'executed'
    : request !== undefined && Date.parse(request.payload.expiresAt) <= now.getTime()
      ? 'expired'
      : 'pending';
  return { request, stored: row.payload, state, approvals, problems };
}

function columnMismatches(row: RequestRow, payload: RequestPayload): string[] {
  const params = typeof row.params === 'string' ? (JSON.parse(row.params) as RequestParams) : row.params;
  const out: string[] = [];
  if (row.operation !== payload.operation)
    out.push(`the operation column says ${row.operation}, the payload ${payload.operation}`);
  if (canonicalJson(params) !== canonicalJson(payload.params)) out.push('the params column differs from the payload');
  if (row.expires_at.toISOString() !== payload.expiresAt) out.push('the expiry column differs from the payload');
  return out;
}

/** The verified register, read at most once per check. */
export function registerOf(db: Knex | Knex.Transaction, masterKey: MasterKeySource): () => Promise<RegisterVerdict> {
  let verdict: Promise<RegisterVerdict> | undefined;
  return () => (verdict ??= verifyRegister(db, masterKey));
}

/**
 * The key that may sign for this request: a sealed custodian whose registration verifies, or for a genesis request one of the
 * two keys it names (they are not custodians until the ceremony completes).
 */
export async function signerOf(
  register: () => Promise<RegisterVerdict>,
  thumbprint: string,
  payload: RequestPayload | undefined,
): Promise<{ name: string; jwk: JWK; custodian: boolean } | undefined> {
  if (payload?.operation === 'genesis') {
    for (const who of genesisCustodians(payload.params)) {
      const key = await jwkFromX(who.x);
      if (key?.thumbprint === thumbprint && who.thumbprint === thumbprint) {
        return { name: who.name, jwk: key.jwk, custodian: false };
      }
    }
    return undefined;
  }
  const custodian = (await register()).trusted.get(thumbprint);
  return custodian === undefined ? undefined : { name: custodian.name, jwk: custodian.publicKeyJwk, custodian: true };
}

/**
 * Single-operator mode is for a development installation before it has custodians: once the sealed
 * ledger or the audit trail holds a genesis, or any custodian, request or master-key split row exists,
 * one person holding the master key (KEYS_SINGLE_OPERATOR with the development opt-in) must not
 * rotate, retire or split alone. A ledger that no longer verifies refuses as tampering (readLedger).
 * Each table is one more thing a database writer must wipe to reopen the mode; one who wipes the
 * ledger, the trail (with its chain keys) and every custody table rewrites history, which only a
 * signed checkpoint kept outside the database (scheduled, on WORM storage) reveals.
 */
async function refuseSingleOperatorAfterGenesis(trx: Knex.Transaction, masterKey: MasterKeySource): Promise<void> {
  const ledger = await readLedger(trx, masterKey);
  if (ledger.seq > 0 || (await auditRecordsGenesis(trx)) || (await anyCustodyRow(trx)) || (await anyRequestRow(trx))) {
    throw new AppError('SINGLE_OPERATOR_REFUSED', {
      detail:
        'Custodians are registered (their genesis, a custodian, a request or a split is on record): every key operation needs a request two ' +
        'custodians approved (--request <id>). Single-operator mode is only for an installation without custodians.',
    });
  }
}

export interface AuthoriseInput {
  readonly operation: KeyOperation;
  /** The parameters the command was invoked with: the signed payload must name exactly these. */
  readonly params: RequestParams;
  readonly requestId: string | undefined;
  readonly singleOperator: boolean;
  readonly production: boolean;
  readonly masterKey: MasterKeySource;
  /** The operator running the command, for the `key.request.executed` entry. */
  readonly actor: KeyActor;
}

/**
 * Inside the operation's transaction: verifies the approvals, checks that what they signed is what is
 * being run, and consumes the request (ledger + audit entry), or refuses. Records nothing on refusal
 * (the caller audits the refusal in a transaction of its own).
 */
export async function authorise(
  trx: Knex.Transaction,
  input: AuthoriseInput,
  now = new Date(),
): Promise<Authorisation> {
  if (input.requestId === undefined) {
    if (input.singleOperator && input.production) throw new AppError('SINGLE_OPERATOR_REFUSED');
    if (input.singleOperator) {
      await refuseSingleOperatorAfterGenesis(trx, input.masterKey);
      return { mode: 'single-operator' };
    }
    throw new AppError('DUAL_CONTROL_REQUIRED', {
      detail: 'Create a request (keys request …), have two custodians approve it, then pass --request <id>.',
    });
  }
  const requestId = input.requestId;
  const ledger = await readLedger(trx, input.masterKey);
  const row = await lockRequest(trx, requestId);
  if (row === undefined) throw new AppError('KEY_REQUEST_NOT_FOUND');
  if (ledger.executed.has(requestId)) throw new AppError('KEY_REQUEST_NOT_PENDING', { detail: 'The request has run.' });
  if (input.operation === 'genesis') await assertFirstGenesis(trx, ledger);
  if (await auditRecordsExecution(trx, requestId)) {
    throw new AppError('DUAL_CONTROL_TAMPERED', {
      detail: 'The audit trail records this request as executed but the ledger does not: it was rolled back.',
    });
  }
  const { canonical, approvals } = await verifiedApprovals(trx, input.masterKey, row);
  const payload = parsePayload(canonical);
  if (payload === undefined)
    throw new AppError('KEY_REQUEST_TAMPERED', { detail: 'The signed payload is not a v2 request.' });
  if (payload.id !== requestId) {
    throw new AppError('KEY_REQUEST_TAMPERED', { detail: `The approvals sign request ${payload.id}, not this one.` });
  }
  if (payload.deployment !== input.masterKey.keyId) {
    throw new AppError('KEY_REQUEST_TAMPERED', { detail: 'The approvals were made for another deployment.' });
  }
  const tampered = [
    ...(row.payload === canonical ? [] : ['the stored payload differs']),
    ...columnMismatches(row, payload),
  ];
  if (tampered.length > 0) {
    throw new AppError('KEY_REQUEST_TAMPERED', {
      detail: `The stored request differs from what the custodians signed (${tampered.join('; ')}).`,
    });
  }
  if (payload.operation !== input.operation || canonicalJson(payload.params) !== canonicalJson(input.params)) {
    throw new AppError('KEY_REQUEST_MISMATCH', {
      detail: `The custodians approved ${payload.operation} ${canonicalJson(payload.params)}.`,
    });
  }
  // The database's clock, not this process's: the operator running the CLI sets the latter.
  if (Date.parse(payload.expiresAt) <= (await databaseNow(trx)).getTime()) throw new AppError('KEY_REQUEST_EXPIRED');
  const distinct = new Set(approvals.map((a) => a.keyThumbprint));
  if (payload.operation === 'genesis') {
    const named = genesisCustodians(payload.params).map((c) => c.thumbprint);
    if (!named.every((t) => distinct.has(t))) {
      throw new AppError('DUAL_CONTROL_REQUIRED', { detail: 'Both custodians the genesis names must sign it.' });
    }
  } else if (distinct.size < REQUIRED_APPROVALS) {
    throw new AppError('DUAL_CONTROL_REQUIRED', {
      detail: `The request has ${distinct.size} valid approval(s) from distinct custodians; ${REQUIRED_APPROVALS} are required.`,
    });
  }
  const payloadSha256 = sha256B64(canonical);
  await appendExecution(trx, input.masterKey, ledger, { requestId, operation: payload.operation, payloadSha256 }, now);
  await markRequestExecuted(trx, requestId, now);
  await appendAuditEvent(
    trx,
    {
      ...input.actor,
      action: 'key.request.executed',
      outcome: 'success',
      resource: `request:${requestId}`,
      details: {
        operation: payload.operation,
        params: payload.params,
        payloadSha256,
        ledgerSeq: ledger.seq + 1,
        approvedBy: approvals.map((a) => ({ custodian: a.custodian, keyThumbprint: a.keyThumbprint })),
      },
    },
    now,
  );
  return { mode: 'dual-control', requestId, payloadSha256, payload, approvals };
}

/**
 * Every stored approval, verified against its signer's key; all must sign the same bytes. A forged
 * signature, one by a key that is no (sealed) custodian, or one over other bytes refuses the request.
 */
async function verifiedApprovals(
  trx: Knex.Transaction,
  masterKey: MasterKeySource,
  row: RequestRow,
): Promise<{ canonical: string; approvals: { custodian: string; keyThumbprint: string; jws: string }[] }> {
  const rows = await approvalsOf(trx, row.id);
  if (rows.length === 0) {
    throw new AppError('DUAL_CONTROL_REQUIRED', { detail: 'The request has no approvals; two are required.' });
  }
  // A genesis request's signers are named in the payload they sign; read it from the first JWS.
  const claimed = parsePayload(unverifiedPayload(rows[0]!.jws) ?? '');
  let canonical: string | undefined;
  const approvals: { custodian: string; keyThumbprint: string; jws: string }[] = [];
  const register = registerOf(trx, masterKey);
  if (claimed?.operation !== 'genesis') {
    const verdict = await register();
    if (verdict.tampered !== undefined) throw new AppError('DUAL_CONTROL_TAMPERED', { detail: verdict.tampered });
  }
  for (const a of rows) {
    const signer = await signerOf(register, a.key_thumbprint, claimed?.operation === 'genesis' ? claimed : undefined);
    const kid = safeKid(a.jws);
    const signed =
      signer === undefined || kid !== a.key_thumbprint ? undefined : await verifyApproval(a.jws, signer.jwk);
    if (signer === undefined || signed === undefined) {
      throw new AppError('APPROVAL_INVALID', {
        detail: `The approval recorded for key ${a.key_thumbprint} does not verify against a registered custodian: the request is refused.`,
      });
    }
    if (canonical !== undefined && sha256Hex(signed) !== sha256Hex(canonical)) {
      throw new AppError('KEY_REQUEST_TAMPERED', { detail: 'The approvals of this request sign different payloads.' });
    }
    canonical = signed;
    approvals.push({ custodian: signer.name, keyThumbprint: a.key_thumbprint, jws: a.jws });
  }
  return { canonical: canonical!, approvals };
}

/** Requests for `request list`, newest first. */
export async function listRequests(
  db: Knex,
  masterKey: MasterKeySource,
  options: { all: boolean },
  now = new Date(),
): Promise<(RequestView & { id: string; createdAt: Date })[]> {
  const rows = await recentRequests(db, options.all ? 1000 : 200);
  const views = [];
  for (const row of rows) {
    const view = await inspectRequest(db, row.id, masterKey, now);
    if (options.all || view.state === 'pending' || view.problems.length > 0)
      views.push({ ...view, id: row.id, createdAt: row.created_at });
  }
  return views;
}

/** The custodians' signatures, for the audit entry of the operation. */
export function authorisationDetails(authorisation: Authorisation): Record<string, unknown> {
  return authorisation.mode === 'single-operator'
    ? { authorisation: 'single-operator (development only)' }
    : {
        authorisation: 'dual-control',
        requestId: authorisation.requestId,
        payloadSha256: authorisation.payloadSha256,
        approvals: authorisation.approvals,
      };
}
