/**
 * The one command-line layer of every CLI here (`keys`, `loyalty`, `migrate`, `token`, `bench`, and
 * whatever comes next), over commander. A CLI is a commander `Command` made by {@link cliProgram},
 * its commands by {@link cliCommand}, run by {@link runProgram}. What every CLI then keeps:
 *
 * - `--help` / `-h` on the CLI and on every command prints its usage, description, options, the
 *   environment variables it reads (with the prose of scripts/reference/configuration.yaml) and its
 *   exit codes, and exits 0 before anything is opened: no configuration, no data folder, no database.
 * - An unknown command, option or stray argument is one line on stderr naming it and where the help
 *   is, exit 2, before the command runs: a usage error touches no data.
 * - A refusal with a stable code is `<cli>: refused: <CODE>: <reason>`, exit 1; any other failure one
 *   line `<cli>: <message>`, exit 1, with the stack only when `DEBUG` is set.
 * - Every line the layer writes (usage errors, which quote what was typed, refusals, failures, stacks)
 *   passes the card-data guard's masking: a card number typed as an argument is never echoed.
 *
 * A command declares its options to commander (`.option(…)`), or, where its own code already parses
 * them strictly (the key CLI's commands: node:util `parseArgs`), is declared {@link passThrough}: the
 * layer gives it help and dispatch and hands it the command line exactly as typed.
 * docs/cli.md is generated from these programs (scripts/generate-reference.ts, {@link helpPages}).
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import YAML from 'yaml';
import { maskCardData } from '../card-data/card-data-guard.js';
import { isAppError } from '../errors/app-error.js';
import { projectRoot } from '../config/project-root.js';
import { UsageError } from './usage-error.js';

export const EXIT_USAGE = 2;

/** The variables of the database a CLI opens (migrate, loyalty; the key CLI adds the master key's). */
export const DATABASE_ENV = ['DATABASE_URL', 'DATA_DIR', 'NODE_ENV', 'DB_CONNECT_TIMEOUT_MS', 'LOG_LEVEL'] as const;

