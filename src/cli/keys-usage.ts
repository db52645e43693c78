/**
 * What the keys CLI can answer from its usage text alone, before it opens anything: `--help` for the
 * CLI or any command (`keys rotate --help`, `keys audit verify -h`), and whether the command word is
 * one it has. Both read {@link USAGE}, so a command added there is known here without another list.
 */
import { USAGE } from './keys-commands.js';

/** The usage entries: a line indented two spaces, with its deeper-indented continuation lines. */
function entries(): string[] {
  const result: string[] = [];
  for (const line of USAGE.split('\n').slice(1)) {
    if (/^ {2}\S/.test(line)) result.push(line);
    else if (/^ {3,}\S/.test(line) && result.length > 0) result[result.length - 1] += `\n${line}`;
  }
  return result;
}

/** The command words of the usage: list, rotate, custodian, audit, mtls, … */
export function keysCommands(): Set<string> {
  return new Set(entries().map((e) => e.trim().split(/\s+/)[0] ?? ''));
}

/**
 * The usage for what `argv` names: the entries of its longest matching command words (e.g. every
 * `audit …` entry, or just `audit verify`), else the whole usage.
 */
export function keysUsageFor(argv: readonly string[]): string {
  const words: string[] = [];
  for (const arg of argv) {
    if (arg.startsWith('-')) break;
    words.push(arg);
  }
  for (let n = Math.min(words.length, 2); n > 0; n--) {
    const prefix = words.slice(0, n).join(' ');
    const found = entries().filter((e) => {
      const text = e.trim();
      return text === prefix || text.startsWith(`${prefix} `);
    });
    if (found.length > 0) return `usage: npm run keys -- ${prefix} …\n\n${found.join('\n')}\n`;
  }
  return USAGE.endsWith('\n') ? USAGE : `${USAGE}\n`;
}

/** The usage entries of one command word (`rotate`, every `audit …`), for its help. */
export function keysUsageEntries(word: string): string {
  return entries()
    .filter((e) => e.trim() === word || e.trim().startsWith(`${word} `))
    .join('\n');
}
