/**
 * Issue 23, "CLIs that help": the one CLI layer (src/cli/cli-program.ts) as an operator meets it, with
 * the real CLIs as processes: --help everywhere with variables and exit codes, one-line refusals that
 * touch no data, one-line failures (a stack only with DEBUG), the bins after `npm ci`, and a service
 * started on a taken port.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { helpPages } from '../../src/cli/cli-program.js';
import { CLIS } from '../../scripts/reference/cli.js';
import { createTestDatabase, usingPostgres, type TestDatabase } from '../support/database.js';
import { runNodeCli, runProcess, type CliResult } from '../support/service-process.js';

const MASTER_KEY = randomBytes(32).toString('base64');
const lines = (text: string): string[] => text.trimEnd().split('\n');

/** Every file under `dir` and a hash of its bytes and mode: equal snapshots, nothing touched. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const file = path.join(d, entry.name);
      if (entry.isDirectory()) walk(file);
      else if (entry.isFile()) {
        const stat = fs.statSync(file);
        out[path.relative(dir, file)] =
          `${createHash('sha256').update(fs.readFileSync(file)).digest('hex')} ${stat.mode} ${stat.mtimeMs}`;
      }
    }
  };
  walk(dir);
  return out;
}

function expectOneLineUsageError(run: CliResult, what: string, mentions: string): void {
  expect(run.code, `${what}: ${run.stderr}`).to.equal(2);
  expect(run.stdout, what).to.equal('');
  expect(lines(run.stderr), `${what}: ${run.stderr}`).to.have.length(1);
  expect(run.stderr, what)
    .to.contain(mentions)
    .and.match(/\(usage: npm run \w+ -- .*--help\)/);
}

describe('the CLI layer: help, refusals and failures as an operator sees them', function () {
  this.timeout(300_000);

  it('when any command of any CLI is asked for --help, then its page has the usage, the variables it reads and its exit codes', () => {
    for (const cli of CLIS) {
      for (const page of helpPages(cli.program())) {
        expect(page.text, page.command).to.match(/^usage: npm run \w+ --/);
        if (page.command === 'keys help') continue;
        expect(page.text, page.command).to.contain('Exit codes:\n  0  ');
        const local = ['keys unseal', 'keys seal'].includes(page.command);
        if (!local)
          expect(page.text, page.command).to.match(/\nEnvironment \(all variables: [^)]+\):\n {2}[A-Z_]+ {2,}\S/);
      }
    }
    const rotate = helpPages(CLIS[0]!.program()).find((p) => p.command === 'keys rotate')!;
    expect(rotate.text).to.contain('rotate --purpose <p>').and.contain('or master').and.contain('MASTER_KEY_SOURCE');
    expect(rotate.text).not.to.contain('reencrypt --purpose');
  });

  it('when any CLI is given an unknown option, then it says so in one line naming it and exits 2', async () => {
    const env = {
      DATA_DIR: path.join(os.tmpdir(), `lv-never-${randomBytes(4).toString('hex')}`),
      NODE_ENV: 'development',
    };
    const cases: [string, string[], string][] = [
      ['src/cli/keys.ts', ['rotate', '--purpose', 'pan-encryption', '--bogus'], "'--bogus'"],
      ['src/cli/loyalty.ts', ['check', '--bogus'], "unknown option '--bogus'"],
      ['src/cli/migrate.ts', ['--bogus'], "unknown option '--bogus'"],
      ['src/cli/token.ts', ['--bogus'], "unknown option '--bogus'"],
      ['bench/run.ts', ['--bogus'], "unknown option '--bogus'"],
    ];
    const runs = await Promise.all(cases.slice(0, 3).map(([s, a]) => runNodeCli(s, a, env)));
    runs.push(...(await Promise.all(cases.slice(3).map(([s, a]) => runNodeCli(s, a, env)))));
    runs.forEach((run, i) => expectOneLineUsageError(run, cases[i]!.slice(0, 2).flat().join(' '), cases[i]![2]));
    expect(fs.existsSync(env.DATA_DIR)).to.equal(false);
  });

  describe('when keys rotate is given an unknown option, then the database is untouched', () => {
    let db: TestDatabase | undefined;
    let dataDir: string;
    before(() => {
      dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-layer-'));
    });
    after(async () => {
      await db?.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    });

    it(
      usingPostgres
        ? 'on PostgreSQL: no row of any table changes'
        : 'on the embedded default: no byte of the data folder changes',
      async () => {
        const bogus = ['rotate', '--purpose', 'pan-encryption', '--apply', '--bogus'];
        if (usingPostgres) {
          db = await createTestDatabase({ migrated: true });
          const counts = async (): Promise<Record<string, number>> => {
            const tables = (await db!
              .knex('information_schema.tables')
              .where({ table_schema: 'public', table_type: 'BASE TABLE' })
              .pluck('table_name')) as string[];
            const out: Record<string, number> = {};
            for (const t of tables.sort())
              out[t] = Number(((await db!.knex(t).count('* as n')) as { n: string }[])[0]!.n);
            return out;
          };
          const before = await counts();
          const env = {
            DATABASE_URL: db.url!,
            MASTER_KEY,
            NODE_ENV: 'test',
            KEYS_SINGLE_OPERATOR: 'true',
            ALLOW_DEVELOPMENT_DEFAULTS: 'true',
          };
          expectOneLineUsageError(await runNodeCli('src/cli/keys.ts', bogus, env), 'keys rotate --bogus', "'--bogus'");
          expect(await counts()).to.deep.equal(before);
          // The same command line without the stray option does change it: the check can see a change.
          const real = await runNodeCli('src/cli/keys.ts', bogus.slice(0, -1), env);
          expect(real.code, real.stderr).to.equal(0);
          expect(await counts()).not.to.deep.equal(before);
        } else {
          const env = { DATA_DIR: dataDir, NODE_ENV: 'development', KEYS_SINGLE_OPERATOR: 'true' };
          const made = await runNodeCli('src/cli/keys.ts', ['list', '--json'], env);
          expect(made.code, made.stderr).to.equal(0);
          const before = snapshot(dataDir);
          expectOneLineUsageError(await runNodeCli('src/cli/keys.ts', bogus, env), 'keys rotate --bogus', "'--bogus'");
          expect(snapshot(dataDir)).to.deep.equal(before);
        }
      },
    );
  });

  it('when a CLI fails, then it prints one line, and the stack only with DEBUG set', async () => {
    // Nothing listens on port 1: the connection is refused.
    const env = {
      DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
      MASTER_KEY,
      NODE_ENV: 'test',
      DB_CONNECT_TIMEOUT_MS: '500',
    };
    const [quiet, debug] = await Promise.all([
      runNodeCli('src/cli/migrate.ts', [], env),
      runNodeCli('src/cli/migrate.ts', [], { ...env, DEBUG: '1' }),
    ]);
    expect(quiet.code, quiet.stderr).to.equal(1);
    expect(lines(quiet.stderr), quiet.stderr).to.have.length(1);
    expect(quiet.stderr)
      .to.match(/^migrate: /)
      .and.not.match(/\n\s+at /);
    expect(debug.code, debug.stderr).to.equal(1);
    expect(debug.stderr).to.match(/\n\s+at /);
  });

  it('when the bins are run with npx from the checkout (after npm ci, no build), then they answer', async () => {
    const env = { HOME: process.env['HOME'] ?? os.tmpdir(), npm_config_offline: 'true' };
    const help = await runProcess('npx', ['--offline', 'loyalty-vault-keys', 'rotate', '--help'], env);
    expect(help.code, help.stderr).to.equal(0);
    expect(help.stdout).to.contain('rotate --purpose <p>');
    const [refused, loyalty, migrate] = await Promise.all([
      runProcess('npx', ['--offline', 'loyalty-vault-keys', 'rotate', '--bogus'], env),
      runProcess('npx', ['--offline', 'loyalty-vault-loyalty', '--help'], env),
      runProcess('npx', ['--offline', 'loyalty-vault-migrate', '--help'], env),
    ]);
    expect(refused.code, refused.stderr).to.equal(2);
    expect(loyalty.stdout).to.contain('usage: npm run loyalty');
    expect(migrate.stdout).to.contain('usage: npm run migrate');
  });

  it('when the service starts on a port that is taken, then it exits 1 with one line naming the port and PORT', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as net.AddressInfo).port;
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-port-'));
    try {
      const run = await runNodeCli('src/main.ts', [], {
        DATA_DIR: dataDir,
        NODE_ENV: 'development',
        HOST: '127.0.0.1',
        PORT: String(port),
        LOG_LEVEL: 'warn',
        EVENTS_DISPATCHER_ENABLED: 'false',
      });
      expect(run.code, run.stderr).to.equal(1);
      expect(lines(run.stderr), run.stderr).to.deep.equal([
        `cannot listen on 127.0.0.1:${port}: the port is already in use (EADDRINUSE): stop what listens there, or set PORT to another port`,
      ]);
    } finally {
      taken.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
