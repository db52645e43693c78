#!/usr/bin/env node
/**
 * The key-management CLI for key custodians and auditors: `npm run keys -- <command>` (or the
 * `loyalty-vault-keys` bin once built). Works against the same database and master key source as
 * the service, from the same environment variables, while the service keeps running.
 */
import fs from 'node:fs';
import { describeDatabase, loadConfig } from '../config/config.js';
import { openCliDatabase } from '../db/embedded-store.js';
import { migrateToLatest } from '../db/migrations.js';
import { encryptedFieldSets } from '../encrypted-field-sets.js';
import { KeyRing } from '../keys/key-ring.js';
import { loadMasterKey } from '../keys/master-key-source.js';
import { runCli } from './cli-args.js';
import { cliActor, runKeysCommand } from './keys-commands.js';
import { keysCommands, keysUsageFor } from './keys-usage.js';
import { UsageError } from './usage-error.js';
import { validateKeysArgs } from './keys-validate.js';
import { terminalConfirm } from './keys-requests.js';

/** Extra time beyond the key-ring refresh interval before an activation counts as seen everywhere. */
const PROPAGATION_MARGIN_MS = 2_000;

async function main(argv: readonly string[]): Promise<number> {
  // Answered from the usage alone, before the configuration, the master key or the data folder
  // (`--help` / `-h` anywhere is answered by runCli below).
  if (argv[0] === 'help') {
    process.stdout.write(keysUsageFor(argv.slice(1)));
    return 0;
  }
  const command = argv[0];
  if (command === undefined) throw new UsageError('a command is required');
  if (!keysCommands().has(command)) throw new UsageError(`unknown command ${command}`);
  // Every option and argument checked before anything is opened: a usage error creates nothing.
  const verdict = await validateKeysArgs(argv);
  if (verdict.code === 2) {
    process.stderr.write(verdict.message);
    return 2;
  }
  const config = loadConfig(process.env, { verifiesTokens: false });
  const masterKey = await loadMasterKey(config.masterKey, config.masterKeyPrevious);
  const database = await openCliDatabase(config, {
    command: `keys ${argv.slice(0, 2).join(' ')}`,
    notice: (line) => process.stderr.write(`keys: ${line}\n`),
  });
  let interrupted = false;
  const onSignal = (): void => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write('\nkeys: stopping after the batches in flight (Ctrl-C again to abort now)\n');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await migrateToLatest(database.knex);
    const actor = cliActor();
    const ring = new KeyRing(database.knex, masterKey.source, config.vault.keyRingRefreshMs);
    await ring.ensureInitialKeys(actor.origin);
    return await runKeysCommand(
      argv,
      {
        knex: database.knex,
        databaseKind: database.kind,
        databaseDescription: describeDatabase(config),
        masterKey: masterKey.source,
        ring,
        policy: {
          singleOperator: config.keys.singleOperator,
          production: config.nodeEnv === 'production',
          cryptoperiodDays: config.keys.cryptoperiodDays,
          propagationMs: config.vault.keyRingRefreshMs + PROPAGATION_MARGIN_MS,
        },
        // The client CA's "rows" are its certificates in force: retirement waits for them.
        registry: encryptedFieldSets,
        actor,
        externalClientCaPem:
          config.tls.clientCaFile === undefined ? undefined : fs.readFileSync(config.tls.clientCaFile, 'utf8'),
      },
      {
        stdout: process.stdout,
        stderr: process.stderr,
        isTTY: process.stderr.isTTY,
        interrupted: () => interrupted,
        confirm: process.stdin.isTTY ? terminalConfirm : undefined,
      },
    );
  } finally {
    await database.close();
  }
}

const argv = process.argv.slice(2);
process.exitCode = await runCli('keys', keysUsageFor(argv), argv, () => main(argv));
