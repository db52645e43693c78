/* eslint max-lines: ["error", 460] -- the dual-control request sub-commands (request, approve, list, show, cancel) and their output */
/**
 * The dual-control commands of the key CLI: `custodian …`, `request …` and `approve`.
 *
 * A custodian signs only what they have been shown: `request show` prints the canonical payload with
 * its SHA-256, and `approve` prints the same and asks for confirmation on the terminal before signing
 * (`--yes` for scripts; with neither a terminal nor `--yes` it refuses). `--digest <sha256>` makes it
 * refuse unless the payload is the one whose digest the custodian received out of band (the ticket).
 *
 * Every refusal is audited with its code: the services audit their own, and any other refusal of
 * these commands (a request that does not exist, an unconfirmed approval) is audited by the key CLI's
 * catch-all (src/keys/command-refusals.ts).
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { canonicalJson } from '../audit/audit-log.js';
import { AppError } from '../errors/app-error.js';
import { completeGenesis, custodianParams, genesisParams, registerCustodian } from '../keys/custodian-registration.js';
import { verifyRegister } from '../keys/custodian-provenance.js';
import { CUSTODIAN_ACKNOWLEDGEMENT, listCustodianRecords } from '../keys/custodians.js';
import {
  createRequest,
  inspectRequest,
  listRequests,
  type DualControlContext,
  type KeyOperation,
  type KeyRequest,
  type RequestParams,
  type RequestView,
} from '../keys/dual-control.js';
import { approveRequest, previewApproval } from '../keys/key-approvals.js';
import { isPurpose, KeyManager } from '../keys/key-manager.js';
import type { KeyPurpose } from '../keys/key-ring.js';
import { splitRequestParams, toSharesRequest, TO_SHARES_OPTIONS } from './keys-shares.js';
import type { KeysContext, KeysIo } from './keys-context.js';
import { clientCaHooks } from '../mtls/client-ca-hooks.js';
import { UsageError } from './usage-error.js';

export const REQUESTS_USAGE = `  custodian list                                  the custodians (rows whose seal does not verify are flagged)
  request genesis --name <a> --public-key <a.pem> --name <b> --public-key <b.pem>
                                                  the first two custodians: both approve it, then custodian genesis
  custodian genesis --request <id>                registers the two custodians the approved genesis names
  request add-custodian --name <name> --public-key <ed25519.pem>
  custodian add --name <name> --public-key <ed25519.pem> --acknowledge --request <id>
  request <rotate|retire|destroy> --purpose <p> [--version N]   prints the request id to approve
  request rotate --purpose master --to shares --threshold M (--custodian <name> ... | --all-custodians)
                                                  rotation into a fresh key split among custodians
  request list [--all] [--json]                   pending requests: state, operation, expiry, approvals
  request show <id> [--json]                      the canonical payload custodians sign, and its SHA-256
  approve <request-id> --key <custodian-private-key.pem> [--yes] [--digest <sha256>]
                                                  shows the payload and its digest, asks, then signs`;

type Out = (text: string) => void;

const dual = (ctx: KeysContext): DualControlContext => ({ actor: ctx.actor, masterKey: ctx.masterKey });

/** Runs one of these commands; a refusal no service audited is audited by the key CLI's catch-all (`key.<command>.refused`). */
export async function requestsCommand(
  command: 'custodian' | 'request' | 'approve',
  args: readonly string[],
  ctx: KeysContext,
  io: KeysIo,
  out: Out,
): Promise<number> {
  if (command === 'custodian') return custodian(args, ctx, out);
  if (command === 'request') return request(args, ctx, out);
  return approve(args, ctx, io, out);
}

