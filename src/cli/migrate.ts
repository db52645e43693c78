/**
 * Applies pending migrations (the service also does this at start-up), or with `--down` rolls back
 * the most recent batch.
 */
import { loadConfig, describeDatabase } from '../config/config.js';
import { createDatabase } from '../db/database.js';
import { migrateToLatest, migrationConfig } from '../db/migrations.js';

const config = loadConfig(process.env, { verifiesTokens: false });
const database = createDatabase(config);
try {
  if (process.argv.includes('--down')) {
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
} catch (error) {
  process.stderr.write(`migrate: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
} finally {
  await database.close();
}
