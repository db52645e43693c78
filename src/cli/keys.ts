#!/usr/bin/env node
/**
 * The key-management CLI for key custodians and auditors: `npm run keys -- <command>` (or the
 * `loyalty-vault-keys` bin: `npx loyalty-vault-keys`). Works against the same database and master key source as
 * the service, from the same environment variables, while the service keeps running.
 */
import fs from 'node:fs';
import type { Knex } from 'knex';
import { describeDatabase, loadConfig, type Config } from '../config/config.js';
import { cliLogger, loadConfiguredMasterKey, openKeyedCore, type KeyedCore } from '../core.js';
import { migrateToLatest } from '../db/migrations.js';
import { encryptedFieldSets } from '../encrypted-field-sets.js';
import type { KeyActor } from '../auth/actors.js';
import { isAppError, type AppError } from '../errors/app-error.js';
import type { LoadedMasterKey } from '../keys/master-key-source.js';
import type { TokenKeyCreated } from '../keys/master-key-sources/pkcs11.js';
import { parseHsmInit } from './keys-hsm.js';
import { EXIT_USAGE, isMain, runProgram } from './cli-program.js';
import { keysProgram } from './keys-program.js';
import { cliActor, runKeysCommand } from './keys-commands.js';
import type { KeysContext } from './keys-context.js';
import { remoteCommand, revealCommand } from './keys-shares.js';
import { keysCommands, keysUsageFor } from './keys-usage.js';
import { UsageError } from './usage-error.js';
import { validateKeysArgs } from './keys-validate.js';
import { terminalConfirm } from './keys-requests.js';

/** Extra time beyond the key-ring refresh interval before an activation counts as seen everywhere. */
const PROPAGATION_MARGIN_MS = 2_000;

async function main(argv: readonly string[]): Promise<number> {
  // Answered from the usage alone, before the configuration, the master key or the data folder
  // (`--help` / `-h` anywhere, and `help <command>`, are answered by the CLI layer: keys-program.ts).
  if (argv[0] === 'help') {
    process.stdout.write(keysUsageFor(argv.slice(1)));
    return 0;
  }
  const command = argv[0];
  if (command === undefined) throw new UsageError('a command is required');
  if (!keysCommands().has(command)) throw new UsageError(`unknown command ${command}`);
  // A custodian's own machine: no configuration, database or master key, only their files. (Before the
  // argument pass below, which runs the command code and would submit.)
  if (command === 'unseal' || command === 'seal') {
    return remoteCommand(command, argv.slice(1), { stdout: process.stdout, stderr: process.stderr });
  }
  if (command === 'shares' && argv[1] === 'reveal') {
    return revealCommand(argv.slice(2), (line) => void process.stdout.write(`${line}\n`));
  }
  // Every option and argument checked before anything is opened: a usage error creates nothing.
  const verdict = await validateKeysArgs(argv);
  if (verdict.code === 2) {
    process.stderr.write(verdict.message);
    return EXIT_USAGE;
  }
  const config = loadConfig(process.env, { verifiesTokens: false });
  const tokenKey = await createTokenKey(command, argv, config);
  // A refusal by the token (the label exists) is audited by the command like any other refusal: the
  // database is opened for it. Only when no audit trail can be opened is it reported unaudited.
  const core = await openKeysCore(argv, config, tokenKey).catch((error: unknown) => {
    if (tokenKey.refused === undefined) throw error;
    process.stderr.write(`keys: the refusal below could not be audited: ${(error as Error).message}\n`);
    throw tokenKey.refused;
  });
  return core === undefined ? 1 : runOnCore(argv, core, tokenKey);
}

interface TokenKey {
  /** Set when `hsm init` has just created the master key in the token: the command audits it. */
  readonly created: TokenKeyCreated | undefined;
  /** Set when the token refused `hsm init` (the label exists): the command throws it, audited. */
  readonly refused: AppError | undefined;
  /** Destroys that key again (the command did not end audited); with a database, unless in use. */
  undo(usedIn?: Knex): Promise<void>;
}

/**
 * `hsm init` creates the key in the token before the master key is loaded (it may be the very key the
 * configuration names); it is destroyed again unless the command ends audited (keys-hsm.ts).
 */