async function custodian(args: readonly string[], ctx: KeysContext, out: Out): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'list') {
    parseArgs({ args: rest, options: {}, strict: true });
    const register = await verifyRegister(ctx.knex, ctx.masterKey);
    for (const c of await listCustodianRecords(ctx.knex, ctx.masterKey)) {
      const untrusted = register.untrusted.find((u) => u.custodian.id === c.id);
      out(
        `${c.id}  ${c.name}  key ${c.keyThumbprint}  acknowledged ${c.acknowledgedAt.toISOString()}` +
          (!c.sealed
            ? '  NOT SEALED: not a custodian (written outside the CLI?)'
            : untrusted !== undefined
              ? `  UNVERIFIED: not a custodian (${untrusted.reason})`
              : `  registered by ${c.authorisedBy ?? '-'}`),
      );
    }
    return 0;
  }
  if (sub === 'genesis') {
    const { values } = parseArgs({ args: rest, options: { request: { type: 'string' } }, strict: true });
    if (values.request === undefined) throw new UsageError('custodian genesis --request <id>');
    out(`custodian responsibilities (PCI DSS 3.7.8), signed by both:\n  ${CUSTODIAN_ACKNOWLEDGEMENT}`);
    const registered = await completeGenesis(ctx.knex, values.request, ctx.policy.production, dual(ctx));
    for (const c of registered) out(`registered custodian ${c.name} (${c.id}), key ${c.keyThumbprint}`);
    out(`genesis ${values.request} done: both signatures are in the audit trail (key.custodian.genesis)`);
    return 0;
  }
  if (sub !== 'add') throw new UsageError('custodian add | custodian genesis | custodian list');
  const { values } = parseArgs({
    args: rest,
    options: {
      name: { type: 'string' },
      'public-key': { type: 'string' },
      acknowledge: { type: 'boolean', default: false },
      request: { type: 'string' },
    },
    strict: true,
  });
  if (values.name === undefined || values['public-key'] === undefined) {
    throw new UsageError('custodian add needs --name and --public-key');
  }
  out(`custodian responsibilities (PCI DSS 3.7.8):\n  ${CUSTODIAN_ACKNOWLEDGEMENT}`);
  const created = await registerCustodian(
    ctx.knex,
    {
      name: values.name,
      publicKeyPem: fs.readFileSync(values['public-key'], 'utf8'),
      acknowledged: values.acknowledge,
      requestId: values.request,
    },
    { singleOperator: ctx.policy.singleOperator, production: ctx.policy.production },
    dual(ctx),
  );
  out(`registered custodian ${created.name} (${created.id}), key ${created.keyThumbprint}; acknowledgement recorded`);
  return 0;
}

function purposeOf(value: string | undefined, allowMaster: boolean): KeyPurpose | 'master' {
  if (allowMaster && value === 'master') return 'master';
  if (value === undefined || !isPurpose(value)) {
    throw new UsageError(
      `--purpose must be pan-encryption, identifier-mac, audit-signing or mtls-client-ca${allowMaster ? ' (or master)' : ''}`,
    );
  }
  return value;
}

function versionOf(value: string | undefined): number {
  if (value === undefined || !/^[1-9]\d{0,8}$/.test(value))
    throw new UsageError('--version must be a positive whole number');
  return Number(value);
}

function manager(ctx: KeysContext): KeyManager {
  return new KeyManager({
    knex: ctx.knex,
    ring: ctx.ring,
    masterKey: ctx.masterKey,
    registry: ctx.registry,
    clientCa: clientCaHooks,
    policy: ctx.policy,
    actor: ctx.actor,
  });
}

async function request(args: readonly string[], ctx: KeysContext, out: Out): Promise<number> {
  const [operation, ...rest] = args;
  switch (operation) {
    case 'list':
      return listCommand(rest, ctx, out);
    case 'show':
      return showCommand(rest, ctx, out);
    case 'genesis': {
      const { values } = parseArgs({
        args: rest,
        options: { name: { type: 'string', multiple: true }, 'public-key': { type: 'string', multiple: true } },
        strict: true,
      });
      const [a, b] = values.name ?? [];
      const [pa, pb] = values['public-key'] ?? [];
      if (a === undefined || b === undefined || pa === undefined || pb === undefined || values.name?.length !== 2) {
        throw new UsageError('request genesis --name <a> --public-key <a.pem> --name <b> --public-key <b.pem>');
      }
      const params = await genesisParams(
        { name: a, publicKeyPem: fs.readFileSync(pa, 'utf8') },
        { name: b, publicKeyPem: fs.readFileSync(pb, 'utf8') },
      );
      return printRequest(
        ctx,
        out,
        'genesis',
        params,
        `Register ${a} (key ${String(params['firstKey'])}) and ${b} (key ${String(params['secondKey'])}) as the first two key custodians; each accepts the custodian's responsibilities by signing.`,
      );
    }
    case 'add-custodian': {
      const { values } = parseArgs({
        args: rest,
        options: { name: { type: 'string' }, 'public-key': { type: 'string' } },
        strict: true,
      });
      if (values.name === undefined || values['public-key'] === undefined) {
        throw new UsageError('request add-custodian --name <name> --public-key <ed25519.pem>');
      }
      const params = await custodianParams(values.name, fs.readFileSync(values['public-key'], 'utf8'));
      return printRequest(
        ctx,
        out,
        'add-custodian',
        params,
        `Register ${values.name} as a key custodian (Ed25519 key ${String(params['keyThumbprint'])}).`,
      );
    }
    case 'rotate':
    case 'retire':
    case 'destroy':
      return keyRequest(operation, rest, ctx, out);
    case 'split-master-key': {
      const { params, description } = await splitRequestParams(rest, ctx);
      return printRequest(ctx, out, 'split-master-key', params, description);
    }
    default:
      throw new UsageError('request genesis|add-custodian|rotate|retire|destroy|split-master-key|list|show');
  }
}

