/**
 * Loyalty operations against the service's database (the same configuration as the service):
 *
 *   npm run loyalty -- expire [--json]   expire lots past their date, release holds past their hold
 *                                        window (idempotent, safe beside running instances and other
 *                                        expiry runs), forget idempotency keys past their retention
 *   npm run loyalty -- check [--json]    prove the ledger's invariants; exit 1 with a report otherwise
 *
 * Exit codes: 0 done / invariants hold, 1 invariants broken or the run failed, 2 bad usage.
 * On the embedded default it works through the running service's socket, or owns the data folder
 * while it runs (src/db/embedded-store.ts); `--help` and bad usage touch nothing.
 */
import type { Command } from 'commander';
import type { Knex } from 'knex';
import { loadConfig } from '../config/config.js';
import { cliLogger, openCore } from '../core.js';
import { checkLedger } from '../loyalty/ledger-check.js';
import { createLoyaltyLedger } from '../loyalty/loyalty-feature.js';
import type { LoyaltyService } from '../loyalty/loyalty-service.js';
import { cliCommand, cliProgram, DATABASE_ENV, isMain, onRun, runProgram, usageLine } from './cli-program.js';

export interface CliOutput {
  out(text: string): void;
  err(text: string): void;
}

export interface LoyaltyArgs {
  readonly command: 'expire' | 'check';
  readonly json: boolean;
}

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
  for (const command of ['expire', 'check'] as const) {
    const sub = cliCommand(program, { name: command, ...COMMANDS[command], env: DATABASE_ENV });
    sub.option('--json', 'the result as one JSON line', false);
    onRun(sub, (self) => run({ command, json: self.opts<{ json: boolean }>().json }));
  }
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
  const { command, json } = args;
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

/** The command on the core opened from the configuration (after the command line has been checked). */
async function runOnCore(args: LoyaltyArgs): Promise<number> {
  const io: CliOutput = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };
  const config = loadConfig(process.env, { verifiesTokens: false });
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
      { knex, ledger: createLoyaltyLedger({ knex, clock: core.clock, logger: core.logger }) },
      io,
    );
  } finally {
    await core.close();
  }
}

if (isMain(import.meta.url)) process.exitCode = await runProgram(loyaltyProgram(), process.argv.slice(2));
