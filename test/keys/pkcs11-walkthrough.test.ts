/**
 * The QSA walkthrough of docs/key-management.md §10 (the master key in a PKCS#11 token), run as
 * written: the block after the `pkcs11-walkthrough-test` marker is read from the document and run as
 * one bash script (set -euo pipefail) in an empty folder, on the embedded default, with a SoftHSM2
 * token the script makes itself. A line starting with `! ` must fail; any other failing line fails
 * the test. `npm run [-s] keys --` runs this checkout's CLI. Document and test cannot drift apart.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { expect } from 'chai';
import { projectRoot } from '../../src/config/project-root.js';
import { usingPostgres } from '../support/database.js';
import { softHsmModule } from '../support/softhsm.js';

const DOC = path.join(projectRoot(), 'docs', 'key-management.md');
const MARKER = /^<!-- pkcs11-walkthrough-test\b.*-->\s*$/;
const TSX = pathToFileURL(path.join(projectRoot(), 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;
const DOC_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

/** The marked block's lines (comments and blanks kept: bash ignores them). */
export function pkcs11WalkthroughLines(markdown: string): { line: number; text: string }[] {
  const lines = markdown.split('\n');
  const marker = lines.findIndex((l) => MARKER.test(l));
  if (marker < 0) throw new Error('docs/key-management.md: no pkcs11-walkthrough-test marker');
  let fence = marker + 1;
  while ((lines[fence] ?? '').trim() === '' && fence < lines.length) fence++;
  if (!/^```bash\s*$/.test(lines[fence] ?? '')) throw new Error('the marker must precede a bash block');
  const block: { line: number; text: string }[] = [];
  for (let j = fence + 1; j < lines.length && !/^```\s*$/.test(lines[j] ?? ''); j++) {
    block.push({ line: j + 1, text: lines[j] ?? '' });
  }
  return block;
}

/** The script bash runs: the CLIs through tsx, `! cmd` turned into "cmd must fail". */
function script(block: { line: number; text: string }[]): string {
  const body = block.map(({ line, text }) => {
    let command = text.replace(
      /\bnpm run (?:-s )?keys --(?=\s|$)/g,
      `node --import ${TSX} ${path.join(projectRoot(), 'src', 'cli', 'keys.ts')}`,
    );
    command = command.replaceAll(DOC_MODULE, softHsmModule());
    const mustFail = /^!\s+(.*)$/.exec(command.trim());
    if (mustFail !== null) {
      return `if ${mustFail[1]}; then echo "docs/key-management.md:${line}: succeeded but must fail" >&2; exit 1; fi`;
    }
    return command.trim().startsWith('#') || command.trim() === '' ? command : `echo "+ line ${line}" >&2; ${command}`;
  });
  return ['set -euo pipefail', ...body, 'echo WALKTHROUGH-DONE'].join('\n');
}

describe('docs/key-management.md §10: the PKCS#11 walkthrough for a QSA, run as written', function () {
  this.timeout(300_000);
  // The script runs its own processes on the embedded default (no DATABASE_URL): once is enough; the
  // same behaviour runs on both databases in pkcs11-master-key.test.ts.
  if (usingPostgres) return;

  it('when the walkthrough block is read, then it creates the key, shows it cannot be read, inventories it and rotates it', () => {
    const text = pkcs11WalkthroughLines(fs.readFileSync(DOC, 'utf8'))
      .map((l) => l.text)
      .join('\n');
    for (const step of [
      /keys -- hsm init/,
      /--read-object/,
      /keys -- list/,
      /rotate --purpose master --apply/,
      /audit verify/,
    ]) {
      expect(text).to.match(step);
    }
    expect(text).to.not.match(/PKCS11_PIN=/);
  });

  it('when every line runs in an empty folder, then each does what the document says', async () => {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-hsm-walk-'));
    try {
      const child = spawn('bash', ['-c', script(pkcs11WalkthroughLines(fs.readFileSync(DOC, 'utf8')))], {
        cwd: work,
        env: {
          PATH: process.env['PATH'] ?? '',
          HOME: work,
          NODE_ENV: 'development',
          DATA_DIR: path.join(work, 'data'),
          LOG_LEVEL: 'warn',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      const where = `--- stdout\n${stdout}--- stderr\n${stderr}`;
      expect(code, where).to.equal(0);
      expect(stdout, where).to.contain('WALKTHROUGH-DONE');
      // The PIN never reached the CLI's output or its errors.
      const pin = fs.readFileSync(path.join(work, 'pin'), 'utf8').trim();
      expect(stdout + stderr).to.not.contain(pin);
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  });
});
