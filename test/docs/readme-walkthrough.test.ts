/**
 * The README's four walkthroughs (gateway integrator, loyalty app, PCI DSS assessor, loyalty manager), run as written,
 * in order, against the service on the embedded default (a fresh data folder, development keys and
 * secrets, as `npm start` makes on a fresh clone). The commands are read from the README: edit the
 * README and this runs the new text.
 *
 * What is changed to run them here, and only that: the service listens on a free port instead of
 * 8080 (`http://127.0.0.1:8080` becomes its URL), its data folder is a temporary one (`./data/`
 * becomes it), `npm run -s <cli> --` runs the same CLI through tsx from this checkout (`simulate` given
 * the service's HOST and PORT, since it sends credentials only to the configured service), and the
 * commands run in a scratch folder (never the checkout), all three blocks in one bash with
 * `set -euo pipefail`, so that the shopper of the first is the one the second uses.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { expect } from 'chai';
import { projectRoot } from '../../src/config/project-root.js';
import { usingPostgres } from '../support/database.js';
import { runProcess, startServiceProcess, type CliResult, type ServiceProcess } from '../support/service-process.js';

const README = path.join(projectRoot(), 'README.md');
const TSX = pathToFileURL(path.join(projectRoot(), 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;
const SECTIONS = ['### Gateway integrator', '### Loyalty app', '### PCI DSS assessor', '### Loyalty manager'];

/** The first `sh` block under each walkthrough heading, in README order. */
export function readmeWalkthroughs(markdown: string): string[] {
  const lines = markdown.split('\n');
  return SECTIONS.map((heading) => {
    const start = lines.findIndex((l) => l.startsWith(heading));
    if (start < 0) throw new Error(`README.md: no section "${heading}"`);
    const open = lines.findIndex((l, i) => i > start && /^```(sh|bash)\s*$/.test(l));
    const close = lines.findIndex((l, i) => i > open && /^```\s*$/.test(l));
    if (open < 0 || close < 0 || lines.slice(start + 1, open).some((l) => l.startsWith('#'))) {
      throw new Error(`README.md: "${heading}" has no sh block of its own`);
    }
    return lines.slice(open + 1, close).join('\n');
  });
}

function asRunHere(block: string, url: string, dataDir: string): string {
  const simulate = path.join(projectRoot(), 'src', 'cli', 'simulate.ts');
  return block
    .replaceAll('http://127.0.0.1:8080', url)
    .replaceAll('./data/', `${dataDir}/`)
    .replace(/\bnpm run (?:-s )?simulate -- ([^#\n]*?)(\s*#[^\n]*)?$/gm, (_whole, args: string, comment?: string) => {
      return `node --import ${TSX} ${simulate} ${args}${comment ?? ''}`;
    })
    .replace(/\bnpm run (?:-s )?(keys|token|loyalty) --(?=\s|$)/g, (_whole, cli: string) => {
      return `node --import ${TSX} ${path.join(projectRoot(), 'src', 'cli', `${cli}.ts`)}`;
    });
}

function bash(script: string, cwd: string, env: Record<string, string>): Promise<CliResult> {
  return runProcess('bash', ['-c', `set -euo pipefail\n${script}`], env, cwd);
}

describe("README.md: the four users' walkthroughs, run as written on the embedded default", function () {
  this.timeout(300_000);
  // The embedded default is what the README starts (its processes never get DATABASE_URL).
  if (usingPostgres) return;
  let dataDir: string;
  let workDir: string;
  let svc: ServiceProcess | undefined;

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-readme-data-'));
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-readme-work-'));
    svc = await startServiceProcess({ NODE_ENV: 'development', DATA_DIR: dataDir, EVENTS_DISPATCHER_ENABLED: 'false' });
  });
  after(async () => {
    await svc?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('when the gateway, loyalty-app, auditor and loyalty-manager blocks run in order, then each shows what the README says', async () => {
    const blocks = readmeWalkthroughs(fs.readFileSync(README, 'utf8'));
    // simulate targets the configured service (HOST, PORT): it sends credentials nowhere else.
    const { hostname, port } = new URL(svc!.url);
    const run = await bash(blocks.map((b) => asRunHere(b, svc!.url, dataDir)).join('\n'), workDir, {
      DATA_DIR: dataDir,
      NODE_ENV: 'development',
      HOST: hostname,
      PORT: port,
    });
    const out = `--- stdout\n${run.stdout}--- stderr\n${run.stderr}`;
    expect(run.code, out).to.equal(0);
    // Gateway integrator: the card tokenised, the signed webhook applied, the in-store payment captured.
    expect(run.stdout, out).to.match(/"shopperReference":"shp_[a-z2-7]{26}"/);
    expect(run.stdout, out).to.contain('"state":"applied","duplicate":false');
    expect(run.stdout, out).to.match(/^balance: \{"shopperReference":"shp_[a-z2-7]{26}","available":25,"pending":0,/m);
    expect(run.stdout + run.stderr, out).to.not.contain('4111111111111111'); // simulate names the card by its last 4
    expect(run.stdout, out).to.match(/"provider":"platform"[^}]*"channel":"in_store"[^}]*"state":"captured"/);
    // Loyalty app: 25 points available, 10 redeemed, 15 left, the ledger holds both entries.
    expect(run.stdout, out).to.contain('"available":25,"pending":0');
    expect(run.stdout, out).to.match(/"points":10,"reference":"order-42","state":"completed".*"available":15/);
    expect(run.stdout, out).to.match(/"kind":"redemption".*"kind":"earn"/);
    // Auditor: the evidence written, the chain intact, the export verified offline, the ledger sound.
    expect(run.stdout, out).to.match(/audit chain intact: \d+ entries/);
    expect(run.stdout, out).to.contain('export verifies');
    expect(run.stdout, out).to.contain('ledger invariants hold');
    expect(fs.readdirSync(path.join(workDir, 'evidence'))).to.include.members([
      'key-inventory.json',
      'key-inventory.md',
      'audit.json',
      'audit-signing.pub.pem',
    ]);
    // Loyalty manager: the campaign published, the in-store purchase earned its bonus, and says why.
    expect(run.stdout, out).to.match(/^balance: \{"shopperReference":"shp_[a-z2-7]{26}","available":90,"pending":0,/m);
    expect(run.stdout, out).to.match(
      /"qualified":true,"conditions":\[\{"condition":"period","passed":true\},\{"condition":"channel","passed":true\}\],"bonus":50/,
    );
    expect(run.stdout, out).to.match(/"budget":10000,"budgetLeft":9950,"budgetSpent":50,"activations":0/);
  });
});
