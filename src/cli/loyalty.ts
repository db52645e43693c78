/**
 * Loyalty operations against the service's database (the same configuration as the service):
 *
 *   npm run loyalty -- expire [--json]   expire lots past their date, release holds past their hold
 *                                        window (idempotent, safe beside running instances and other
 *                                        expiry runs), forget idempotency keys past their retention
 *   npm run loyalty -- check [--json]    prove the ledger's invariants; exit 1 with a report otherwise
 *   npm run loyalty -- retention --plan|--apply|--verify [--json]
 *                                        card-data retention (PCI DSS 3.2.1): what would be purged, or
 *                                        purge it, with the evidence (docs/data-protection.md); --verify
 *                                        checks the runs and purged cards against the audit trail
 *   npm run loyalty -- notify [--json]   send the `points.expiring` notices due (exactly once per lot and window)
 *   npm run loyalty -- liability [--as-of <date>] [--from <date>] [--format json|csv]
 *                                        the points liability from the ledger's history (cli/loyalty-liability.ts)
 *   npm run loyalty -- tiers [--json]    make the period-end tier reviews due now (once, whatever else runs them)
 *
 * Exit codes: 0 done / invariants hold, 1 invariants broken or the run failed, 2 bad usage.
 * On the embedded default it works through the running service's socket, or owns the data folder
 * while it runs (src/db/embedded-store.ts); `--help` and bad usage touch nothing.
 */
import os from 'node:os';
import type { Command } from 'commander';
import type { Knex } from 'knex';
import type { Actor } from '../auth/actors.js';
import { createCardsFeature } from '../cards/cards-feature.js';
import type { CardRetention, RetentionEvidence } from '../cards/retention-service.js';
import { loadConfig, type Config } from '../config/config.js';
import { cliLogger, loadConfiguredMasterKey, openCore, openKeyedCore } from '../core.js';
import { lastPaymentUseOfCards } from '../payments/payment-read-store.js';
import { checkLedger } from '../loyalty/ledger-check.js';
import { createLoyaltyLedger } from '../loyalty/loyalty-feature.js';
import type { LoyaltyService } from '../loyalty/loyalty-service.js';
import { cliCommand, cliProgram, DATABASE_ENV, isMain, onRun, runProgram, usageLine } from './cli-program.js';
import { UsageError } from './usage-error.js';
import { addLiabilityCommands, runFinanceCommand, type FinanceArgs } from './loyalty-finance.js';

export interface CliOutput {
  out(text: string): void;
  err(text: string): void;
}

export type LoyaltyArgs =
  | {
      readonly command: 'expire' | 'check' | 'tiers';
      readonly json: boolean;
    }
  | {
      readonly command: 'retention';
      readonly json: boolean;
      /** retention: plan (writes nothing), apply, or verify (the record against the audit trail; writes nothing). */
      readonly action: 'plan' | 'apply' | 'verify';
    }
  | FinanceArgs;

const COMMANDS = {
  expire: {
    description:
      'Expire lots past their date, release holds past their hold window and forget idempotency keys past ' +
      'their retention (idempotent, safe beside running instances and other expiry runs).',
    exitCodes: { 0: 'done', 1: 'the run failed', 2: 'bad usage: nothing opened' },
  },
  check: {
    description: "Prove the ledger's invariants; a report of every violation otherwise.",
    exitCodes: {
      0: 'the invariants hold',
      1: 'invariants broken (the report says which) or the run failed',
      2: 'bad usage: nothing opened',
    },
  },
  retention: {
    description:
      'Card-data retention (PCI DSS 3.2.1): --plan reports what would be purged, --apply purges the PAN ' +
      'ciphertext of cards unused for CARD_RETENTION_DAYS (audited), both with the evidence: counts and the ' +
      'last use of the oldest card still holding a PAN (docs/data-protection.md). --verify checks that every ' +
      'run has its intact audit entry and purge list and that no purged card holds a PAN again. Needs the master key.',
    exitCodes: {
      0: 'done (the evidence printed; --verify: no finding)',
      1: 'refused (RETENTION_NOT_CONFIGURED), the run failed, or --verify found forged run rows, an edited purge list or a purged PAN put back',
      2: 'bad usage: nothing opened',
    },
  },
  tiers: {
    description:
      'Make the period-end tier reviews due now: confirm or step down each due level by the programme policy ' +
      '(each review made once, safe beside running instances and other runs).',
    exitCodes: { 0: 'done', 1: 'the run failed', 2: 'bad usage: nothing opened' },
  },
} as const;

