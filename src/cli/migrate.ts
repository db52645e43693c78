/**
 * Applies pending migrations (the service also does this at start-up), or with `--down` rolls back
 * the most recent batch. On the embedded default it goes through the running service's socket, or
 * owns the data folder while it runs (src/db/embedded-store.ts).
 */
import { parseArgs } from 'node:util';
import { describeDatabase, loadConfig } from '../config/config.js';
import { cliLogger, openCore } from '../core.js';
import { migrateToLatest, migrationConfig } from '../db/migrations.js';
import { runCli } from './cli-args.js';

const MIGRATE_USAGE = `usage: npm run migrate [-- --down]

  (no option)   apply every pending migration to the configured database
  --down        roll back the most recent batch
  -h, --help    this text (touches nothing)
`;

async function migrate(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: { down: { type: 'boolean', default: false } },
    strict: true,
  });
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

const argv = process.argv.slice(2);
process.exitCode = await runCli('migrate', MIGRATE_USAGE, argv, () => migrate(argv));