async function createTokenKey(command: string, argv: readonly string[], config: Config): Promise<TokenKey> {
  let created: TokenKeyCreated | undefined;
  let refused: AppError | undefined;
  if (command === 'hsm') {
    const label = parseHsmInit(
      argv.slice(1),
      config.masterKey.source === 'pkcs11' ? config.masterKey.keyLabel : undefined,
    );
    if (config.pkcs11 === undefined)
      throw new UsageError('hsm init needs PKCS11_MODULE, PKCS11_TOKEN_LABEL and PKCS11_PIN_FILE');
    const { createMasterKeyInToken } = await import('../keys/master-key-sources/pkcs11.js');
    try {
      created = await createMasterKeyInToken(config.pkcs11, label);
    } catch (error) {
      if (!isAppError(error) || error.code !== 'KEY_OPERATION_INVALID') throw error;
      refused = error;
    }
  }
  // With the database open, the undo first checks that nothing was wrapped under the new key (a first
  // installation naming it wraps the data keys in ensureInitialKeys below; another instance may too).
  const undo = async (usedIn?: Knex): Promise<void> => {
    if (created !== undefined && config.pkcs11 !== undefined) {
      const { destroyCreatedTokenKey } = await import('../keys/master-key-sources/pkcs11.js');
      const outcome = await destroyCreatedTokenKey(config.pkcs11, created, usedIn);
      const label = created.keyLabel;
      process.stderr.write(
        outcome.startsWith('kept')
          ? `keys: the key "${label}" could not be audited but is NOT destroyed (${outcome.slice('kept: '.length)}): ` +
              `it stays in the token; record key id ${created.keyId}, key check value ` +
              `${created.keyCheckValue} in the audit trail by hand\n`
          : `keys: the key "${label}" could not be audited: destroyed again\n`,
      );
    }
  };
  return { created, refused, undo };
}

/** The core with the master key; undefined (exit 1) when the shares source has no share files. */
async function openKeysCore(
  argv: readonly string[],
  config: Config,
  tokenKey: TokenKey,
): Promise<KeyedCore | undefined> {
  let masterKey: LoadedMasterKey;
  try {
    masterKey = await loadConfiguredMasterKey(config);
  } catch (error) {
    await tokenKey.undo();
    throw error;
  }
  const readiness = masterKey.source.readiness();
  if (!readiness.ready && readiness.code === 'VAULT_SEALED') {
    // The CLI never takes shares as arguments or values: M custodians each reveal theirs into a 0600
    // file for this run (docs/key-management.md, "The key CLI" under the shares source).
    process.stderr.write(
      "keys: the master key is in custodians' shares (MASTER_KEY_SOURCE=shares): set MASTER_KEY_SHARE_FILES to " +
        'the paths of M cleartext share files (keys shares reveal) for this command\n',
    );
    await tokenKey.undo();
    return undefined;
  }
  // Migrated in runOnCore, where a failure still lets the undo check the database for the key's use.
  return openKeyedCore(config, {
    database: {
      role: 'cli',
      cli: { command: `keys ${argv.slice(0, 2).join(' ')}`, notice: (line) => process.stderr.write(`keys: ${line}\n`) },
    },
    logger: cliLogger(config),
    masterKey,
    migrate: false,
    onOpenFailure: () => tokenKey.undo(),
  });
}

async function runOnCore(argv: readonly string[], core: KeyedCore, tokenKey: TokenKey): Promise<number> {
  let interrupted = false;
  const onSignal = (): void => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write('\nkeys: stopping after the batches in flight (Ctrl-C again to abort now)\n');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let code = 1;
  try {
    await migrateToLatest(core.database.knex);
    const actor = cliActor();
    await core.keyRing.ensureInitialKeys(actor.origin);
    code = await runKeysCommand(argv, keysContext(core, actor, tokenKey), {
      stdout: process.stdout,
      stderr: process.stderr,
      isTTY: process.stderr.isTTY,
      interrupted: () => interrupted,
      confirm: process.stdin.isTTY ? terminalConfirm : undefined,
    });
    return code;
  } finally {
    if (code !== 0) await tokenKey.undo(core.database.knex);
    await core.close();
  }
}

/** What every key command is given, from the core. */
function keysContext(core: KeyedCore, actor: KeyActor, tokenKey: TokenKey): KeysContext {
  const { config } = core;
  return {
    knex: core.database.knex,
    databaseKind: core.database.kind,
    databaseDescription: describeDatabase(config),
    masterKey: core.masterKey.source,
    ring: core.keyRing,
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
    tokenKeyCreated: tokenKey.created,
    tokenKeyRefusal: tokenKey.refused,
  };
}

/** The key CLI: the layer answers --help and bad command words; main runs the command line as typed. */
export const keysCli = (): ReturnType<typeof keysProgram> => keysProgram(main);

if (isMain(import.meta.url)) process.exitCode = await runProgram(keysCli(), process.argv.slice(2));