/** The loyalty CLI; `run` is given the parsed command line (the default opens the core and runs it). */
export function loyaltyProgram(run: (args: LoyaltyArgs) => Promise<number> | number = runOnCore): Command {
  const program = cliProgram({
    name: 'loyalty',
    invocation: 'npm run loyalty --',
    description:
      "Loyalty operations against the service's database, with the service's configuration. On the embedded " +
      "default it works through the running service's socket, or owns the data folder while it runs.",
    env: DATABASE_ENV,
    exitCodes: {
      0: 'done / invariants hold',
      1: 'invariants broken or the run failed',
      2: 'bad usage: nothing opened',
    },
  });
  for (const command of ['expire', 'check', 'tiers'] as const) {
    const sub = cliCommand(program, { name: command, ...COMMANDS[command], env: DATABASE_ENV });
    sub.option('--json', 'the result as one JSON line', false);
    onRun(sub, (self) => run({ command, json: self.opts<{ json: boolean }>().json }));
  }
  const retention = cliCommand(program, { name: 'retention', ...COMMANDS.retention, env: DATABASE_ENV });
  retention.option('--plan', 'report what an apply would purge; write nothing', false);
  retention.option('--apply', 'purge, record the run and audit it', false);
  retention.option(
    '--verify',
    'check the recorded runs and purged cards against the audit trail; write nothing',
    false,
  );
  retention.option('--json', 'the evidence as one JSON line', false);
  onRun(retention, (self) => {
    const opts = self.opts<{ plan: boolean; apply: boolean; verify: boolean; json: boolean }>();
    if ([opts.plan, opts.apply, opts.verify].filter(Boolean).length !== 1) {
      throw new UsageError('give exactly one of --plan, --apply and --verify');
    }
    const action = opts.apply ? 'apply' : opts.verify ? 'verify' : 'plan';
    return run({ command: 'retention', action, json: opts.json });
  });
  addLiabilityCommands(program, run);
  return program;
}

/** Throws a usage error (commander's) for anything but one command and --json. */
export function parseLoyaltyArgs(argv: readonly string[]): LoyaltyArgs {
  let args: LoyaltyArgs | undefined;
  loyaltyProgram((parsed) => {
    args = parsed;
    return 0;
  }).parse([...argv], { from: 'user' });
  if (args === undefined) throw new Error('a command is required');
  return args;
}

/** What the commands run on: the database (the invariant check) and the ledger's use cases. */
export interface LoyaltyCliDeps {
  readonly knex: Knex;
  readonly ledger: LoyaltyService;
  /** Card-data retention (on a keyed core: the run is audited); required by `retention`. */
  readonly retention?: CardRetention;
  /** Who runs `retention --apply` (default: the operator at this host). */
  readonly actor?: Actor;
}

export async function runLoyaltyCli(argv: readonly string[], deps: LoyaltyCliDeps, io: CliOutput): Promise<number> {
  let args: LoyaltyArgs;
  try {
    args = parseLoyaltyArgs(argv);
  } catch (error) {
    io.err(usageLine(loyaltyProgram(), argv, error instanceof Error ? error.message : String(error)));
    return 2;
  }
  return runLoyaltyCommand(args, deps, io);
}

async function runLoyaltyCommand(args: LoyaltyArgs, deps: LoyaltyCliDeps, io: CliOutput): Promise<number> {
  if (args.command === 'liability' || args.command === 'notify') return runFinanceCommand(args, deps.ledger, io);
  const { command, json } = args;
  if (command === 'retention') return runRetention(args, deps, io);
  if (command === 'expire') {
    const run = await deps.ledger.expireDue();
    const holds = await deps.ledger.releaseDueHolds();
    io.out(
      json
        ? `${JSON.stringify({ ...run, holds })}\n`
        : `expired ${run.points} points in ${run.lots} lots of ${run.shoppers} shoppers; ` +
            `forgot ${run.idempotencyKeysPurged} idempotency keys past retention; ` +
            `released ${holds.points} held points of ${holds.holds} payments past their hold window\n`,
    );
    return 0;
  }
  if (command === 'tiers') {
    const run = await deps.ledger.tiers.reviewDue();
    io.out(
      json
        ? `${JSON.stringify(run)}\n`
        : `reviewed the tiers of ${run.shoppers} shoppers: ${run.changes} changes, ${run.downgrades} downgrades\n`,
    );
    return 0;
  }
  const report = await checkLedger(deps.knex);
  if (json) {
    io.out(`${JSON.stringify(report)}\n`);
  } else {
    io.out(`checked ${report.accounts} accounts, ${report.lots} lots, ${report.entries} entries\n`);
    for (const v of report.violations) io.out(`VIOLATION ${v.check}: ${v.subject} ${JSON.stringify(v.detail)}\n`);
    io.out(report.ok ? 'ledger invariants hold\n' : `${report.violations.length} violation(s)\n`);
  }
  return report.ok ? 0 : 1;
}

