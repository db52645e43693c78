/**
 * Loyalty operations against the service's database (the same configuration as the service):
 *
 *   npm run loyalty -- expire [--json]   expire lots past their date (idempotent, safe beside running
 *                                        instances and other expiry runs), forget idempotency keys past
 *                                        their retention
 *   npm run loyalty -- check [--json]    prove the ledger's invariants; exit 1 with a report otherwise
 *
 * Exit codes: 0 done / invariants hold, 1 invariants broken or the run failed, 2 bad usage.
 * On the embedded default it works through the running service's socket, or owns the data folder
 * while it runs (src/db/embedded-store.ts); `--help` and bad usage touch nothing.
 */
import { parseArgs } from 'node:util';
import type { Knex } from 'knex';
import { loadConfig } from '../config/config.js';
import { cliLogger, openCore } from '../core.js';
import { checkLedger } from '../loyalty/ledger-check.js';
import { createLoyaltyLedger } from '../loyalty/loyalty-feature.js';
import type { LoyaltyService } from '../loyalty/loyalty-service.js';
import { runCli } from './cli-args.js';
import { UsageError } from './usage-error.js';

export interface CliOutput {
  out(text: string): void;
  err(text: string): void;
}

const USAGE = `usage: npm run loyalty -- <expire|check> [--json]

  expire [--json]   expire lots past their date, forget idempotency keys past their retention
  check [--json]    prove the ledger's invariants; exit 1 with a report otherwise
  -h, --help        this text (touches nothing)
`;

export interface LoyaltyArgs {
  readonly command: 'expire' | 'check';
  readonly json: boolean;
}

/** Throws a usage error (ERR_PARSE_ARGS_* or UsageError) for anything but one command and --json. */
export function parseLoyaltyArgs(argv: readonly string[]): LoyaltyArgs {
  const parsed = parseArgs({
    args: [...argv],
    options: { json: { type: 'boolean', default: false } },
    allowPositionals: true,
    strict: true,
  });
  const [command, ...rest] = parsed.positionals;
  if (rest.length > 0) throw new UsageError(`unexpected argument ${rest[0] ?? ''}`);
  if (command !== 'expire' && command !== 'check') {
    throw new UsageError(command === undefined ? 'a command is required' : `unknown command ${command}`);
  }
  return { command, json: parsed.values.json };
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
    io.err(`${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
    return 2;
  }
  const { command, json } = args;
  if (command === 'expire') {
    const run = await deps.ledger.expireDue();
    io.out(
      json
        ? `${JSON.stringify(run)}\n`
        : `expired ${run.points} points in ${run.lots} lots of ${run.shoppers} shoppers; ` +
            `forgot ${run.idempotencyKeysPurged} idempotency keys past retention\n`,
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

if (import.meta.url === `file://${process.argv[1] ?? ''}`) {
  const argv = process.argv.slice(2);
  const io: CliOutput = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };
  process.exitCode = await runCli('loyalty', USAGE, argv, async () => {
    const args = parseLoyaltyArgs(argv); // before anything is opened
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
      return await runLoyaltyCli(
        argv,
        { knex, ledger: createLoyaltyLedger({ knex, clock: core.clock, logger: core.logger }) },
        io,
      );
    } finally {
      await core.close();
    }
  });
}
