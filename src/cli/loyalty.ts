/**
 * Loyalty operations against the service's database (the same configuration as the service):
 *
 *   npm run loyalty -- expire [--json]   expire lots past their date (idempotent, safe beside running
 *                                        instances and other expiry runs), forget idempotency keys past
 *                                        their retention
 *   npm run loyalty -- check [--json]    prove the ledger's invariants; exit 1 with a report otherwise
 *
 * Exit codes: 0 done / invariants hold, 1 invariants broken or the run failed, 2 bad usage.
 * On the embedded database, stop the service first: an embedded database belongs to one process.
 */
import { parseArgs } from 'node:util';
import type { Knex } from 'knex';
import { loadConfig } from '../config/config.js';
import { createDatabase } from '../db/database.js';
import { migrateToLatest } from '../db/migrations.js';
import { checkLedger } from '../loyalty/ledger-check.js';
import { LoyaltyService } from '../loyalty/loyalty-service.js';

export interface CliOutput {
  out(text: string): void;
  err(text: string): void;
}

const USAGE = 'usage: loyalty <expire|check> [--json]';

export async function runLoyaltyCli(argv: readonly string[], knex: Knex, io: CliOutput): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: { json: { type: 'boolean', default: false } },
      allowPositionals: true,
    });
  } catch (error) {
    io.err(`${error instanceof Error ? error.message : String(error)}\n${USAGE}\n`);
    return 2;
  }
  const [command, ...rest] = parsed.positionals;
  const json = parsed.values.json;
  if (rest.length > 0 || (command !== 'expire' && command !== 'check')) {
    io.err(`${USAGE}\n`);
    return 2;
  }
  if (command === 'expire') {
    const run = await new LoyaltyService(knex).expireDue();
    io.out(
      json
        ? `${JSON.stringify(run)}\n`
        : `expired ${run.points} points in ${run.lots} lots of ${run.shoppers} shoppers; ` +
            `forgot ${run.idempotencyKeysPurged} idempotency keys past retention\n`,
    );
    return 0;
  }
  const report = await checkLedger(knex);
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
  const config = loadConfig(process.env, { verifiesTokens: false });
  const database = createDatabase(config);
  const io: CliOutput = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };
  try {
    await migrateToLatest(database.knex);
    process.exitCode = await runLoyaltyCli(process.argv.slice(2), database.knex, io);
  } catch (error) {
    io.err(`loyalty: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  } finally {
    await database.close();
  }
}