export interface CliStreams {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

/** What the help of a CLI or command says beyond commander's own sections. */
export interface CliHelp {
  /** The environment variables it reads (described from the configuration reference). */
  readonly env?: readonly string[];
  /** Variables of its own that the configuration reference does not describe (bench's), with their prose. */
  readonly ownEnv?: Readonly<Record<string, string>>;
  /** Exit code → meaning. */
  readonly exitCodes?: Readonly<Record<number, string>>;
  /** Free text after the options (examples, the option table of a pass-through command). */
  readonly details?: string;
}

export interface CliSpec extends CliHelp {
  /** The CLI's name, the prefix of its messages: `keys`. */
  readonly name: string;
  /** How it is run, what its usage line starts with: `npm run keys --`. */
  readonly invocation: string;
  readonly description: string;
}

export interface CommandSpec extends CliHelp {
  readonly name: string;
  readonly description: string;
}

/** The layer's state of one program: what its action returned. */
interface ProgramState {
  spec: CliSpec;
  code: number;
  /** The command line of the run, as typed (for pass-through commands). */
  argv: readonly string[];
}
const states = new WeakMap<Command, ProgramState>();

function rootOf(command: Command): Command {
  let c = command;
  while (c.parent !== null) c = c.parent;
  return c;
}

function stateOf(command: Command): ProgramState {
  const state = states.get(rootOf(command));
  if (state === undefined) throw new Error('not a program made by cliProgram');
  return state;
}

let configurationProse: Map<string, string> | undefined;

/** The first sentence of each variable's `meaning` in scripts/reference/configuration.yaml (if shipped). */
function describeVariable(name: string): string {
  if (configurationProse === undefined) {
    configurationProse = new Map();
    const file = `${projectRoot()}/scripts/reference/configuration.yaml`;
    if (fs.existsSync(file)) {
      const doc = YAML.parse(fs.readFileSync(file, 'utf8')) as { variables?: Record<string, { meaning?: string }> };
      for (const [key, value] of Object.entries(doc.variables ?? {})) {
        const meaning = (value.meaning ?? '').replace(/`/g, '').replace(/\[([^\]]+)\]\([^)]+\)/g, '$1');
        // The first sentence (not cut at "e.g."), at most 160 characters.
        const sentence = /^.*?\.(?=\s+[A-Z(]|$)/.exec(meaning)?.[0] ?? meaning;
        configurationProse.set(key, sentence.length > 160 ? `${sentence.slice(0, 159)}…` : sentence);
      }
    }
  }
  return configurationProse.get(name) ?? '';
}

function table(rows: readonly (readonly [string, string])[]): string {
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  return rows.map(([k, v]) => `  ${k.padEnd(width)}${v}`.trimEnd()).join('\n');
}

function helpSections(help: CliHelp): string {
  const parts: string[] = [];
  if (help.details !== undefined) parts.push(help.details.replace(/\n+$/, ''));
  const env: [string, string][] = [
    ...(help.env ?? []).map((name): [string, string] => [name, describeVariable(name)]),
    ...Object.entries(help.ownEnv ?? {}),
  ];
  if (env.length > 0) {
    parts.push(`Environment (all variables: docs/reference/configuration.md):\n${table(env)}`);
  }
  const codes = Object.entries(help.exitCodes ?? {});
  if (codes.length > 0) parts.push(`Exit codes:\n${table(codes)}`);
  return parts.length === 0 ? '' : `\n${parts.join('\n\n')}\n`;
}

function configure(command: Command, help: CliHelp, description: string): Command {
  command
    .description(description)
    .helpOption('-h, --help', 'this text (touches nothing)')
    .exitOverride()
    .showHelpAfterError(false)
    .showSuggestionAfterError(true)
    .allowExcessArguments(false)
    .configureOutput({
      // Help goes to stdout; errors are formatted once, by runProgram.
      writeOut: (text) => process.stdout.write(text),
      writeErr: () => undefined,
      outputError: () => undefined,
    })
    .addHelpText('after', () => helpSections(help));
  // commander's "Usage: keys rotate" → "usage: npm run keys -- rotate".
  const format = command.helpInformation.bind(command);
  command.helpInformation = (context) => {
    const { spec } = stateOf(command);
    return format(context).replace(/^Usage: \S+/, `usage: ${spec.invocation}`);
  };
  return command;
}

/** A CLI: its name, how it is run, what it does, its variables and exit codes. */
export function cliProgram(spec: CliSpec): Command {
  const program = new Command(spec.name);
  states.set(program, { spec, code: 0, argv: [] });
  configure(program, spec, spec.description);
  program.helpCommand(false);
  return program;
}

/** A command (or a command's command) of a CLI. */
export function cliCommand(parent: Command, spec: CommandSpec): Command {
  const command = new Command(spec.name);
  parent.addCommand(command);
  configure(command, spec, spec.description);
  return command;
}

/**
 * A command whose own code parses its options and arguments (strictly, before it touches data): the
 * layer answers its `--help` and passes everything after the command word through untouched.
 */
export function passThrough(command: Command): Command {
  return command.argument('[arguments...]').allowUnknownOption(true).allowExcessArguments(true);
}

/** The command line runProgram was given, exactly as typed: what a pass-through command parses. */
export function commandLine(command: Command): readonly string[] {
  return stateOf(command).argv;
}

let quietOnClosedPipe = false;

/** What a command runs; its result is the exit code. */
export function onRun(command: Command, body: (command: Command) => Promise<number> | number): Command {
  return command.action(async (...args: unknown[]) => {
    const self = args[args.length - 1] as Command;
    stateOf(command).code = await body(self);
  });
}

function usageHint(spec: CliSpec, argv: readonly string[], program: Command): string {
  // The deepest command the words of argv name, for "see … --help".
  const words: string[] = [];
  let at: Command = program;
  for (const arg of argv) {
    const next = at.commands.find((c) => c.name() === arg);
    if (next === undefined) break;
    words.push(arg);
    at = next;
  }
  return `(usage: ${spec.invocation} ${[...words, '--help'].join(' ')})`;
}

export function isUsageError(error: unknown): boolean {
  return (
    error instanceof UsageError || (error as { code?: string } | null)?.code?.startsWith('ERR_PARSE_ARGS') === true
  );
}

/** A usage error's one line, as every CLI prints it. */
export function usageLine(program: Command, argv: readonly string[], message: string): string {
  const { spec } = stateOf(program);
  const text = message
    .replace(/^error: /, '')
    .replace(/\s*\n\s*/g, ' ')
    .trim();
  return `${spec.name}: ${text} ${usageHint(spec, argv, program)}\n`;
}

/**
 * Runs one invocation of `program` and returns its exit code (the caller sets process.exitCode).
 * Usage errors are found by commander (or thrown as {@link UsageError} by a command's own parsing)
 * before a command opens anything.
 */
export async function runProgram(
  program: Command,
  argv: readonly string[],
  streams: CliStreams = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const state = stateOf(program);
  // `keys --help | head`: the reader went away; that is no failure to report with a stack trace.
  if (streams.stdout === process.stdout && !quietOnClosedPipe) {
    quietOnClosedPipe = true;
    process.stdout.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') throw error;
      process.exit(process.exitCode ?? 0);
    });
  }
  state.code = 0;
  state.argv = [...argv];
  const { spec } = state;
  // What the layer writes quotes the command line and errors' messages: masked (docs/card-data.md).
  const stderr = { write: (text: string): boolean => streams.stderr.write(maskCardData(text)) };
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return state.code;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return 0;
      // A CLI of commands called without one: commander shows the help; the layer calls it bad usage.
      const message = error.code === 'commander.help' ? 'a command is required' : error.message;
      stderr.write(usageLine(program, argv, message));
      return EXIT_USAGE;
    }
    if (isUsageError(error)) {
      stderr.write(usageLine(program, argv, (error as Error).message));
      return EXIT_USAGE;
    }
    if (isAppError(error)) {
      stderr.write(`${spec.name}: refused: ${error.code}: ${error.detail ?? error.title}\n`);
      return 1;
    }
    stderr.write(`${spec.name}: ${error instanceof Error ? error.message : String(error)}\n`);
    if (process.env['DEBUG'] !== undefined && error instanceof Error && error.stack !== undefined) {
      stderr.write(`${error.stack}\n`);
    }
    return 1;
  }
}

/** Every help page of a program, the CLI's first, then each command's depth-first (docs/cli.md). */
export function helpPages(program: Command): { readonly command: string; readonly text: string }[] {
  const pages: { command: string; text: string }[] = [];
  const visit = (command: Command, words: readonly string[]): void => {
    let text = '';
    const before = { ...command.configureOutput() };
    // A fixed width: the page must not depend on the terminal it was generated in.
    command.configureOutput({ writeOut: (t) => (text += t), getOutHelpWidth: () => 100 });
    command.outputHelp();
    command.configureOutput(before);
    pages.push({ command: words.join(' '), text });
    for (const sub of command.commands) visit(sub, [...words, sub.name()]);
  };
  visit(program, [program.name()]);
  return pages;
}

/** True when this module (`import.meta.url`) is the script node was started with (symlinks resolved). */
export function isMain(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return fs.realpathSync(script) === fs.realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}