async function keyRequest(
  operation: 'rotate' | 'retire' | 'destroy',
  rest: string[],
  ctx: KeysContext,
  out: Out,
): Promise<number> {
  const { values } = parseArgs({
    args: rest,
    options: { purpose: { type: 'string' }, version: { type: 'string' }, ...TO_SHARES_OPTIONS },
    strict: true,
  });
  const keys = manager(ctx);
  const purpose = purposeOf(values.purpose, operation === 'rotate');
  if (values.to !== undefined && purpose !== 'master') throw new UsageError('--to is for --purpose master only');
  if (purpose === 'master' && values.to !== undefined) {
    const { params, description } = await toSharesRequest(values, ctx);
    return printRequest(ctx, out, 'rotate', params, description);
  }
  if (purpose === 'master') {
    const plan = await keys.planMasterRotation();
    return printRequest(ctx, out, 'rotate', { purpose: 'master' }, `Rotate the master key: ${plan.steps.join('; ')}`);
  }
  if (operation === 'rotate') {
    const plan = await keys.planRotation(purpose);
    // The request names the version it creates: once v(n+1) exists, it can never run again.
    return printRequest(
      ctx,
      out,
      operation,
      { purpose, toVersion: plan.toVersion },
      `Rotate ${purpose}: v${plan.fromVersion ?? '-'} → v${plan.toVersion}. ${plan.steps.join('; ')}`,
    );
  }
  const version = versionOf(values.version);
  const plan = await keys.planRetire(purpose, version);
  return printRequest(
    ctx,
    out,
    operation,
    { purpose, version },
    operation === 'retire'
      ? `Retire ${purpose} v${version} (now ${plan.state}) once a count proves no row uses it.`
      : `DESTROY ${purpose} v${version} (now ${plan.state}): wipe its wrapped material. Irreversible.`,
  );
}

async function printRequest(
  ctx: KeysContext,
  out: Out,
  operation: KeyOperation,
  params: RequestParams,
  description: string,
): Promise<number> {
  const created = await createRequest(ctx.knex, { operation, params, description }, dual(ctx));
  out(`request ${created.id} (expires ${created.payload.expiresAt})`);
  printPayload(created, out);
  out(`next: two custodians each run  npm run keys -- approve ${created.id} --key <their-private-key.pem>`);
  out(`then: ${nextStep(created)}`);
  return 0;
}

function nextStep(request: KeyRequest): string {
  const { operation, params } = request.payload;
  const id = request.id;
  if (operation === 'genesis') return `npm run keys -- custodian genesis --request ${id}`;
  if (operation === 'split-master-key') {
    return `npm run keys -- shares split --threshold ${String(params['threshold'])} <the same --custodian names> --out <dir> --request ${id}`;
  }
  if (operation === 'add-custodian') {
    return `npm run keys -- custodian add --name ${String(params['name'])} --public-key <pem> --acknowledge --request ${id}`;
  }
  if (params['to'] === 'shares') {
    return `npm run keys -- rotate --purpose master --to shares --threshold ${String(params['threshold'])} <the same --custodian names> --out <dir> --apply --request ${id}`;
  }
  const version = 'version' in params ? ` --version ${params['version']}` : '';
  return `npm run keys -- ${operation} --purpose ${String(params['purpose'])}${version} --apply --request ${id}`;
}

/** The payload, field by field, then the exact bytes signed and their SHA-256. */
function printPayload(request: KeyRequest, out: Out): void {
  const p = request.payload;
  const params = Object.entries(p.params)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
  out(
    [
      `  operation:    ${p.operation}`,
      `  parameters:   ${params}`,
      `  description:  ${p.description}`,
      `  requested by: ${p.requestedBy} at ${p.createdAt}`,
      `  expires:      ${p.expiresAt}`,
      `  deployment:   ${p.deployment} (master key id)`,
      ...(p.acknowledgement === undefined ? [] : [`  acknowledgement signed by each: ${p.acknowledgement}`]),
      'canonical payload (the exact bytes each custodian signs):',
      request.canonical,
      `SHA-256: ${request.digest}`,
    ].join('\n'),
  );
}

