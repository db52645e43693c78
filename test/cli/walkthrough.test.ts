import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { expect } from 'chai';
import { projectRoot } from '../../src/config/project-root.js';
import { usingPostgres } from '../support/database.js';
import { runProcess, startServiceProcess, type CliResult, type ServiceProcess } from '../support/service-process.js';

/**
 * The auditor walkthrough of docs/key-management.md, run as written, end to end, on the embedded
 * default, WITH THE SERVICE RUNNING (issue 17): the test reads the commands from the document, so
 * the document and the test cannot drift apart. To add a step, edit the document.
 *
 * Conventions (also stated beside the block in the document):
 * - A fenced `bash` block right after a line `<!-- walkthrough-test … -->` is run; several such
 *   blocks run in document order. Each line that is not blank or a comment is one command, run by
 *   bash in a scratch working folder (never the checkout) with the service's environment
 *   (DATA_DIR, …) and SERVICE_URL set to the running service.
 * - `npm run [-s] <keys|token|loyalty|migrate> --` runs that CLI from this checkout.
 * - `krq_…` stands for the request id printed most recently by an earlier command.
 * - A trailing comment `# refused: CODE` expects exit 1 with `refused: CODE`; `# exit N` expects
 *   exit N; anything else must exit 0.
 */
const DOC = path.join(projectRoot(), 'docs', 'key-management.md');
const MARKER = /^<!-- walkthrough-test\b.*-->\s*$/;
const TSX = pathToFileURL(path.join(projectRoot(), 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;
const CLIS = new Set(['keys', 'token', 'loyalty', 'migrate']);

interface Step {
  readonly line: number;
  readonly command: string;
  readonly expectExit: number;
  readonly expectRefusal?: string | undefined;
  readonly comment: string;
}

/** The steps of every marked block, in document order. */
export function walkthroughSteps(markdown: string): Step[] {
  const lines = markdown.split('\n');
  const steps: Step[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!MARKER.test(lines[i] ?? '')) continue;
    let fence = i + 1;
    while ((lines[fence] ?? '').trim() === '' && fence < lines.length) fence++;
    if (!/^```(bash|sh)\s*$/.test(lines[fence] ?? '')) {
      throw new Error(`docs/key-management.md:${i + 1}: a walkthrough marker must precede a bash block`);
    }
    for (let j = fence + 1; j < lines.length && !/^```\s*$/.test(lines[j] ?? ''); j++) {
      const text = (lines[j] ?? '').trim();
      // An indented comment line continues the previous step's comment (what it prints, expects).
      if (text.startsWith('#') && /^\s/.test(lines[j] ?? '') && steps.length > 0) {
        const last = steps[steps.length - 1]!;
        steps[steps.length - 1] = { ...last, ...expectation(`${last.comment} ${text.slice(1).trim()}`) };
        continue;
      }
      if (text === '' || text.startsWith('#')) continue;
      // A trailing comment (space, #, space) says what to expect; it is not part of the command.
      const comment = /\s#\s(.*)$/.exec(text)?.[1] ?? '';
      steps.push({ line: j + 1, command: text.replace(/\s+#\s.*$/, ''), ...expectation(comment) });
    }
  }
  return steps;
}

/** What a step's comment expects: `refused: CODE` (exit 1), `exit N`, otherwise success. */
function expectation(comment: string): Pick<Step, 'comment' | 'expectExit' | 'expectRefusal'> {
  const refusal = /refused: ([A-Z_]+)/.exec(comment)?.[1];
  const exit = /\bexit (\d+)/.exec(comment)?.[1];
  return {
    comment,
    expectExit: refusal !== undefined ? 1 : exit !== undefined ? Number(exit) : 0,
    expectRefusal: refusal,
  };
}

/**
 * The command as bash runs it here: the CLIs through tsx; `krq_…` is the request id printed last and
 * `krq_X` (one capital letter) the id printed by the step whose comment names `krq_X`; `approve` gets
 * `--yes`, the documented script form (stdin is closed: no terminal to type yes at).
 */
function commandLine(step: Step, lastRequestId: string | undefined, named: ReadonlyMap<string, string>): string {
  let command = step.command.replace(/\bnpm run (?:-s )?([a-z]+) --(?=\s|$)/g, (whole, cli: string) =>
    CLIS.has(cli) ? `node --import ${TSX} ${path.join(projectRoot(), 'src', 'cli', `${cli}.ts`)}` : whole,
  );
  if (command.includes('krq_…')) {
    if (lastRequestId === undefined) throw new Error(`line ${step.line}: krq_… but no request id was printed before`);
    command = command.replaceAll('krq_…', lastRequestId);
  }
  command = command.replace(/\bkrq_([A-Z])\b/g, (whole, name: string) => {
    const id = named.get(name);
    if (id === undefined) throw new Error(`line ${step.line}: ${whole} but no step printed it before`);
    return id;
  });
  if (/keys\.ts approve /.test(command) && !command.includes('--yes')) command += ' --yes';
  return command;
}

function bash(command: string, cwd: string, env: Record<string, string>): Promise<CliResult> {
  return runProcess('bash', ['-o', 'pipefail', '-c', command], env, cwd);
}

describe('docs/key-management.md: the auditor walkthrough, on the embedded default, with the service running', function () {
  this.timeout(240_000);
  // The embedded default is what the acceptance names (its processes never get DATABASE_URL): not
  // run twice on CI's PostgreSQL pass.
  if (usingPostgres) return;
  let dataDir: string;
  let workDir: string;
  let env: Record<string, string>;
  let svc: ServiceProcess | undefined;

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-walk-data-'));
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-walk-work-'));
    // A fresh clone's defaults (development, embedded store, dual control), a short key-ring refresh
    // so that the propagation waits of rotate and retire take seconds.
    env = {
      NODE_ENV: 'development',
      DATA_DIR: dataDir,
      KEY_RING_REFRESH_MS: '200',
      EVENTS_DISPATCHER_ENABLED: 'false',
    };
    svc = await startServiceProcess(env);
    env = { ...env, SERVICE_URL: svc.url };
  });
  after(async () => {
    await svc?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('when the walkthrough is read, then it has the steps an assessor needs, in order', () => {
    const commands = walkthroughSteps(fs.readFileSync(DOC, 'utf8')).map((s) => s.command);
    const order = [
      /custodian genesis/,
      /rotate --purpose \S+ --apply --request/,
      /reencrypt --purpose/,
      /retire --purpose .* --apply --request/,
      /destroy --purpose .* --apply --request/,
      /audit verify-export/,
    ];
    const positions = order.map((step) => commands.findIndex((c) => step.test(c)));
    expect(positions, `steps found: ${order.join(', ')}`).to.not.include(-1);
    expect([...positions].sort((a, b) => a - b)).to.deep.equal(positions);
  });

  it('when every step runs as written while the service serves, then each does what the document says', async () => {
    const steps = walkthroughSteps(fs.readFileSync(DOC, 'utf8'));
    let lastRequestId: string | undefined;
    const named = new Map<string, string>();
    for (const step of steps) {
      const run = await bash(commandLine(step, lastRequestId, named), workDir, env);
      const where = `docs/key-management.md:${step.line}: ${step.command}\n--- stdout\n${run.stdout}--- stderr\n${run.stderr}`;
      expect(run.code, where).to.equal(step.expectExit);
      if (step.expectRefusal !== undefined) expect(run.stderr, where).to.contain(`refused: ${step.expectRefusal}`);
      // Through the running service's socket, never by opening its data folder.
      if (step.command.includes('npm run keys')) expect(run.stderr, where).to.contain('working through its socket');
      const ids = `${run.stdout}\n${run.stderr}`.match(/\bkrq_[a-z0-9]+/gi);
      if (ids !== null) lastRequestId = ids[ids.length - 1];
      const printed = /\bkrq_([A-Z])\b/.exec(step.comment)?.[1];
      if (printed !== undefined && !named.has(printed) && lastRequestId !== undefined)
        named.set(printed, lastRequestId);
    }
    // The service served throughout, and the evidence landed in the working folder, not the checkout.
    expect((await fetch(`${svc!.url}/readyz`)).status).to.equal(200);
    expect(fs.readdirSync(path.join(workDir, 'evidence'))).to.include.members(['key-inventory.json', 'audit.json']);
  });
});
