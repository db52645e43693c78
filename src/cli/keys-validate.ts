/**
 * The parse-only pass of the keys CLI: answers "would this command line be refused as bad usage?"
 * before the configuration, the master key or the data folder is touched (a usage error must
 * create nothing: no dev master key, no database, no migration, no key, no audit event).
 *
 * It runs the very command code ({@link runKeysCommand}) with a context that has nothing in it:
 * every command parses its options (node:util `parseArgs`, strict) and checks its arguments
 * before it reads the context, so the first read of the context or an attempt to write output
 * ends the pass as "accepted". Same option tables as the real run, no second list to keep in step.
 * A command that reads its context before parsing (e.g. `mtls`, which builds its CA first) is
 * simply accepted here and parsed again, strictly, by the real run.
 */
import { Writable } from 'node:stream';
import { runKeysCommand } from './keys-commands.js';
import type { KeysContext, KeysIo } from './keys-context.js';

/** Ends the pass: the command got past its argument checks. */
class ArgumentsAccepted extends Error {}

function stopOnUse<T extends object>(): T {
  return new Proxy({} as T, {
    get() {
      throw new ArgumentsAccepted();
    },
  });
}

export interface KeysArgsVerdict {
  /** 0 when the arguments pass; 2 for a usage error (its one line, naming the command's --help, in `message`). */
  readonly code: 0 | 2;
  readonly message: string;
}

export async function validateKeysArgs(argv: readonly string[]): Promise<KeysArgsVerdict> {
  let message = '';
  const stderr = new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      message += chunk.toString();
      done();
    },
  });
  const stdout = new Writable({
    write(_chunk, _encoding, done) {
      done(new ArgumentsAccepted());
    },
  });
  stdout.write = () => {
    throw new ArgumentsAccepted();
  };
  const io: KeysIo = {
    stdout,
    stderr,
    get isTTY(): boolean {
      throw new ArgumentsAccepted();
    },
    interrupted: () => {
      throw new ArgumentsAccepted();
    },
    confirm: () => {
      throw new ArgumentsAccepted();
    },
  };
  try {
    const code = await runKeysCommand(argv, stopOnUse<KeysContext>(), io);
    return code === 2 ? { code: 2, message } : { code: 0, message: '' };
  } catch (error) {
    if (error instanceof ArgumentsAccepted) return { code: 0, message: '' };
    // Anything else (a file that cannot be read, say) is for the real run to report.
    return { code: 0, message: '' };
  }
}
