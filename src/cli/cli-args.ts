/**
 * The command-line conventions every CLI here keeps (`migrate`, `loyalty`, `token`, `keys`):
 * - `--help` / `-h` prints the usage and exits 0 before anything is opened: no configuration
 *   side effect, no data folder, no database.
 * - An unknown command, option or stray argument prints what is wrong and the usage, and exits 2
 *   (node:util `parseArgs` with `strict`, or a {@link UsageError}).
 * - A refusal with a stable code prints `<cli>: refused: <CODE>: <reason>` and exits 1.
 */
import { isAppError } from '../errors/app-error.js';
import { UsageError } from './usage-error.js';

export const EXIT_USAGE = 2;

/** True when `--help` or `-h` appears among the options (before a `--` terminator). */
export function asksForHelp(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  const options = end === -1 ? argv : argv.slice(0, end);
  return options.includes('--help') || options.includes('-h');
}

export function isUsageError(error: unknown): boolean {
  return (
    error instanceof UsageError || (error as { code?: string } | null)?.code?.startsWith('ERR_PARSE_ARGS') === true
  );
}

export interface CliStreams {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

/**
 * Runs one CLI invocation under the conventions above and returns its exit code. `body` parses its
 * arguments before it opens anything, so that a usage error leaves the data untouched.
 */
export async function runCli(
  name: string,
  usage: string,
  argv: readonly string[],
  body: () => Promise<number>,
  streams: CliStreams = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const text = usage.endsWith('\n') ? usage : `${usage}\n`;
  if (asksForHelp(argv)) {
    streams.stdout.write(text);
    return 0;
  }
  try {
    return await body();
  } catch (error) {
    if (isUsageError(error)) {
      streams.stderr.write(`${name}: ${(error as Error).message}\n\n${text}`);
      return EXIT_USAGE;
    }
    if (isAppError(error)) {
      streams.stderr.write(`${name}: refused: ${error.code}: ${error.detail ?? error.title}\n`);
      return 1;
    }
    streams.stderr.write(`${name}: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}
