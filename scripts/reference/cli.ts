/**
 * docs/reference/cli.md: every CLI's help, as each of its commands prints it (`--help`), made from the
 * commander programs themselves (src/cli/cli-program.ts helpPages), so that the page cannot drift
 * from the code. A new CLI is one more line in CLIS.
 */
import type { Command } from 'commander';
import { benchProgram } from '../../bench/run.js';
import { helpPages } from '../../src/cli/cli-program.js';
import { keysCli } from '../../src/cli/keys.js';
import { loyaltyProgram } from '../../src/cli/loyalty.js';
import { migrateProgram } from '../../src/cli/migrate.js';
import { tokenProgram } from '../../src/cli/token.js';

/** Each CLI: how it is run (npm script, bin) and its program. */
export const CLIS: readonly { readonly run: string; readonly bin?: string; readonly program: () => Command }[] = [
  { run: 'npm run keys -- <command>', bin: 'loyalty-vault-keys', program: keysCli },
  { run: 'npm run loyalty -- <command>', bin: 'loyalty-vault-loyalty', program: () => loyaltyProgram() },
  { run: 'npm run migrate', bin: 'loyalty-vault-migrate', program: migrateProgram },
  { run: 'npm run token -- --scope …', program: () => tokenProgram() },
  { run: 'npm run bench -- [scenario…]', program: () => benchProgram() },
];

export function renderCli(header: string): string {
  let out = `${header}# Command-line tools\n\n`;
  out +=
    'Every CLI answers `--help` on itself and on each command, touching nothing; refuses an unknown command, ' +
    'option or argument with one line and exit code 2 before it opens anything; and reports a failure as one ' +
    'line (the stack trace only with `DEBUG` set). The TypeScript runs directly (tsx): nothing is rebuilt per ' +
    'call. The bins work from a checkout after `npm ci` (`npx loyalty-vault-keys --help`) and run the build ' +
    '(`dist/`) where only that is installed.\n\n';
  out += '| CLI | Run | Bin |\n| --- | --- | --- |\n';
  for (const cli of CLIS) {
    const name = cli.program().name();
    out += `| [${name}](#${name}) | \`${cli.run}\` | ${cli.bin === undefined ? '—' : `\`npx ${cli.bin}\``} |\n`;
  }
  for (const cli of CLIS) {
    const pages = helpPages(cli.program());
    out += `\n## ${pages[0]?.command ?? ''}\n`;
    for (const page of pages) {
      if (page !== pages[0]) out += `\n### \`${page.command}\`\n`;
      out += `\n\`\`\`text\n${page.text.trimEnd()}\n\`\`\`\n`;
    }
  }
  return out;
}
