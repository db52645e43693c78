/* eslint max-lines: ["error", 520] -- the key CLI dispatcher and its list/inventory/status/rotate/retire/destroy commands; to split (issue 20) */
/**
 * The key-management commands (`npm run keys -- <command>`), given an open context so that tests run
 * them in-process against their own database. Every command that changes something prints what it
 * will do first; rotate, retire and destroy only plan unless given --apply.
 *
 * Exit codes: 0 done; 1 refused, failed or found a problem (overdue key, broken chain, failed rows);
 * 2 usage error.
 */
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { isAppError } from '../errors/app-error.js';
import { auditCommandRefusal } from '../keys/command-refusals.js';
import { currentGeneration, describeInstance, liveInstances } from '../keys/instance-heartbeat.js';
import { KeyManager, isPurpose } from '../keys/key-manager.js';
import type { KeyActor, KeyPurpose } from '../keys/key-ring.js';
import { checkKeyTriggers, type KeyCheckFinding } from '../keys/key-version-triggers.js';
import { describeKeyStateFinding, reconcileKeyStates } from '../keys/key-state-reconciliation.js';
import { reencrypt } from '../keys/reencrypt.js';
import { versionsIn } from '../keys/key-version-store.js';
import { listMasterKeys } from '../keys/master-key-store.js';
import { auditCommand, AUDIT_USAGE } from './keys-audit.js';
import { currentMasterKey } from './keys-master-info.js';
import { hsmCommand, HSM_USAGE } from './keys-hsm.js';
import { mtlsCommand, MTLS_USAGE } from './keys-mtls.js';
import { requestsCommand, REQUESTS_USAGE } from './keys-requests.js';
import { remoteCommand, rotateToSharesCommand, sharesCommand, SHARES_USAGE, TO_SHARES_OPTIONS } from './keys-shares.js';
import type { KeysContext, KeysIo } from './keys-context.js';
import { clientCaHooks } from '../mtls/client-ca-hooks.js';
import { UsageError } from './usage-error.js';
import {
  inventoryMarkdown,
  keyTable,
  masterKeyLines,
  progressPrinter,
  PURPOSE_DESCRIPTIONS,
  type InventoryDocument,
} from './keys-report.js';

// The context and I/O every key command receives (its own module: the sub-command files use it too).
export type { KeysContext, KeysIo } from './keys-context.js';

export const USAGE = `usage: npm run keys -- <command> [options]

  list [--json]                                   every key version, its state, cryptoperiod and rows
  inventory --out <file>                          PCI DSS 3.6.1.1 inventory: <file>.json and <file>.md
  status [--json]                                 cryptoperiods; exits 1 when a key is overdue or its
                                                  state contradicts the audit trail
  rotate --purpose <p> [--plan | --apply] [--request <id>] [--wait-timeout <seconds>]
                                                  p: pan-encryption, identifier-mac, audit-signing, mtls-client-ca,
                                                     subscription-secret, or master (rewrap every data
                                                     key and seal under the current master key)
  rotate --purpose master --to shares --threshold M (--custodian <name> ... | --all-custodians) --out <dir>
         [--plan | --apply] [--request <id>]     a fresh master key, every key re-wrapped under it, split
                                                  M-of-N among custodians; never written in clear
  reencrypt --purpose <p> [--batch-size N] [--lanes N] [--max-rows-per-second N]
  retire --purpose <p> --version N [--plan | --apply] [--request <id>] [--wait-timeout <seconds>]
  destroy --purpose <p> --version N [--plan | --apply] [--request <id>] [--wait-timeout <seconds>]   (irreversible)
                                                  --wait-timeout: how long to wait for live instances to load
                                                  the key-ring generation needed (default 605 s)
${REQUESTS_USAGE}
${AUDIT_USAGE}
${MTLS_USAGE}
${HSM_USAGE}
${SHARES_USAGE}`;