async function runRetention(
  args: Extract<LoyaltyArgs, { command: 'retention' }>,
  deps: LoyaltyCliDeps,
  io: CliOutput,
): Promise<number> {
  if (deps.retention === undefined) throw new Error('retention needs the card retention service');
  if (args.action === 'verify') {
    const findings = await deps.retention.verify();
    if (args.json) io.out(`${JSON.stringify({ ok: findings.length === 0, findings })}\n`);
    else if (findings.length === 0)
      io.out('retention record verified: every run audited, no purged card holds a PAN again\n');
    else for (const f of findings) io.out(`finding: ${f.finding}\n`);
    return findings.length === 0 ? 0 : 1;
  }
  let evidence: RetentionEvidence;
  try {
    evidence =
      args.action === 'apply' ? await deps.retention.apply(deps.actor ?? operator()) : await deps.retention.plan();
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code !== 'RETENTION_NOT_CONFIGURED') throw error;
    io.err(`loyalty: refused: ${code}: set CARD_RETENTION_DAYS (docs/data-protection.md)\n`);
    return 1;
  }
  if (args.json) {
    io.out(`${JSON.stringify(evidence)}\n`);
    return 0;
  }
  const verb = evidence.mode === 'plan' ? 'would purge' : 'purged';
  io.out(
    `retention ${evidence.retentionDays} days (cards last used before ${evidence.cutoff}): ${verb} the PAN of ` +
      `${evidence.purged} card(s)${evidence.keepFingerprints ? '' : `, ${evidence.fingerprintsDropped} fingerprint(s) dropped`}\n` +
      `cards still holding a PAN: ${evidence.remainingWithPan}; oldest last use among them: ` +
      `${evidence.oldestRemainingLastUsedAt ?? 'none'}\n` +
      `cards ever purged: ${evidence.purgedTotal}${evidence.runKey === undefined ? '' : `; run ${evidence.runKey}`}\n`,
  );
  return 0;
}

/** The operator at this host, as the audit trail records a CLI run. */
function operator(): Actor {
  let user = 'unknown';
  try {
    user = os.userInfo().username;
  } catch {
    // no passwd entry (containers): keep 'unknown'
  }
  return { subject: process.env['KEYS_OPERATOR'] ?? user, origin: `cli:${os.hostname()}:${user}:pid${process.pid}` };
}

/** The command on the core opened from the configuration (after the command line has been checked). */
async function runOnCore(args: LoyaltyArgs): Promise<number> {
  const io: CliOutput = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };
  const config = loadConfig(process.env, { verifiesTokens: false });
  if (args.command === 'retention') return runRetentionOnCore(args, config, io);
  const core = await openCore(config, {
    database: {
      role: 'cli',
      cli: { command: `loyalty ${args.command}`, notice: (line) => io.err(`loyalty: ${line}\n`) },
    },
    logger: cliLogger(config),
  });
  try {
    const { knex } = core.database;
    return await runLoyaltyCommand(
      args,
      { knex, ledger: createLoyaltyLedger({ knex, clock: core.clock, logger: core.logger, finance: config.loyalty }) },
      io,
    );
  } finally {
    await core.close();
  }
}

/** Retention purges and audits: it opens the keyed core (the audit trail's chain key needs the master key). */
async function runRetentionOnCore(args: LoyaltyArgs, config: Config, io: CliOutput): Promise<number> {
  const core = await openKeyedCore(config, {
    database: {
      role: 'cli',
      cli: { command: `loyalty retention`, notice: (line) => io.err(`loyalty: ${line}\n`) },
    },
    logger: cliLogger(config),
    masterKey: await loadConfiguredMasterKey(config),
  });
  try {
    const { knex } = core.database;
    const { retention } = createCardsFeature({
      knex,
      keyRing: core.keyRing,
      config: config.vault,
      clock: core.clock,
      lastPaymentUse: lastPaymentUseOfCards,
    });
    const ledger = createLoyaltyLedger({ knex, clock: core.clock, logger: core.logger });
    return await runLoyaltyCommand(args, { knex, ledger, retention }, io);
  } finally {
    await core.close();
  }
}

if (isMain(import.meta.url)) process.exitCode = await runProgram(loyaltyProgram(), process.argv.slice(2));
