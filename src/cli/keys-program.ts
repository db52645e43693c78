/**
 * The key CLI's commands as the CLI layer sees them (cli-program.ts): a description, the variables
 * each reads and its help, built from the usage entries of keys-commands.ts (USAGE). Every command is
 * pass-through: its own code parses its options strictly (keys-validate.ts runs that parse before
 * anything is opened), so the layer adds help and dispatch and changes nothing the commands do.
 */
import type { Command } from 'commander';
import { cliCommand, cliProgram, commandLine, DATABASE_ENV, onRun, passThrough } from './cli-program.js';
import { keysCommands, keysUsageEntries } from './keys-usage.js';
import { UsageError } from './usage-error.js';

const MASTER_KEY_ENV = ['MASTER_KEY_SOURCE', 'MASTER_KEY', 'MASTER_KEY_FILE', 'MASTER_KEY_PREVIOUS', 'KEYS_OPERATOR'];
const CRYPTOPERIODS = [
  'CRYPTOPERIOD_DAYS_PAN_ENCRYPTION',
  'CRYPTOPERIOD_DAYS_IDENTIFIER_MAC',
  'CRYPTOPERIOD_DAYS_AUDIT_SIGNING',
  'CRYPTOPERIOD_DAYS_MTLS_CLIENT_CA',
  'CRYPTOPERIOD_DAYS_SUBSCRIPTION_SECRET',
];
const DUAL_CONTROL = ['KEYS_SINGLE_OPERATOR', 'KEY_RING_REFRESH_MS'];
const PKCS11 = ['PKCS11_MODULE', 'PKCS11_TOKEN_LABEL', 'PKCS11_KEY_LABEL', 'PKCS11_PIN_FILE'];
const SHARES = ['MASTER_KEY_SHARES_KEY_ID', 'MASTER_KEY_SHARE_FILES'];

const EXIT_CODES = {
  0: 'done',
  1: 'refused (a stable code and the reason), failed, or found a problem (overdue key, broken chain, failed rows)',
  2: 'bad usage: nothing opened, nothing created',
  130: 'interrupted twice (Ctrl-C): stopped at once',
};

/** Each command word: what it does and the variables it reads beyond the database and the master key. */
const COMMANDS: Record<
  string,
  { readonly description: string; readonly env?: readonly string[]; readonly local?: true }
> = {
  list: { description: 'Every key version: its state, cryptoperiod and rows.', env: CRYPTOPERIODS },
  inventory: { description: 'The PCI DSS 3.6.1.1 key inventory: <file>.json and <file>.md.', env: CRYPTOPERIODS },
  status: {
    description:
      'Cryptoperiods and live instances; exits 1 when a key is overdue or its state contradicts the audit trail.',
    env: CRYPTOPERIODS,
  },
  rotate: {
    description:
      "A new version of a purpose's data key, or (--purpose master) every data key rewrapped under the current " +
      'master key. Only plans unless given --apply; dual control unless KEYS_SINGLE_OPERATOR.',
    env: DUAL_CONTROL,
  },
  reencrypt: { description: "Re-encrypts a purpose's rows under its active key version, in batches." },
  retire: { description: 'Retires a key version. Only plans unless given --apply.', env: DUAL_CONTROL },
  destroy: {
    description: 'Destroys a key version (irreversible). Only plans unless given --apply.',
    env: DUAL_CONTROL,
  },
  custodian: { description: 'Key custodians: list, genesis, add.', env: DUAL_CONTROL },
  request: {
    description: 'Dual-control requests: open one (key operations, custodians, the master-key split), list, show.',
    env: DUAL_CONTROL,
  },
  approve: { description: "A custodian's approval of a request: shows its payload and digest, asks, then signs." },
  audit: { description: 'The audit trail: verify, checkpoint, export, verify-export, public-key, redact.' },
  mtls: {
    description: 'The client CA and client certificates: init-ca, issue, register, list, revoke, revocations verify.',
    env: ['TLS_CLIENT_CA', 'MTLS_REVOCATION_CHECK_MS'],
  },
  hsm: { description: 'Creates the master key in the PKCS#11 token (hsm init).', env: PKCS11 },
  shares: {
    description: "The master key in custodians' shares: split, status, and (on a custodian's machine) reveal.",
    env: SHARES,
  },
  unseal: {
    description:
      "Submits this custodian's share to each sealed instance. Runs on the custodian's machine: no configuration, " +
      'database or master key, only their files.',
    local: true,
  },
  seal: {
    description: 'Seals each instance (any one custodian may). No configuration, database or master key.',
    local: true,
  },
};

/** The key CLI; `run` is given the whole command line, as typed (keys.ts's main). */
export function keysProgram(run: (argv: readonly string[]) => Promise<number>): Command {
  const program = cliProgram({
    name: 'keys',
    invocation: 'npm run keys --',
    description:
      'Key management for key custodians and auditors (docs/key-management.md), against the same database and ' +
      'master key source as the service, while it keeps running. Every command that changes something prints ' +
      'what it will do first.',
    env: [...DATABASE_ENV, ...MASTER_KEY_ENV, ...DUAL_CONTROL, ...PKCS11, ...SHARES, 'TLS_CLIENT_CA'],
    exitCodes: EXIT_CODES,
  });
  for (const word of keysCommands()) {
    const spec = COMMANDS[word];
    if (spec === undefined) throw new Error(`keys ${word}: no description in keys-program.ts`);
    const command = passThrough(
      cliCommand(program, {
        name: word,
        description: spec.description,
        env: spec.local === true ? [] : [...DATABASE_ENV.slice(0, 3), ...MASTER_KEY_ENV, ...(spec.env ?? [])],
        exitCodes: EXIT_CODES,
        details: `Usage and options:\n${keysUsageEntries(word)}`,
      }),
    );
    onRun(command, (self) => run(commandLine(self)));
  }
  const help = cliCommand(program, {
    name: 'help',
    description: 'The help of the CLI or of a command: keys help rotate.',
  }).argument('[command]');
  onRun(help, (self) => {
    const word = self.args[0];
    const target = word === undefined ? program : program.commands.find((c) => c.name() === word);
    if (target === undefined) throw new UsageError(`unknown command ${word ?? ''}`);
    target.outputHelp();
    return 0;
  });
  return program;
}
