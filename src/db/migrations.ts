/**
 * Migrations live in `migrations/` as timestamped modules (`YYYYMMDDHHMMSS_name.ts`), append-only.
 * This source lists them from disk next to the running code, so the same list serves the compiled
 * service (`dist/migrations/*.js`) and the TypeScript test run (`migrations/*.ts`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Knex } from 'knex';
import { projectPath } from '../config/project-root.js';

const MIGRATION_FILE = /^\d{14}_[a-z0-9_]+\.(ts|js)$/;

interface MigrationModule {
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

export class DirectoryMigrationSource implements Knex.MigrationSource<string> {
  constructor(private readonly directory: string) {}

  getMigrations(): Promise<string[]> {
    const files = fs.readdirSync(this.directory).filter((f) => MIGRATION_FILE.test(f) && !f.endsWith('.d.ts'));
    return Promise.resolve(files.sort());
  }

  getMigrationName(file: string): string {
    // Stored without extension so the compiled and TypeScript runs share one history.
    return file.replace(/\.(ts|js)$/, '');
  }

  async getMigration(file: string): Promise<Knex.Migration> {
    const mod = (await import(pathToFileURL(path.join(this.directory, file)).href)) as MigrationModule;
    return { up: (knex: Knex) => mod.up(knex), down: (knex: Knex) => mod.down(knex) };
  }
}

export function migrationConfig(): Knex.MigratorConfig {
  return {
    migrationSource: new DirectoryMigrationSource(projectPath('migrations')),
    tableName: 'knex_migrations',
  };
}

export async function migrateToLatest(knex: Knex): Promise<string[]> {
  const [, applied] = (await knex.migrate.latest(migrationConfig())) as [number, string[]];
  return applied;
}