export async function runKeysCommand(argv: readonly string[], ctx: KeysContext, io: KeysIo): Promise<number> {
  const out = (text: string) => io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'list':
        return await list(rest, ctx, out);
      case 'inventory':
        return await inventory(rest, ctx, out);
      case 'status':
        return await status(rest, ctx, out);
      case 'rotate':
        return await rotate(rest, ctx, out);
      case 'reencrypt':
        return await runReencrypt(rest, ctx, io, out);
      case 'retire':
      case 'destroy':
        return await retireOrDestroy(command, rest, ctx, out);
      case 'custodian':
      case 'request':
      case 'approve':
        return await requestsCommand(command, rest, ctx, io, out);
      case 'audit':
        return await auditCommand(rest, ctx, out);
      case 'mtls':
        return await mtlsCommand(rest, ctx, out);
      case 'hsm':
        return await hsmCommand(rest, ctx, out);
      case 'shares':
        return await sharesCommand(rest, ctx, out);
      case 'unseal':
      case 'seal':
        // Normally answered by keys.ts before any database is opened; in-process (tests) the same.
        return await remoteCommand(command, rest, io);
      case undefined:
      case 'help':
      case '--help':
        out(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${command}`);
    }
  } catch (error) {
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true) {
      // One line: what is wrong and where the command's help is (the help is commander's: keys-program.ts).
      const words = argv.slice(0, 1).filter((w) => w !== undefined && !w.startsWith('-'));
      io.stderr.write(`keys: ${(error as Error).message} (usage: npm run keys -- ${[...words, '--help'].join(' ')})\n`);
      return 2;
    }
    if (isAppError(error)) {
      // Every refusal is in the audit trail (the custodian's own-machine commands have no database).
      const record =
        command === 'unseal' || command === 'seal'
          ? 'not-a-refusal'
          : await auditCommandRefusal(ctx.knex, ctx.actor, { name: command ?? '', args: rest }, error);
      io.stderr.write(`keys: refused: ${error.code}: ${error.detail ?? error.title}\n`);
      if (typeof record === 'object') io.stderr.write(`keys: the refusal could not be audited: ${record.unaudited}\n`);
      if (Object.keys(error.extensions).length > 0) io.stderr.write(`${JSON.stringify(error.extensions)}\n`);
      return 1;
    }
    throw error;
  }
}

function manager(ctx: KeysContext, waitTimeout?: string): KeyManager {
  return new KeyManager({
    knex: ctx.knex,
    ring: ctx.ring,
    masterKey: ctx.masterKey,
    registry: ctx.registry,
    clientCa: clientCaHooks,
    policy:
      waitTimeout === undefined
        ? ctx.policy
        : { ...ctx.policy, instanceWaitMs: positive('--wait-timeout', waitTimeout, 1) * 1000 },
    actor: ctx.actor,
  });
}

/** The live instances and the key-ring generation each holds (keys list / keys status). */
async function instanceLines(ctx: KeysContext): Promise<string[]> {
  const generation = await currentGeneration(ctx.knex);
  const live = await liveInstances(ctx.knex);
  return [
    `key-ring generation ${generation}; ${live.length} live instance(s)${live.length === 0 ? '' : ':'}`,
    ...live.map((i) => `  ${i.generation >= generation ? 'current' : 'behind '} ${describeInstance(i)}`),
  ];
}

function purposeOf(value: string | undefined, allowMaster = false): KeyPurpose {
  if (value === undefined) throw new UsageError('--purpose is required');
  if (!isPurpose(value)) {
    throw new UsageError(
      `--purpose must be pan-encryption, identifier-mac, audit-signing, mtls-client-ca or subscription-secret${allowMaster ? ' (or master)' : ''}`,
    );
  }
  return value;
}

function versionOf(value: string | undefined): number {
  if (value === undefined || !/^[1-9]\d{0,8}$/.test(value))
    throw new UsageError('--version must be a positive whole number');
  return Number(value);
}

function positive(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^[1-9]\d{0,8}$/.test(value)) throw new UsageError(`${name} must be a positive whole number`);
  return Number(value);
}

function modeOf(values: { plan?: boolean | undefined; apply?: boolean | undefined }): 'plan' | 'apply' {
  if (values.plan === true && values.apply === true) throw new UsageError('--plan and --apply are exclusive');
  return values.apply === true ? 'apply' : 'plan';
}

async function list(args: readonly string[], ctx: KeysContext, out: (t: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: { json: { type: 'boolean', default: false } },
    strict: true,
  });
  const keys = await manager(ctx).inventory();
  if (values.json) {
    // An array of key versions, as before (scripts read it); `status --json` carries the instances.
    out(JSON.stringify(keys, null, 2));
  } else {
    out(keyTable(keys));
    for (const line of masterKeyLines(await currentMasterKey(ctx))) out(line);
    for (const line of await instanceLines(ctx)) out(line);
  }
  return 0;
}

/** The inventory's line for `reference_digest_keys` (src/keys/reference-digests.ts). */
const REFERENCE_KEY_HOLDS =
  'the reference-digest HMAC-SHA256 key (card-shaped UUID ids stored as digests), wrapped (AES-256-GCM) by the master key; no cryptoperiod of its own (docs/key-management.md §1)';

async function inventory(args: readonly string[], ctx: KeysContext, out: (t: string) => void): Promise<number> {
  const { values } = parseArgs({ args: [...args], options: { out: { type: 'string' } }, strict: true });
  if (values.out === undefined) throw new UsageError('--out <file> is required');
  const base = values.out.replace(/\.(json|md)$/, '');
  const keys = await manager(ctx).inventory();
  const masters = await listMasterKeys(ctx.knex);
  const doc: InventoryDocument = {
    format: 'loyalty-vault/key-inventory/v1',
    generatedAt: new Date().toISOString(),
    database: ctx.databaseDescription,
    currentMasterKey: await currentMasterKey(ctx),
    keyStores: [
      {
        name: 'master key source',
        description: ctx.masterKey.description,
        holds:
          ctx.masterKey.location?.source === 'pkcs11'
            ? `master key ${ctx.masterKey.keyId} (KEK): generated in the token, sensitive and never extractable; wraps and unwraps inside the token`
            : `master key ${ctx.masterKey.keyId} (KEK)`,
      },
      {
        name: 'data_keys table',
        description: ctx.databaseDescription,
        holds:
          'data keys, wrapped (AES-256-GCM) by the master key; audit-signing public keys and client CA certificates in clear; client certificate records (no keys)',
      },
      {
        name: 'audit_chain_keys table',
        description: ctx.databaseDescription,
        holds:
          'the audit-chain HMAC-SHA256 key version(s), wrapped (AES-256-GCM) by the master key (docs/key-management.md §5)',
      },
      {
        name: 'reference_digest_keys table',
        description: ctx.databaseDescription,
        holds: REFERENCE_KEY_HOLDS,
      },
      {
        name: 'process memory',
        description: 'each service instance and the key CLI',
        holds: 'unwrapped data keys and the reference-digest key while running',
      },
    ],
    masterKeys: masters.map((m) => ({
      kekId: m.kek_id,
      description: m.description,
      state: m.state,
      createdAt: m.created_at.toISOString(),
    })),
    keys: keys.map((k) => ({
      ...k,
      purposeDescription: PURPOSE_DESCRIPTIONS[k.purpose] ?? k.purpose,
      keyStore: k.state === 'destroyed' ? 'none (destroyed)' : 'data_keys table, wrapped by the master key',
    })),
  };
  fs.writeFileSync(`${base}.json`, `${JSON.stringify(doc, null, 2)}\n`);
  fs.writeFileSync(`${base}.md`, inventoryMarkdown(doc));
  out(`wrote ${base}.json and ${base}.md (${keys.length} key versions, ${masters.length} master key(s))`);
  return 0;
}

async function status(args: readonly string[], ctx: KeysContext, out: (t: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: { json: { type: 'boolean', default: false } },
    strict: true,
  });
  const live = (await manager(ctx).inventory()).filter((k) => k.state === 'active' || k.state === 'published');
  const overdue = live.filter((k) => k.overdue);
  const staleWrap = (await manager(ctx).inventory()).filter(
    (k) => k.state !== 'destroyed' && k.kekId !== ctx.masterKey.keyId,
  );
  const keyChecks = [
    ...(await checkKeyTriggers(ctx.knex)),
    ...(await rowsUnderUnreadableVersions(ctx)),
    // A state the keyed audit trail contradicts (a retired version set back to published, …).
    ...(await reconcileKeyStates(ctx.knex, { referenceKey: ctx.masterKey })).map((f) => ({
      kind: 'key-state-tampered',
      detail: `${describeKeyStateFinding(f)}: changed outside the key CLI; investigate, and check the audit chain (keys audit verify)`,
    })),
  ];
  const ok = overdue.length === 0 && keyChecks.length === 0;
  if (values.json) {
    out(
      JSON.stringify(
        {
          ok,
          overdue,
          keyChecks,
          live,
          wrappedByOtherMasterKey: staleWrap.map((k) => `${k.purpose}:v${k.version}`),
          generation: await currentGeneration(ctx.knex),
          instances: await liveInstances(ctx.knex),
        },
        null,
        2,
      ),
    );
  } else {
    for (const k of live) {
      out(
        `${k.overdue ? 'OVERDUE' : 'ok     '} ${k.purpose} v${k.version} (${k.state}): cryptoperiod ${k.cryptoperiodDays} days, ` +
          `ends ${k.expiresAt?.toISOString().slice(0, 10) ?? '-'}, ${k.overdue ? `${-(k.daysLeft ?? 0)} day(s) past` : `${k.daysLeft ?? '-'} day(s) left`}` +
          (k.overdue ? ` — rotate now: npm run keys -- rotate --purpose ${k.purpose}` : ''),
      );
    }
    for (const k of staleWrap)
      out(
        `note    ${k.purpose} v${k.version} is wrapped by master key ${k.kekId}, not the current ${ctx.masterKey.keyId}`,
      );
    for (const f of keyChecks) out(`PROBLEM ${f.kind}: ${f.detail}`);
    for (const line of await instanceLines(ctx)) out(line);
  }
  return ok ? 0 : 1;
}

/** Rows recorded under a version that no instance can read (retired, destroyed or unknown). */
async function rowsUnderUnreadableVersions(ctx: KeysContext): Promise<KeyCheckFinding[]> {
  const findings: KeyCheckFinding[] = [];
  for (const set of ctx.registry) {
    const readable = new Set(await versionsIn(ctx.knex, set.purpose, ['published', 'active', 'decrypt-only']));
    for (const [version, count] of await set.countByVersion(ctx.knex)) {
      if (!readable.has(Number(version))) {
        findings.push({
          kind: 'rows-under-unreadable-version',
          detail: `${count} row(s) of ${set.name} under ${set.purpose} v${version}, which is retired, destroyed or unknown`,
        });
      }
    }
  }
  return findings;
}

async function rotate(args: readonly string[], ctx: KeysContext, out: (t: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: {
      purpose: { type: 'string' },
      plan: { type: 'boolean' },
      apply: { type: 'boolean' },
      request: { type: 'string' },
      'wait-timeout': { type: 'string' },
      ...TO_SHARES_OPTIONS,
    },
    strict: true,
  });
  if (values.purpose === 'master' && values.to !== undefined) return rotateToSharesCommand(values, ctx, out);
  if (values.to !== undefined) throw new UsageError('--to is for --purpose master only');
  if (values.purpose === 'master') return rotateMaster(values, ctx, out);
  const purpose = purposeOf(values.purpose, true);
  const keys = manager(ctx, values['wait-timeout']);
  const plan = await keys.planRotation(purpose);
  out(`rotation plan for ${purpose} (v${plan.fromVersion ?? '-'} → v${plan.toVersion}):`);
  plan.steps.forEach((s, i) => out(`  ${i + 1}. ${s}`));
  if (modeOf(values) === 'plan') {
    out('plan only: nothing changed. Run again with --apply to do it.');
    return 0;
  }
  const result = await keys.rotate(purpose, values.request, (m) => out(`- ${m}`));
  out(
    `done: ${purpose} v${result.version} is active${result.previous === undefined ? '' : `, v${result.previous} is decrypt-only`}`,
  );
  return 0;
}

async function rotateMaster(
  values: { plan?: boolean | undefined; apply?: boolean | undefined; request?: string | undefined },
  ctx: KeysContext,
  out: (t: string) => void,
): Promise<number> {
  const keys = manager(ctx);
  const plan = await keys.planMasterRotation();
  out(`master-key rotation plan (current master key ${plan.currentKekId}):`);
  plan.steps.forEach((s, i) => out(`  ${i + 1}. ${s}`));
  if (modeOf(values) === 'plan') {
    out('plan only: nothing changed. Run again with --apply to do it.');
    return 0;
  }
  const done = await keys.rotateMaster(values.request);
  out(`done: ${done.keys.length} data key(s) rewrapped by master key ${done.currentKekId}`);
  return 0;
}

async function runReencrypt(
  args: readonly string[],
  ctx: KeysContext,
  io: KeysIo,
  out: (t: string) => void,
): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: {
      purpose: { type: 'string' },
      'batch-size': { type: 'string' },
      lanes: { type: 'string' },
      'max-rows-per-second': { type: 'string' },
      json: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const purpose = purposeOf(values.purpose);
  if (purpose === 'mtls-client-ca') {
    throw new UsageError(
      'client certificates are not re-encrypted: reissue them (keys mtls issue) and revoke the old ones',
    );
  }
  const lanes = ctx.databaseKind === 'pglite' ? 1 : positive('--lanes', values.lanes, 2);
  const printer = progressPrinter(io.stderr, io.isTTY);
  const result = await reencrypt(ctx.knex, ctx.ring, {
    purpose,
    registry: ctx.registry,
    batchSize: positive('--batch-size', values['batch-size'], 2000),
    lanes,
    maxRowsPerSecond:
      values['max-rows-per-second'] === undefined
        ? undefined
        : positive('--max-rows-per-second', values['max-rows-per-second'], 1),
    propagationMs: ctx.policy.propagationMs,
    actor: ctx.actor,
    onProgress: printer,
    shouldStop: io.interrupted ?? (() => false),
  });
  if (io.isTTY) io.stderr.write('\n');
  if (values.json) {
    out(JSON.stringify(result, null, 2));
  } else {
    for (const f of result.fieldSets) {
      out(
        `${f.fieldSet}: ${f.moved} row(s) moved to v${result.targetVersion} in ${f.passes} pass(es)` +
          `${f.resumedFrom === undefined ? '' : ' (resumed)'}, ${f.remaining} remaining under older versions, ${f.failures.length} failed`,
      );
      for (const failure of f.failures) out(`  failed: ${failure.rowId} (v${failure.fromVersion}): ${failure.error}`);
    }
    out(
      result.stopped
        ? 'interrupted: progress is saved; run the same command again to resume'
        : result.ok
          ? `done in ${result.seconds.toFixed(1)} s: every row is under ${purpose} v${result.targetVersion}`
          : 'finished with failures: the rows above were not moved (see reencrypt_failures)',
    );
  }
  return result.ok ? 0 : 1;
}

async function retireOrDestroy(
  command: 'retire' | 'destroy',
  args: readonly string[],
  ctx: KeysContext,
  out: (t: string) => void,
): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: {
      purpose: { type: 'string' },
      version: { type: 'string' },
      plan: { type: 'boolean' },
      apply: { type: 'boolean' },
      request: { type: 'string' },
      'wait-timeout': { type: 'string' },
    },
    strict: true,
  });
  const purpose = purposeOf(values.purpose);
  const version = versionOf(values.version);
  const keys = manager(ctx, values['wait-timeout']);
  const plan = await keys.planRetire(purpose, version);
  if (command === 'retire') {
    out(`retire ${purpose} v${version} (now ${plan.state}):`);
    plan.steps.forEach((s, i) => out(`  ${i + 1}. ${s}`));
    out(
      `rows under v${version}: ${
        Object.entries(plan.rowsUnder)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ') || 'none (no field sets)'
      }`,
    );
    if (plan.refusal !== undefined) out(`would be refused: ${plan.refusal}`);
    for (const i of plan.instancesBehind) out(`waits for: ${describeInstance(i)}`);
  } else {
    out(`destroy ${purpose} v${version} (now ${plan.state}):`);
    out(
      '  1. wipe the wrapped key material from data_keys: IRREVERSIBLE, nothing protected by it can ever be read again',
    );
    out('  2. requires two custodian approvals (dual control), whatever the mode');
  }
  if (modeOf(values) === 'plan') {
    out('plan only: nothing changed. Run again with --apply to do it.');
    return 0;
  }
  if (command === 'retire') {
    await keys.retire(purpose, version, values.request, (m) => out(`- ${m}`));
    out(`done: ${purpose} v${version} is retired; the zero-row proof is in the audit trail`);
  } else {
    await keys.destroy(purpose, version, values.request, (m) => out(`- ${m}`));
    out(`done: ${purpose} v${version} is destroyed`);
  }
  return 0;
}

/** Who and where, for the audit trail: the operating-system user of this CLI on this host. */
export function cliActor(): KeyActor {
  let user = 'unknown';
  try {
    user = os.userInfo().username;
  } catch {
    // no passwd entry (containers): keep 'unknown'
  }
  return {
    actor: process.env['KEYS_OPERATOR'] ?? user,
    actorType: 'operator',
    origin: `cli:${os.hostname()}:${user}:pid${process.pid}`,
  };
}
