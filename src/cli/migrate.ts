/**
 * Applies pending migrations (the service also does this at start-up), or with `--down` rolls back
 * the most recent batch. On the embedded default it goes through the running service's socket, or
 * owns the data folder while it runs (src/db/embedded-store.ts).
 */
import type { Command } from 'commander';
import { describeDatabase, loadConfig } from '../config/config.js';
import { cliLogger, openCore } from '../core.js';
import { migrateToLatest, migrationConfig } from '../db/migrations.js';
import { cliProgram, DATABASE_ENV, isMain, onRun, runProgram } from './cli-program.js';

export function migrateProgram(): Command {
  const program = cliProgram({
    name: 'migrate',
    invocation: 'npm run migrate --',
    description:
      'Applies every pending migration to the configured database (the service also does this at start-up), ' +
      'or with --down rolls back the most recent batch. On the embedded default it goes through the running ' +
      "service's socket, or owns the data folder while it runs.",
    env: DATABASE_ENV,
    exitCodes: { 0: 'done', 1: 'the migration failed (the message says why)', 2: 'bad usage: nothing opened' },
  });
  program.option('--down', 'roll back the most recent batch', false);
  return onRun(program, (command) => migrate(command.opts<{ down: boolean }>()));
}

async function migrate(values: { down: boolean }): Promise<number> {
  const config = loadConfig(process.env, { verifiesTokens: false });
  const core = await openCore(config, {
    database: {
      role: 'cli',
      cli: {
        command: values.down ? 'migrate --down' : 'migrate',
        notice: (line) => process.stderr.write(`migrate: ${line}\n`),
      },
    },
    logger: cliLogger(config),
    migrate: false, // what this command does, below
  });
  const { database } = core;
  try {
    if (values.down) {
      const [, rolledBack] = (await database.knex.migrate.rollback(migrationConfig())) as [number, string[]];
      process.stdout.write(
        `rolled back ${rolledBack.length} migration(s) on ${describeDatabase(config)}: ${rolledBack.join(', ') || '-'}\n`,
      );
    } else {
      const applied = await migrateToLatest(database.knex);
      process.stdout.write(
        `applied ${applied.length} migration(s) on ${describeDatabase(config)}: ${applied.join(', ') || 'already up to date'}\n`,
      );
    }
    return 0;
  } finally {
    await core.close();
  }
}

if (isMain(import.meta.url)) process.exitCode = await runProgram(migrateProgram(), process.argv.slice(2));