async function listCommand(args: string[], ctx: KeysContext, out: Out): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { all: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } },
    strict: true,
  });
  const views = await listRequests(ctx.knex, ctx.masterKey, { all: values.all });
  if (values.json) {
    out(
      JSON.stringify(
        views.map((v) => summary(v)),
        null,
        2,
      ),
    );
    return 0;
  }
  if (views.length === 0) out(values.all ? 'no requests' : 'no pending requests (--all lists every request)');
  for (const v of views) {
    const s = summary(v);
    out(
      `${s.id}  ${s.state.padEnd(8)}  ${s.operation} ${s.params}  expires ${s.expiresAt}  ` +
        `approvals ${s.validApprovals}/2 (${s.approvedBy.join(', ') || 'none'})` +
        (s.problems.length > 0 ? `  TAMPERED: ${s.problems.join('; ')}` : ''),
    );
  }
  return 0;
}

function summary(v: RequestView & { id: string }) {
  const p = v.request?.payload;
  return {
    id: v.id,
    state: v.state,
    operation: p?.operation ?? '?',
    params: p === undefined ? '?' : canonicalJson(p.params),
    expiresAt: p?.expiresAt ?? '?',
    digest: v.request?.digest ?? null,
    validApprovals: v.approvals.filter((a) => a.valid).length,
    approvedBy: v.approvals.map((a) => `${a.signer}${a.valid ? '' : ' (INVALID)'}`),
    problems: v.problems,
  };
}

async function showCommand(args: string[], ctx: KeysContext, out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { json: { type: 'boolean', default: false } },
    allowPositionals: true,
    strict: true,
  });
  const [id] = positionals;
  if (id === undefined || positionals.length !== 1) throw new UsageError('request show <id>');
  const view = await inspectRequest(ctx.knex, id, ctx.masterKey);
  if (values.json) {
    out(JSON.stringify({ ...summary({ ...view, id }), payload: view.stored }, null, 2));
    return view.problems.length === 0 ? 0 : 1;
  }
  out(`request ${id}: ${view.state}`);
  if (view.request !== undefined) printPayload(view.request, out);
  else out(`stored payload (NOT a valid request payload):\n${view.stored}`);
  for (const a of view.approvals) {
    out(
      `approved by ${a.signer} (key ${a.keyThumbprint}): ${a.valid ? 'signature verifies over this payload' : 'DOES NOT VERIFY'}`,
    );
  }
  if (view.approvals.length === 0) out('no approvals yet');
  for (const problem of view.problems) out(`TAMPERED: ${problem}`);
  return view.problems.length === 0 ? 0 : 1;
}

async function approve(args: readonly string[], ctx: KeysContext, io: KeysIo, out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...args],
    options: {
      key: { type: 'string' },
      yes: { type: 'boolean', default: false },
      digest: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  const [id] = positionals;
  if (id === undefined || positionals.length !== 1 || values.key === undefined)
    throw new UsageError('approve <request-id> --key <private-key.pem> [--yes] [--digest <sha256>]');
  const privateKeyPem = fs.readFileSync(values.key, 'utf8');
  const preview = await previewApproval(ctx.knex, id, privateKeyPem, dual(ctx));
  const request = preview.view.request!;
  out(`request ${id}, to be signed by ${preview.signer} (key ${preview.keyThumbprint}):`);
  printPayload(request, out);
  if (values.digest !== undefined && values.digest.toLowerCase() !== request.digest) {
    throw new AppError('KEY_REQUEST_MISMATCH', {
      detail: 'The payload is not the one whose SHA-256 was given with --digest: not signed.',
    });
  }
  if (!values.yes) {
    if (io.confirm === undefined) {
      throw new AppError('APPROVAL_NOT_CONFIRMED', {
        detail: 'No terminal to confirm on: read the payload above, then run again with --yes.',
      });
    }
    if (!(await io.confirm(`Sign this payload (SHA-256 ${request.digest.slice(0, 16)}…) as ${preview.signer}?`))) {
      throw new AppError('APPROVAL_NOT_CONFIRMED', { detail: 'The custodian did not confirm: nothing was signed.' });
    }
  }
  const result = await approveRequest(ctx.knex, id, privateKeyPem, request.digest, dual(ctx));
  out(
    `approved ${id} as ${result.custodian}; ${result.approvals} approval(s) recorded; signed SHA-256 ${result.digest}`,
  );
  return 0;
}

/** Asks on the controlling terminal; true only for an explicit "yes". */
export async function terminalConfirm(question: string): Promise<boolean> {
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return (await rl.question(`${question} Type "yes" to sign: `)).trim().toLowerCase() === 'yes';
  } finally {
    rl.close();
  }
}
